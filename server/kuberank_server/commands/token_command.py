"""`kuberank-server token`: mint a JWT for an internal service.

Issuer, audience and algorithms come from the same `KUBERANK_*` settings the server reads,
so a token minted beside a server's configuration is one that server accepts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kuberank_server.auth.algorithms import AuthConfigurationError
from kuberank_server.auth.tokens import mint_token_from_settings
from kuberank_server.runtime.settings import ServerSettings

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
        token = mint_token_from_settings(
            ServerSettings(),
            subject=args.subject,
            scopes=args.scopes,
            ttl_seconds=args.ttl,
            kid=args.kid,
            secret_file=args.secret_file,
            private_key_file=args.private_key_file,
        )
    except (AuthConfigurationError, ValidationError) as error:
        print(f"kuberank-server token: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(token)
    return 0
