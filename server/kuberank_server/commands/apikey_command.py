"""`kuberank-server apikey create`: a new API key for a client, shown once.

Prints the key (first line of stdout; the server never stores it) and the entry to add to the
`apikeys.json` key of the API-key Secret (second line: a JSON object, keyed by the key's name,
holding the key's SHA-256, subject, scopes, expiry and rate). Merge the entry into the
Secret's JSON object; the server picks the change up without a restart.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from kuberank_contract import API_KEYS_FILE_NAME
from kuberank_server.auth.api_keys import KEY_NAME_PATTERN, ApiKeyEntry, key_digest, new_api_key
from kuberank_server.runtime.settings import ServerSettings

EXIT_USAGE = 2
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(subcommands: argparse._SubParsersAction[Any]) -> None:
    parser = subcommands.add_parser(
        "apikey",
        help="make API keys for clients",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="apikey_action", required=True)
    create = actions.add_parser(
        "create",
        help="print a new API key once, and its entry for the key Secret",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    create.add_argument("--subject", required=True, help="who calls with the key")
    create.add_argument(
        "--name", help="the key's name (audit, revocation); default: the subject and 6 hex digits"
    )
    create.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        metavar="SCOPE",
        help="a scope to grant; repeat for several (default: KUBERANK_JWT_REQUIRED_SCOPES)",
    )
    create.add_argument(
        "--expires",
        type=expiry,
        help="when the key stops working: a duration from now (90d, 12h, 30m) or an "
        "ISO 8601 date or time (2027-01-31, 2027-01-31T12:00:00Z; UTC unless a zone is given); "
        "default: never",
    )
    create.add_argument(
        "--rate",
        type=float,
        help="requests per second for this key (default: the subject's rate limit)",
    )
    create.set_defaults(run=run)


def expiry(value: str, now: datetime | None = None) -> datetime:
    """`--expires`: a duration from now or an ISO 8601 date/time, in the future."""
    now = now or datetime.now(UTC)
    duration = _DURATION.match(value)
    if duration:
        moment = now + timedelta(seconds=int(duration[1]) * _UNIT_SECONDS[duration[2]])
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a duration (90d, 12h, 30m) or an ISO 8601 date/time, got {value!r}"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    if moment <= now:
        raise argparse.ArgumentTypeError(f"{value!r} is not in the future")
    return moment.astimezone(UTC)


def _default_name(subject: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", subject).strip("-._")[:50] or "key"
    return f"{stem}-{secrets.token_hex(3)}"


def run(args: argparse.Namespace) -> int:
    name = args.name or _default_name(args.subject)
    if not re.match(KEY_NAME_PATTERN, name):
        return _usage_error(
            f"--name {name!r}: use 1-63 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    try:
        scopes = args.scopes if args.scopes is not None else ServerSettings().jwt_required_scopes
        key = new_api_key()
        entry = ApiKeyEntry(
            sha256=key_digest(key),
            subject=args.subject,
            scopes=tuple(scopes),
            expires=args.expires,
            rate=args.rate,
        )
    except ValidationError as error:
        return _usage_error(str(error))
    print(key)
    print(json.dumps({name: entry.model_dump(mode="json")}))
    print(
        f"\nLine 1 is the API key {name!r}: give it to {args.subject!r} now, it is not shown "
        f"again.\nLine 2 is its entry: merge it into the JSON object in the {API_KEYS_FILE_NAME} "
        "key of the API-key Secret (spec.auth.apiKeys.secretRef), e.g. for a new Secret:\n"
        f"  kubectl create secret generic rerank-api-keys --from-file={API_KEYS_FILE_NAME}\n"
        "To revoke the key, delete its entry. Running servers pick up the change without a "
        "restart (kubelet updates the mounted Secret within about a minute).",
        file=sys.stderr,
    )
    return 0


def _usage_error(message: str) -> int:
    print(f"kuberank-server apikey create: error: {message}", file=sys.stderr)
    return EXIT_USAGE
