"""API keys: named, stored as SHA-256 hashes only, reloaded from a mounted Secret file.

A key is `kr_` and 43 URL-safe characters (256 random bits); the prefix lets secret scanners
find a leaked one (`kr_[A-Za-z0-9_-]{43}`). A key this random needs no slow password hash:
there is nothing to guess, so a fast SHA-256 is enough, and it is all the Secret holds.

The Secret's one key, `apikeys.json`, is a JSON object of entries by key name:

    {"batch-job": {"sha256": "<64 hex digits>", "subject": "batch-job",
                   "scopes": ["rerank"], "expires": "2027-01-01T00:00:00Z", "rate": 5}}

`expires` (RFC 3339, with a zone) and `rate` (requests per second) may be null or absent.
`kuberank-server apikey create` prints a new key and its entry. The server re-reads the file
when its stat changes, checking at most every `api_keys_reload_seconds`; kubelet itself
updates a mounted Secret within about a minute of the change (never through a subPath mount).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from kuberank_server.auth.algorithms import AuthConfigurationError

logger = logging.getLogger(__name__)

API_KEY_PREFIX = "kr_"
_RANDOM_BYTES = 32  # 256 bits: 43 URL-safe base64 characters
KEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(_RANDOM_BYTES)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def is_api_key(credential: str) -> bool:
    """Whether a bearer credential is meant as an API key (JWTs start with `eyJ`)."""
    return credential.startswith(API_KEY_PREFIX)


class ApiKeyEntry(BaseModel):
    """One key as the Secret stores it: never the key, only its hash and what it may do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the key")
    subject: str = Field(min_length=1, description="who calls with it (audit, rate limits)")
    scopes: tuple[str, ...] = ()
    expires: AwareDatetime | None = None
    rate: float | None = Field(None, gt=0, description="requests/s; unset: the subject's rate")

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires


KeyName = Annotated[str, StringConstraints(pattern=KEY_NAME_PATTERN)]
_KEY_FILE = TypeAdapter(dict[KeyName, ApiKeyEntry])


@dataclass(frozen=True)
class ApiKey:
    name: str
    entry: ApiKeyEntry


class ApiKeyFileError(ValueError):
    """The key file cannot be used; the message names the file and the problem."""


def parse_api_keys(content: bytes, source: str) -> dict[str, ApiKey]:
    """The keys of a key file, by hash; ApiKeyFileError for anything malformed."""
    try:
        entries = _KEY_FILE.validate_json(content)
    except PydanticValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'file'}: {item['msg']}"
            for item in error.errors(include_input=False)
        )
        raise ApiKeyFileError(f"API key file {source} is invalid: {problems}") from None
    by_digest: dict[str, ApiKey] = {}
    for name, entry in entries.items():
        if entry.sha256 in by_digest:
            raise ApiKeyFileError(
                f"API key file {source}: keys {by_digest[entry.sha256].name!r} and {name!r} "
                "have the same hash"
            )
        by_digest[entry.sha256] = ApiKey(name, entry)
    return by_digest


def _names(keys: Mapping[str, ApiKey]) -> set[str]:
    return {key.name for key in keys.values()}


class ApiKeyStore:
    """The keys of one file, re-read when the file changes (checked at most every
    `reload_seconds`, on the request path: one `stat` per interval, no thread)."""

    def __init__(
        self, path: Path, *, reload_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self._reload_seconds = reload_seconds
        self._clock = clock
        try:
            self._signature = self._stat()
            self._keys = parse_api_keys(path.read_bytes(), str(path))
        except OSError as error:
            raise AuthConfigurationError(
                f"cannot read API key file {path}: {error.strerror}"
            ) from None
        except ApiKeyFileError as error:
            raise AuthConfigurationError(str(error)) from None
        self._checked_at = clock()
        if not self._keys:
            logger.warning("API key file %s holds no keys: every API key is refused", path)
        logger.info("API keys: %d from %s", len(self._keys), path)

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, key: str) -> ApiKey | None:
        """The stored key whose hash is the hash of `key`, or None."""
        self._reload_if_changed()
        digest = key_digest(key)
        # The lookup by digest is safe in variable time: a digest reveals nothing usable about
        # a 256-bit random key. The comparison that decides is constant-time all the same.
        found = self._keys.get(digest)
        if found is None or not hmac.compare_digest(found.entry.sha256, digest):
            return None
        return found

    def _stat(self) -> tuple[int, int, int]:
        # stat follows kubelet's symlink swap (`..data`), so an update is a new inode.
        result = os.stat(self.path)
        return result.st_ino, result.st_mtime_ns, result.st_size

    def _reload_if_changed(self) -> None:
        now = self._clock()
        if now - self._checked_at < self._reload_seconds:
            return
        self._checked_at = now
        try:
            signature = self._stat()
            if signature == self._signature:
                return
            content = self.path.read_bytes()
        except OSError as error:
            logger.error(
                "cannot read API key file %s (%s); keeping the %d keys loaded before",
                self.path, error.strerror, len(self._keys),
            )  # fmt: skip
            return
        # Recorded before parsing, so a broken file is reported once, not every interval.
        self._signature = signature
        try:
            keys = parse_api_keys(content, str(self.path))
        except ApiKeyFileError as error:
            logger.error("%s; keeping the %d keys loaded before", error, len(self._keys))
            return
        added, removed = _names(keys) - _names(self._keys), _names(self._keys) - _names(keys)
        self._keys = keys
        logger.info(
            "API keys reloaded from %s: %d keys (added: %s; removed: %s)",
            self.path, len(keys), ", ".join(sorted(added)) or "none",
            ", ".join(sorted(removed)) or "none",
        )  # fmt: skip
