"""One error envelope, one exception -> status mapping.

Everything the API rejects raises a `KuberankError` subclass; `install_error_handlers`
turns it (and FastAPI's own validation errors) into
`{"error": {"type": ..., "message": ..., "param": ...}}` with the status below.
"""

from __future__ import annotations

from typing import Any, ClassVar


class KuberankError(Exception):
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
        super().__init__(
            message, headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'}
        )
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
