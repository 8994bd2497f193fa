"""One error envelope, one exception -> status mapping.

Everything the API rejects raises a `KuberankError` subclass; `install_error_handlers`
turns it (and FastAPI's own validation errors) into
`{"error": {"type": ..., "message": ..., "param": ...}}` with the status below.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, ClassVar

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class KuberankError(Exception):
    """The base of every API error; raised as is, the 500 for anything unexpected."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal_error"

    def __init__(
        self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return {"error": {"type": self.error_type, "message": self.message, "param": self.param}}


class InvalidRequestError(KuberankError):
    status_code = 400
    error_type = "invalid_request_error"


class UnsupportedMediaTypeError(KuberankError):
    status_code = 415
    error_type = "unsupported_media_type"


class AuthenticationError(KuberankError):
    """No token, or a token that does not verify. `reason` labels the failure metric."""

    status_code = 401
    error_type = "authentication_error"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        self.reason = reason


class PermissionDeniedError(KuberankError):
    status_code = 403
    error_type = "permission_error"

    def __init__(self, message: str, *, reason: str = "missing_scope") -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'})
        self.reason = reason


class RequestTimeoutError(KuberankError):
    """The request body did not arrive in time; the connection is closed after the answer."""

    status_code = 408
    error_type = "request_timeout"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message, param=param, headers={"Connection": "close"})


class PayloadTooLargeError(KuberankError):
    status_code = 413
    error_type = "payload_too_large"


class RateLimitedError(KuberankError):
    """Over capacity or over a subject's rate: the client should retry after a pause."""

    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_seconds: float) -> None:
        retry_after = max(1, math.ceil(retry_after_seconds))
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class NotReadyError(KuberankError):
    status_code = 503
    error_type = "service_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class UnprocessableEntityError(KuberankError):
    """Well-formed JSON that does not fit the route's body schema."""

    status_code = 422
    error_type = "invalid_request_error"


# FastAPI raises a plain 400 for a body it cannot decode at all (not UTF-8, nested too deep
# for the parser): to a client that is invalid JSON like any other.
_HTTP_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found", 405: "method_not_allowed"}
_HTTP_ERROR_MESSAGES = {400: "request body is not valid JSON (not UTF-8, or nested too deeply)"}


class ErrorDetail(BaseModel):
    type: str = Field(description="stable machine-readable kind, e.g. invalid_request_error")
    message: str
    param: str | None = Field(description="the request field or header at fault, if one is")


class ErrorEnvelope(BaseModel):
    """Every error answer of the API, whatever its status."""

    error: ErrorDetail


_STATUS_MEANINGS = {
    400: "the body is not valid JSON, or the request is invalid",
    401: "no credential, or one that does not verify (WWW-Authenticate: Bearer)",
    403: "the credential lacks a required scope",
    405: "wrong method for this path (Allow lists the right ones)",
    408: "the request body did not arrive in time",
    413: "body, document count or token budget over the limit",
    415: "the body is not uncompressed application/json",
    422: "the JSON does not match the body schema",
    429: "over capacity: queue full or expected wait too long (Retry-After)",
    500: "unexpected server error",
    503: "not ready, or shutting down (Retry-After)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these statuses, each with the error envelope's schema."""
    return {
        status: {"model": ErrorEnvelope, "description": _STATUS_MEANINGS[status]}
        for status in statuses
    }


def error_response(error: KuberankError) -> JSONResponse:
    return JSONResponse(error.envelope(), status_code=error.status_code, headers=error.headers)


def validation_error(errors: Sequence[Any]) -> KuberankError:
    """FastAPI's body validation errors as one error: 400 for unparsable JSON, else 422
    naming every bad field (`param` is the first one, e.g. `documents.0`)."""
    if not errors:
        return UnprocessableEntityError("request body does not match the schema")
    if errors[0].get("type") == "json_invalid":
        return InvalidRequestError(f"request body is not valid JSON: {errors[0].get('msg', '')}")
    paths = [_field_path(error.get("loc", ())) for error in errors]
    message = "; ".join(
        f"{path or 'body'}: {error.get('msg')}" for path, error in zip(paths, errors, strict=True)
    )
    return UnprocessableEntityError(message, param=paths[0] or None)


def _field_path(location: Sequence[Any]) -> str:
    return ".".join(str(part) for part in location if part != "body")


def _allow_head(error: StarletteHTTPException) -> dict[str, str] | None:
    """The router's `Allow` lists the route's methods; HEAD is served wherever GET is (the
    `HeadAsGet` middleware), so a 405 says so too."""
    headers = dict(error.headers or {})
    methods = [method.strip() for method in headers.get("Allow", "").split(",") if method.strip()]
    if "GET" in methods and "HEAD" not in methods:
        headers["Allow"] = ", ".join([*methods, "HEAD"])
    return headers or None


def install_error_handlers(app: FastAPI) -> None:
    async def on_kuberank_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, KuberankError)
        return error_response(error)

    async def on_validation_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        return error_response(validation_error(error.errors()))

    async def on_http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        envelope = {
            "error": {"type": _HTTP_ERROR_TYPES.get(error.status_code, "http_error"),
                      "message": _HTTP_ERROR_MESSAGES.get(error.status_code, str(error.detail)),
                      "param": None}
        }  # fmt: skip
        return JSONResponse(envelope, status_code=error.status_code, headers=_allow_head(error))

    async def on_unexpected_error(request: Request, error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(KuberankError("internal server error"))

    app.add_exception_handler(KuberankError, on_kuberank_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected_error)
