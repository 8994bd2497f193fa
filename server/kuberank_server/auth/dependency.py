"""The FastAPI dependency every protected route declares."""

from __future__ import annotations

from fastapi import Request

from kuberank_server.auth.authenticator import Authenticator, Principal, failure_reason
from kuberank_server.http.errors import KuberankError

API_KEY_HEADER = "x-api-key"


async def require_principal(request: Request) -> Principal:
    """The verified caller, via the app's `state.authenticator`.

    Records who called on `request.state` for the request log and the audit record: the
    subject, the credential's type and id (a JWT's `jti` or an API key's name), or why auth
    refused the request; never the credential itself."""
    authenticator: Authenticator = request.app.state.authenticator

    def identified(principal: Principal) -> None:
        request.state.subject = principal.subject
        request.state.credential_type = principal.credential_type
        request.state.credential_id = principal.credential_id

    duplicated = [
        name for name in ("Authorization", "X-API-Key") if len(request.headers.getlist(name)) > 1
    ]
    try:
        return await authenticator.authenticate(
            request.headers.get("authorization"),
            request.headers.get(API_KEY_HEADER),
            identified=identified,
            duplicated=duplicated,
        )
    except KuberankError as error:
        request.state.auth_failure = failure_reason(error)
        raise
