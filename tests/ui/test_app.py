"""The page's click handler: which token it sends, how the form's fields reach the request."""

from __future__ import annotations

import gradio as gr
from tests.ui.stand_in import StandInServer

from kuberank_server.ui.app import build_playground, make_rank_handler

RESULTS = {"model": "m", "results": [{"index": 1, "relevance_score": 0.9}]}


def test_empty_token_field_uses_the_process_token(stand_in_server: StandInServer) -> None:
    stand_in_server.answer_json(200, RESULTS)
    rank = make_rank_handler(server_token="process-token")
    html = rank(stand_in_server.url, "   ", "q", "a\nb", 0, "")

    assert stand_in_server.received_headers["Authorization"] == "Bearer process-token"
    assert '<td class="kr-text">b</td>' in html
    # 0 in the page's number field means every document: no top_n is sent.
    assert "top_n" not in stand_in_server.received_body


def test_page_token_wins_over_the_process_token(stand_in_server: StandInServer) -> None:
    stand_in_server.answer_json(200, RESULTS)
    rank = make_rank_handler(server_token="process-token")
    rank(stand_in_server.url, " page-token ", "q", "a\nb", 1, "judge")

    assert stand_in_server.received_headers["Authorization"] == "Bearer page-token"
    assert stand_in_server.received_body["top_n"] == 1
    assert stand_in_server.received_body["instruction"] == "judge"


def test_no_token_anywhere_sends_none(stand_in_server: StandInServer) -> None:
    stand_in_server.answer_error(401, "missing bearer token")
    html = make_rank_handler(server_token=None)(stand_in_server.url, "", "q", "a", 0, "")

    assert "Authorization" not in stand_in_server.received_headers
    assert 'role="alert"' in html
    assert "No token was given" in html


def test_form_errors_render_without_a_request() -> None:
    html = make_rank_handler(server_token="process-token")("not a url", "", "q", "a", 0, "")

    assert 'data-kind="input"' in html
    assert "Endpoint URL is not usable." in html


def test_the_process_token_is_not_in_the_page_config() -> None:
    playground = build_playground("http://127.0.0.1:8000", server_token="process-token-secret")

    assert isinstance(playground, gr.Blocks)
    assert "process-token-secret" not in str(playground.get_config_file())
