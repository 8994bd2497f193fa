"""`kuberank-server token`: mint a JWT for an internal service.

Issuer, audience and algorithms come from the same `KUBERANK_*` settings the server reads,
so a token minted beside a server's configuration is one that server accepts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import ValidationError

from kuberank_server.auth.algorithms import (
    AuthConfigurationError,
    check_algorithms,
    check_secret_length,
    key_fits_algorithm,
)
from kuberank_server.auth.keys import read_secret_file
from kuberank_server.auth.tokens import mint_token
from kuberank_server.settings import ServerSettings

EXIT_USAGE = 2


def register(subcommands: argparse._SubParsersAction[Any]) -> None:
    parser = subcommands.add_parser(
        "token",
        help="print a signed JWT for a client",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--subject", required=True, help="the client's name (the `sub` claim)")
    parser.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        metavar="SCOPE",
        help="a scope to grant; repeat for several (default: KUBERANK_JWT_REQUIRED_SCOPES)",
    )
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    parser.add_argument("--kid", help="key id for the token header (for JWKS-verified servers)")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument(
        "--secret-file",
        type=Path,
        help="HS* shared secret (default: KUBERANK_JWT_SECRET or KUBERANK_JWT_SECRET_FILE)",
    )
    keys.add_argument("--private-key-file", type=Path, help="PEM private key for RS*/PS*/ES*/EdDSA")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = ServerSettings()
        if args.ttl <= 0:
            raise AuthConfigurationError(f"--ttl must be positive, got {args.ttl}")
        key, algorithm = _signing_key(args, settings)
    except (AuthConfigurationError, ValidationError) as error:
        print(f"kuberank-server token: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(
        mint_token(
            key=key,
            subject=args.subject,
            scopes=args.scopes if args.scopes is not None else settings.jwt_required_scopes,
            ttl_seconds=args.ttl,
            algorithm=algorithm,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            kid=args.kid,
        )
    )
    return 0


def _signing_key(args: argparse.Namespace, settings: ServerSettings) -> tuple[bytes, str]:
    """The key to sign with and the first configured algorithm that fits it."""
    if args.private_key_file is not None:
        return _private_key(args.private_key_file, settings)
    if args.secret_file is not None:
        source, secret = "--secret-file", read_secret_file(args.secret_file)
    elif settings.jwt_secret is not None:
        source, secret = "KUBERANK_JWT_SECRET", settings.jwt_secret.get_secret_value().encode()
    elif settings.jwt_secret_file is not None:
        source, secret = "KUBERANK_JWT_SECRET_FILE", read_secret_file(settings.jwt_secret_file)
    else:
        raise AuthConfigurationError(
            "no signing key: pass --secret-file or --private-key-file, or set "
            "KUBERANK_JWT_SECRET / KUBERANK_JWT_SECRET_FILE"
        )
    algorithms = check_algorithms(settings.jwt_algorithms, hmac=True, key_source=source)
    check_secret_length(secret, algorithms, key_source=source)
    return secret, algorithms[0]


def _private_key(path: Path, settings: ServerSettings) -> tuple[bytes, str]:
    try:
        pem = path.read_bytes()
        public_key = load_pem_private_key(pem, password=None).public_key()
    except OSError as error:
        raise AuthConfigurationError(f"cannot read {path}: {error.strerror}") from None
    except (ValueError, TypeError):
        raise AuthConfigurationError(f"{path} holds no unencrypted PEM private key") from None
    algorithms = check_algorithms(
        settings.jwt_algorithms, hmac=False, key_source="--private-key-file"
    )
    fitting = [algorithm for algorithm in algorithms if key_fits_algorithm(public_key, algorithm)]
    if not fitting:
        raise AuthConfigurationError(
            f"the key in {path} fits none of KUBERANK_JWT_ALGORITHMS ({', '.join(algorithms)})"
        )
    return pem, fitting[0]
