"""One error envelope, one exception -> status mapping.

Everything the API rejects raises a `KuberankError` subclass; `install_error_handlers`
turns it (and FastAPI's own validation errors) into
`{"error": {"type": ..., "message": ..., "param": ...}}` with the status below.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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


class PayloadTooLargeError(KuberankError):
    status_code = 413
    error_type = "payload_too_large"


class RateLimitedError(KuberankError):
    """Over capacity or over a subject's rate: the client should retry after a pause."""

    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_seconds: float) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, round(retry_after_seconds)))})


class NotReadyError(KuberankError):
    status_code = 503
    error_type = "service_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class UnprocessableEntityError(KuberankError):
    """Well-formed JSON that does not fit the route's body schema."""

    status_code = 422
    error_type = "invalid_request_error"


_HTTP_ERROR_TYPES = {404: "not_found", 405: "method_not_allowed"}


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
                      "message": str(error.detail), "param": None}
        }  # fmt: skip
        return JSONResponse(envelope, status_code=error.status_code, headers=error.headers)

    async def on_unexpected_error(request: Request, error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(KuberankError("internal server error"))

    app.add_exception_handler(KuberankError, on_kuberank_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected_error)
