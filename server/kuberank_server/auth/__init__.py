"""JWT bearer authentication for the rerank API (see DESIGN.md, "Auth")."""

from kuberank_server.auth.algorithms import AuthConfigurationError
from kuberank_server.auth.authenticator import Authenticator, Principal
from kuberank_server.auth.dependency import require_principal

__all__ = ["AuthConfigurationError", "Authenticator", "Principal", "require_principal"]
