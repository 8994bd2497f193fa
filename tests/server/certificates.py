"""Real X.509 certificates made in the test (the `cryptography` package): a CA, and server
certificates it signs for a RerankerService's DNS names, written as a mounted Secret is.

    authority = Authority.new("test CA")
    pair = authority.issue(SERVICE_NAMES)
    secret_dir = MountedSecret(tmp_path / "tls"); secret_dir.write(pair)
    secret_dir.cert_file, secret_dir.key_file          # what the server is given
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The names the operator's Certificate covers for Service `ranker` in namespace `search`.
SERVICE_NAMES = (
    "ranker",
    "ranker.search",
    "ranker.search.svc",
    "ranker.search.svc.cluster.local",
)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes

    @property
    def fingerprint(self) -> str:
        der = x509.load_pem_x509_certificate(self.cert_pem).public_bytes(serialization.Encoding.DER)
        return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class Authority:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def new(cls, common_name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.pem)
        return path

    def issue(self, dns_names: tuple[str, ...] = SERVICE_NAMES) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(dns_names[0]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return KeyPair(certificate.public_bytes(serialization.Encoding.PEM), _pem_key(key))


class MountedSecret:
    """A folder laid out as the kubelet mounts a Secret, and updated as it updates one: the
    files are links into `..data`, itself a link swapped atomically to a new folder."""

    _versions = itertools.count(1)

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.cert_file = directory / "tls.crt"
        self.key_file = directory / "tls.key"

    def write(self, pair: KeyPair, *, key_pem: bytes | None = None) -> None:
        """Put `pair` in place at once (`key_pem` replaces its key: a broken rotation)."""
        version = self.directory / f"..{next(self._versions):04d}"
        version.mkdir()
        (version / "tls.crt").write_bytes(pair.cert_pem)
        (version / "tls.key").write_bytes(key_pem if key_pem is not None else pair.key_pem)
        staged = self.directory / "..data_tmp"
        os.symlink(version.name, staged)
        os.replace(staged, self.directory / "..data")
        for name in ("tls.crt", "tls.key"):
            link = self.directory / name
            if not link.is_symlink():
                os.symlink(f"..data/{name}", link)
