"""HTTPS on the API port from a certificate and key in files, reloaded when the files rotate.

uvicorn loads a certificate once, at start. A mounted Secret changes under a running pod
(cert-manager renews it; the kubelet swaps the files in with a symlink), so here the API port
serves with one `ssl.SSLContext` whose `sni_callback` runs at the start of every handshake
(with or without SNI). At most every `check_interval_seconds` it looks at the files; a pair
that changed is loaded into a fresh context, and from then on every handshake is handed that
context. Connections already open keep the certificate they began with. A pair that does not
load (a rotation caught half-written) is logged and the previous certificate kept; the next
change of the files is tried again.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from pathlib import Path
from typing import Any

from kuberank_server.runtime.settings import ServerSettings

log = logging.getLogger(__name__)

FileStamp = tuple[tuple[int, int, int], ...]


class TLSConfigurationError(ValueError):
    """The certificate or key cannot be used; `str()` says which file and why."""


def _server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    for path in (cert_file, key_file):
        if not path.is_file():
            raise TLSConfigurationError(f"TLS file not found: {path}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=cert_file, keyfile=key_file)
    except (ssl.SSLError, OSError) as error:
        raise TLSConfigurationError(
            f"cannot load the TLS certificate {cert_file} with key {key_file}: {error}"
        ) from None
    return context


class ReloadingCertificate:
    """The certificate the API port presents, kept equal to the files within the interval."""

    def __init__(self, cert_file: Path, key_file: Path, check_interval_seconds: float) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self.check_interval_seconds = check_interval_seconds
        self._stamp = self._files_stamp()
        self.current = _server_context(cert_file, key_file)  # at start, a bad pair is fatal
        self.loads = 1
        self._checked_at = time.monotonic()
        # The context every handshake starts with; its callback picks the current one.
        self.listening = self.current
        self.listening.sni_callback = self._on_client_hello

    def _files_stamp(self) -> FileStamp:
        # stat follows the kubelet's symlinks: a swapped-in file has a new inode and mtime.
        stamps = []
        for path in (self.cert_file, self.key_file):
            try:
                found = os.stat(path)
            except FileNotFoundError:
                stamps.append((0, 0, 0))
                continue
            stamps.append((found.st_ino, found.st_mtime_ns, found.st_size))
        return tuple(stamps)

    def refresh(self) -> None:
        """Load the files again if they changed since the last look (no more often than the
        interval)."""
        now = time.monotonic()
        if now - self._checked_at < self.check_interval_seconds:
            return
        self._checked_at = now
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self.current = _server_context(self.cert_file, self.key_file)
        except TLSConfigurationError as error:
            log.warning("TLS files changed but do not load; still serving the previous "
                        "certificate: %s", error)  # fmt: skip
            return
        self.loads += 1
        log.info("TLS certificate reloaded from %s", self.cert_file)

    def _on_client_hello(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: Any
    ) -> None:
        try:
            self.refresh()
        except Exception:  # a failure here must not fail the handshake: keep the old one
            log.exception("checking the TLS files failed")
        if connection.context is not self.current:
            connection.context = self.current

    def server_options(self) -> dict[str, Any]:
        """Keyword arguments for `http_limits.api_server_config` to serve with this certificate
        (the handshake is done by its protocol, counted from the accept, not by uvicorn)."""
        return {"tls_context": self.listening}


def uvicorn_tls_options(settings: ServerSettings) -> dict[str, Any]:
    """`api_server_config` keyword arguments: none for plain HTTP, else a reloading certificate.

    Raises TLSConfigurationError at once when the files cannot be used.
    """
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return {}
    certificate = ReloadingCertificate(
        settings.tls_cert_file, settings.tls_key_file, settings.tls_reload_check_seconds
    )
    log.info("HTTPS with %s (checked for rotation every %g s)", settings.tls_cert_file,
             settings.tls_reload_check_seconds)  # fmt: skip
    return certificate.server_options()
