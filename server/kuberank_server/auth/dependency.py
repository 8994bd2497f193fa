"""The FastAPI dependency every protected route declares."""

from __future__ import annotations

from fastapi import Request

from kuberank_server.auth.authenticator import Authenticator, Principal


async def require_principal(request: Request) -> Principal:
    """The verified caller, via the app's `state.authenticator`; records the subject (never
    the token) on `request.state.subject` for the request log line."""
    authenticator: Authenticator = request.app.state.authenticator
    principal = await authenticator.authenticate(request.headers.get("authorization"))
    request.state.subject = principal.subject
    return principal
