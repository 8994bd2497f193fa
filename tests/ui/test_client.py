"""The playground's HTTP client: form checks, the rerank call, and every failure mapping.

Statuses a real kuberank server produces cheaply (200, 400/422, 401, 403, 413) are driven
against the shared `live_server`; 429, 503 and broken bodies come from `stand_in_server`,
unreachable from a closed port.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from tests.support import LiveServer, free_port
from tests.ui.stand_in import ScriptedAnswer, StandInServer

from kuberank_server.rerank.protocol import RerankRequest
from kuberank_server.ui.client import (
    ErrorKind,
    PlaygroundError,
    RerankCall,
    build_request,
    parse_documents,
    rerank,
    retry_after_seconds,
)
from kuberank_server.ui.examples import EXAMPLE_DOCUMENTS, EXAMPLE_QUERY

SEED_DOCUMENTS_TEXT = "\n".join(EXAMPLE_DOCUMENTS)


def request_to(url: str, **fields: object) -> RerankCall:
    return build_request(url, EXAMPLE_QUERY, SEED_DOCUMENTS_TEXT, **fields)  # type: ignore[arg-type]


def expect_failure(request: RerankCall, token: str | None, **options: float) -> PlaygroundError:
    with pytest.raises(PlaygroundError) as caught:
        rerank(request, token, **options)
    return caught.value


# ------------------------------------------------------------------ the form -------------------


def test_documents_are_one_per_line_without_blank_lines() -> None:
    assert parse_documents("  first \n\n\tsecond\r\n   \nthird") == ["first", "second", "third"]


def test_request_body_carries_the_form() -> None:
    request = build_request(
        " http://127.0.0.1:8000/ ", "  q  ", "a\nb", top_n=2.0, instruction=" judge "
    )
    assert request.url == "http://127.0.0.1:8000/v1/rerank"
    assert request.body() == {
        "query": "q",
        "documents": ["a", "b"],
        "return_documents": False,
        "top_n": 2,
        "instruction": "judge",
    }


def test_optional_fields_left_empty_are_not_sent() -> None:
    body = build_request("http://h:1", "q", "a", top_n=None, instruction="   ").body()
    assert "top_n" not in body
    assert "instruction" not in body


@pytest.mark.parametrize(
    ("url", "query", "documents", "top_n", "expected_title"),
    [
        ("", "q", "a", None, "Endpoint URL is not usable."),
        ("localhost:8000", "q", "a", None, "Endpoint URL is not usable."),
        ("ftp://host/", "q", "a", None, "Endpoint URL is not usable."),
        ("http://", "q", "a", None, "Endpoint URL is not usable."),
        ("http://h:1", "  ", "a", None, "No query."),
        ("http://h:1", "q", " \n\n ", None, "No documents."),
        ("http://h:1", "q", "a", 0, "top_n must be a whole number of 1 or more, not 0."),
        ("http://h:1", "q", "a", -3, "top_n must be a whole number of 1 or more, not -3."),
        ("http://h:1", "q", "a", 1.5, "top_n must be a whole number of 1 or more, not 1.5."),
    ],
)
def test_incomplete_form_is_refused_before_sending(
    url: str, query: str, documents: str, top_n: float | None, expected_title: str
) -> None:
    with pytest.raises(PlaygroundError) as caught:
        build_request(url, query, documents, top_n=top_n)
    assert caught.value.kind is ErrorKind.INPUT
    assert caught.value.title == expected_title
    assert caught.value.advice


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7), (" 12 ", 12), ("0", 0), (None, None), ("", None), ("soon", None)],
)
def test_retry_after_in_seconds(header: str | None, expected: int | None) -> None:
    assert retry_after_seconds(header) == expected


def test_retry_after_as_http_date() -> None:
    in_half_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(in_half_a_minute) in (29, 30, 31)
    an_hour_ago = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert retry_after_seconds(an_hour_ago) == 0


# ------------------------------------------------------------------ a real server -------------


@pytest.mark.engine
def test_seed_example_ranks_the_third_document_last(live_server: LiveServer) -> None:
    outcome = rerank(request_to(live_server.url), live_server.token())

    assert [item.rank for item in outcome.ranking] == [1, 2, 3, 4]
    assert sorted(item.index for item in outcome.ranking) == [0, 1, 2, 3]
    assert outcome.ranking[-1].index == 2
    assert all(item.text == EXAMPLE_DOCUMENTS[item.index] for item in outcome.ranking)
    scores = [item.score for item in outcome.ranking]
    assert scores == sorted(scores, reverse=True)
    assert outcome.document_count == 4
    assert outcome.model
    assert 0 < outcome.latency_seconds < 30


@pytest.mark.engine
def test_top_n_keeps_the_best(live_server: LiveServer) -> None:
    token = live_server.token()
    everything = rerank(request_to(live_server.url), token)
    best_two = rerank(request_to(live_server.url, top_n=2), token)

    assert [item.index for item in best_two.ranking] == [
        item.index for item in everything.ranking[:2]
    ]
    assert best_two.document_count == 4


@pytest.mark.engine
def test_bad_token_is_a_token_error_that_does_not_quote_it(live_server: LiveServer) -> None:
    bad_token = "not-a-jwt-but-a-secret-looking-string"
    error = expect_failure(request_to(live_server.url), bad_token)

    assert error.kind is ErrorKind.UNAUTHENTICATED
    assert error.status == 401
    assert "Paste a valid token" in error.advice
    assert bad_token not in str(error)


@pytest.mark.engine
def test_missing_token_says_none_was_given(live_server: LiveServer) -> None:
    error = expect_failure(request_to(live_server.url), None)

    assert error.kind is ErrorKind.UNAUTHENTICATED
    assert "No token was given" in error.advice


@pytest.mark.engine
def test_token_without_rerank_scope_is_a_permission_error(live_server: LiveServer) -> None:
    token = live_server.token(subject="reader", scopes=("metrics",))
    error = expect_failure(request_to(live_server.url), token)

    assert error.kind is ErrorKind.PERMISSION
    assert error.status == 403
    assert "rerank" in error.advice
    assert token not in str(error)


@pytest.mark.engine
def test_too_many_documents_is_a_limit_error(live_server: LiveServer) -> None:
    too_many = "\n".join(f"document {number}" for number in range(1001))  # limit: 1000
    request = build_request(live_server.url, EXAMPLE_QUERY, too_many)
    error = expect_failure(request, live_server.token())

    assert error.kind is ErrorKind.TOO_LARGE
    assert error.status == 413
    assert "fewer or shorter documents" in error.advice


@pytest.mark.engine
def test_request_the_server_refuses_names_the_field(live_server: LiveServer) -> None:
    # The form refuses top_n=0 itself; built directly, it shows what the server says.
    request = RerankCall(
        url=f"{live_server.url}/v1/rerank",
        # Unvalidated, as a client that does not check would send it.
        request=RerankRequest.model_construct(query="q", documents=["a"], top_n=0),
    )
    error = expect_failure(request, live_server.token())

    assert error.kind is ErrorKind.REJECTED
    assert error.status in (400, 422)
    assert "top_n" in error.title


# ------------------------------------------------------------------ stand-ins and no server ---


def test_sends_bearer_token_and_json_body(stand_in_server: StandInServer) -> None:
    stand_in_server.answer_json(
        200, {"model": "m", "results": [{"index": 1, "relevance_score": 0.5}]}
    )
    outcome = rerank(build_request(stand_in_server.url, "q", "a\nb", instruction="i"), "the-token")

    assert stand_in_server.received_headers["Authorization"] == "Bearer the-token"
    assert stand_in_server.received_body == {
        "query": "q",
        "documents": ["a", "b"],
        "return_documents": False,
        "instruction": "i",
    }
    assert [(item.index, item.text) for item in outcome.ranking] == [(1, "b")]
    assert outcome.prompt_tokens is None


def test_no_token_sends_no_authorization_header(stand_in_server: StandInServer) -> None:
    stand_in_server.answer_json(200, {"results": []})
    rerank(build_request(stand_in_server.url, "q", "a"), None)

    assert "Authorization" not in stand_in_server.received_headers


def test_over_capacity_gives_the_retry_hint(stand_in_server: StandInServer) -> None:
    stand_in_server.answer_error(429, "too many requests in flight", {"Retry-After": "7"})
    error = expect_failure(build_request(stand_in_server.url, "q", "a"), "test-token-123")

    assert error.kind is ErrorKind.RATE_LIMITED
    assert error.title == "Server over capacity (429): too many requests in flight"
    assert error.retry_after_seconds == 7
    assert error.advice == "Retry in 7 s."


def test_over_capacity_without_retry_after(stand_in_server: StandInServer) -> None:
    stand_in_server.answer_error(429, "busy")
    error = expect_failure(build_request(stand_in_server.url, "q", "a"), "test-token-123")

    assert error.retry_after_seconds is None
    assert error.advice == "Retry shortly."


def test_not_ready_says_loading_or_draining(stand_in_server: StandInServer) -> None:
    stand_in_server.answer_error(503, "draining", {"Retry-After": "5"})
    error = expect_failure(build_request(stand_in_server.url, "q", "a"), "test-token-123")

    assert error.kind is ErrorKind.NOT_READY
    assert error.title == "Server not ready (503): draining"
    assert error.advice == "It is loading its model or shutting down. Retry in 5 s."


def test_body_too_large_from_a_proxy_without_an_envelope(stand_in_server: StandInServer) -> None:
    stand_in_server.answer = ScriptedAnswer(413, b"<html>too big</html>")
    error = expect_failure(build_request(stand_in_server.url, "q", "a"), "test-token-123")

    assert error.kind is ErrorKind.TOO_LARGE
    assert error.title == "Request too large (413)"


def test_unexpected_status_points_at_the_url(stand_in_server: StandInServer) -> None:
    stand_in_server.answer_error(404, "Not Found")
    error = expect_failure(build_request(stand_in_server.url, "q", "a"), "test-token-123")

    assert error.kind is ErrorKind.SERVER
    assert error.title == "Unexpected answer (404): Not Found"
    assert "kuberank server" in error.advice


@pytest.mark.parametrize(
    "body",
    [
        {"results": [{"index": 5, "relevance_score": 0.1}]},
        {"results": [{"index": -1, "relevance_score": 0.1}]},
        {"results": [{"index": 0}]},
        {"data": []},
        ["not", "an", "object"],
    ],
)
def test_ok_status_with_a_foreign_body_is_a_server_error(
    stand_in_server: StandInServer, body: object
) -> None:
    stand_in_server.answer_json(200, body)
    error = expect_failure(build_request(stand_in_server.url, "q", "a"), "test-token-123")

    assert error.kind is ErrorKind.SERVER
    assert "not a rerank result" in error.title


def test_a_server_quoting_the_token_has_it_redacted(stand_in_server: StandInServer) -> None:
    token = "eyJ.secret-token-value.sig"
    stand_in_server.answer_error(401, f"token {token} has expired")
    error = expect_failure(build_request(stand_in_server.url, "q", "a"), token)

    assert token not in str(error)
    assert error.title == "Token rejected (401): token [token] has expired"


def test_long_server_messages_are_cut(stand_in_server: StandInServer) -> None:
    stand_in_server.answer_error(400, "x" * 5000)
    error = expect_failure(build_request(stand_in_server.url, "q", "a"), "test-token-123")

    assert len(error.title) < 400
    assert error.title.endswith("…")


def test_slow_server_times_out(stand_in_server: StandInServer) -> None:
    stand_in_server.answer_json(200, {"results": []}, delay=2.0)
    error = expect_failure(
        build_request(stand_in_server.url, "q", "a"), "test-token-123", timeout_seconds=0.3
    )

    assert error.kind is ErrorKind.UNREACHABLE
    assert error.title.startswith("No answer from")


def test_closed_port_is_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # bound and released: nothing listens there
    error = expect_failure(build_request(url, "q", "a"), "secret-token")

    assert error.kind is ErrorKind.UNREACHABLE
    assert error.title == f"Cannot reach {url}/v1/rerank (ConnectError)."
    assert "server is running" in error.advice
    assert "secret-token" not in str(error)
