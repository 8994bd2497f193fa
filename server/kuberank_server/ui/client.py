"""The playground's HTTP client: one rerank call, its failures phrased for a person.

Plain functions and data, no Gradio: the page (`app`) only wires inputs to `rerank` and
renders what comes back. Every failure is a `PlaygroundError` saying what went wrong and
what to do next; none of them ever carries the bearer token.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

# The server's protocol models: pydantic only, no vLLM.
from kuberank_server.rerank.protocol import RerankRequest, RerankResult

RERANK_PATH = "/v1/rerank"
DEFAULT_TIMEOUT_SECONDS = 60.0
# Long server messages are cut so an error box stays readable.
MAX_SERVER_MESSAGE_CHARS = 300
REDACTED = "[token]"


class ErrorKind(enum.StrEnum):
    INPUT = "input"  # the form itself is incomplete; nothing was sent
    REJECTED = "rejected"  # 400/422: the server refused the request's content
    UNAUTHENTICATED = "unauthenticated"  # 401: no token, or one that does not verify
    PERMISSION = "permission"  # 403: a valid token without the needed scope
    TOO_LARGE = "too_large"  # 413
    RATE_LIMITED = "rate_limited"  # 429
    NOT_READY = "not_ready"  # 503: loading or draining
    UNREACHABLE = "unreachable"  # no HTTP answer at all
    SERVER = "server"  # any other answer we cannot use


class PlaygroundError(Exception):
    """A failure phrased for the person at the page: what happened, then what to do."""

    def __init__(
        self,
        kind: ErrorKind,
        title: str,
        advice: str,
        *,
        status: int | None = None,
        retry_after_seconds: int | None = None,
    ) -> None:
        super().__init__(f"{title} {advice}")
        self.kind = kind
        self.title = title
        self.advice = advice
        self.status = status
        self.retry_after_seconds = retry_after_seconds


@dataclass(frozen=True)
class RerankCall:
    """Where to send one rerank request, and the request: the server's own model."""

    url: str
    request: RerankRequest

    def body(self) -> dict[str, Any]:
        # Fields left empty are not sent: the server's defaults apply.
        return self.request.model_dump(exclude_none=True)


@dataclass(frozen=True)
class ResultRow:
    """One row of the page's ranking table: a `RerankResult` with its rank and its text."""

    rank: int
    index: int
    score: float
    text: str


@dataclass(frozen=True)
class RerankOutcome:
    ranking: list[ResultRow]
    latency_seconds: float
    model: str
    prompt_tokens: int | None
    document_count: int


def parse_documents(text: str) -> list[str]:
    """One document per line; blank lines and surrounding spaces are dropped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def build_request(
    url: str,
    query: str,
    documents_text: str,
    top_n: float | None = None,
    instruction: str | None = None,
) -> RerankCall:
    """Check the form before anything is sent; raise `PlaygroundError(INPUT)` if incomplete."""
    base_url = _check_url(url)
    query = query.strip()
    if not query:
        raise PlaygroundError(ErrorKind.INPUT, "No query.", "Type the query to rank against.")
    documents = parse_documents(documents_text)
    if not documents:
        raise PlaygroundError(
            ErrorKind.INPUT, "No documents.", "Paste the candidate documents, one per line."
        )
    return RerankCall(
        url=base_url + RERANK_PATH,
        request=RerankRequest(
            query=query,
            documents=documents,
            top_n=_check_top_n(top_n),
            instruction=(instruction or "").strip() or None,
            # Texts are looked up locally by index: no need to ship them back.
            return_documents=False,
        ),
    )


def rerank(
    call: RerankCall,
    token: str | None,
    *,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> RerankOutcome:
    """Send one rerank request; return the ranking or raise a `PlaygroundError`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    started = time.perf_counter()
    try:
        response = httpx.post(call.url, json=call.body(), headers=headers, timeout=timeout_seconds)
    except httpx.TimeoutException:
        raise PlaygroundError(
            ErrorKind.UNREACHABLE,
            f"No answer from {call.url} within {timeout_seconds:g} s.",
            "The server may be overloaded; try fewer documents or retry later.",
        ) from None
    except httpx.TransportError as error:
        raise PlaygroundError(
            ErrorKind.UNREACHABLE,
            f"Cannot reach {call.url} ({type(error).__name__}).",
            "Check the endpoint URL and that the server is running and reachable from here.",
        ) from None
    latency_seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise error_for_response(response, token)
    return _parse_outcome(response, call.request, latency_seconds)


def error_for_response(response: httpx.Response, token: str | None) -> PlaygroundError:
    """Map a non-200 answer to what the person should do about it (`token`: what was sent)."""
    status = response.status_code
    said = _server_message(response, token)
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    retry_hint = f"Retry in {retry_after} s." if retry_after is not None else "Retry shortly."
    if status == 401:
        advice = (
            "Paste a valid token (or set KUBERANK_UI_TOKEN where the UI runs): "
            "it may be expired or signed with another key."
            if token
            else "No token was given: paste one, or set KUBERANK_UI_TOKEN where the UI runs."
        )
        return PlaygroundError(
            ErrorKind.UNAUTHENTICATED, f"Token rejected (401){said}", advice, status=status
        )
    if status == 403:
        return PlaygroundError(
            ErrorKind.PERMISSION,
            f"Token lacks permission (403){said}",
            "Use a token minted with the `rerank` scope "
            "(kuberank-server token --subject NAME --scope rerank).",
            status=status,
        )
    if status == 413:
        return PlaygroundError(
            ErrorKind.TOO_LARGE,
            f"Request too large (413){said}",
            "Send fewer or shorter documents.",
            status=status,
        )
    if status == 429:
        return PlaygroundError(
            ErrorKind.RATE_LIMITED,
            f"Server over capacity (429){said}",
            retry_hint,
            status=status,
            retry_after_seconds=retry_after,
        )
    if status == 503:
        return PlaygroundError(
            ErrorKind.NOT_READY,
            f"Server not ready (503){said}",
            f"It is loading its model or shutting down. {retry_hint}",
            status=status,
            retry_after_seconds=retry_after,
        )
    if status in (400, 422):
        return PlaygroundError(
            ErrorKind.REJECTED,
            f"Request refused ({status}){said}",
            "Fix the field named above and send again.",
            status=status,
        )
    return PlaygroundError(
        ErrorKind.SERVER,
        f"Unexpected answer ({status}){said}",
        "Check the endpoint URL points at a kuberank server, and its logs.",
        status=status,
    )


def retry_after_seconds(header: str | None) -> int | None:
    """`Retry-After` as whole seconds from now: it may be a number or an HTTP date."""
    if header is None or not header.strip():
        return None
    value = header.strip()
    if value.isdigit():
        return int(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, math.ceil((when - datetime.now(UTC)).total_seconds()))


def _check_url(url: str) -> str:
    url = url.strip().rstrip("/")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise PlaygroundError(
            ErrorKind.INPUT,
            "Endpoint URL is not usable.",
            "Give the server's base URL, e.g. http://127.0.0.1:8000.",
        )
    return url


def _check_top_n(top_n: float | None) -> int | None:
    if top_n is None:
        return None
    if top_n != int(top_n) or top_n < 1:
        raise PlaygroundError(
            ErrorKind.INPUT,
            f"top_n must be a whole number of 1 or more, not {top_n:g}.",
            "Leave it empty to rank every document.",
        )
    return int(top_n)


def _server_message(response: httpx.Response, token: str | None) -> str:
    """The server's own explanation as ': message (param)', or '' when it gave none."""
    try:
        error = response.json().get("error") or {}
        message = str(error.get("message") or "").strip()
        param = error.get("param")
    except (ValueError, AttributeError):
        return ""
    if not message:
        return ""
    if param:
        message = f"{message} (field: {param})"
    if token:
        # A server should never quote the token, but this page must not show it either way.
        message = message.replace(token, REDACTED)
    if len(message) > MAX_SERVER_MESSAGE_CHARS:
        message = message[: MAX_SERVER_MESSAGE_CHARS - 1] + "…"
    return f": {message}"


def _parse_outcome(
    response: httpx.Response, request: RerankRequest, latency_seconds: float
) -> RerankOutcome:
    try:
        body = response.json()
        ranking = []
        for rank, item in enumerate(body["results"], start=1):
            result = RerankResult.model_validate(item)
            if not 0 <= result.index < len(request.documents):
                raise IndexError(result.index)
            ranking.append(
                ResultRow(
                    rank=rank,
                    index=result.index,
                    score=result.relevance_score,
                    text=request.documents[result.index],
                )
            )
        usage = body.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens")
        return RerankOutcome(
            ranking=ranking,
            latency_seconds=latency_seconds,
            model=str(body.get("model") or ""),
            prompt_tokens=int(prompt_tokens) if prompt_tokens is not None else None,
            document_count=len(request.documents),
        )
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        raise PlaygroundError(
            ErrorKind.SERVER,
            "The server answered 200 with a body that is not a rerank result.",
            "Check the endpoint URL points at a kuberank server.",
            status=response.status_code,
        ) from None
