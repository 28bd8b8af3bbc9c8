"""TLS for the node API: its certificate, the fingerprint transcoders pin, and their contexts.

The node serves its own self-signed certificate (as go-livepeer does), made once with
``cryptography`` and kept, or a given one. Where go-livepeer's transcoder skips verification,
ours verifies: against a CA file, or against a pinned SHA-256 fingerprint. A pin is checked
before anything is sent, and the pinned certificate then becomes the only trust anchor of the
connection, so the server must also prove it holds that certificate's key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
import ssl
import tempfile
import threading
import urllib.parse
from pathlib import Path

import httpx

from farm.errors import ConfigError, NodeUnreachable

__all__ = [
    "NodeHttp",
    "ensure_certificate",
    "fingerprint",
    "fingerprint_of_file",
    "node_verify",
    "normalise_fingerprint",
    "pinned_context",
    "server_paths",
]

_VALID_DAYS = 3650


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, as colon-separated upper-case hex (``openssl x509``)."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def normalise_fingerprint(value: str) -> str:
    """A fingerprint as given (any case, colons or not) in :func:`fingerprint`'s form."""
    raw = value.replace(":", "").replace(" ", "").strip().upper()
    if len(raw) != 64 or any(c not in "0123456789ABCDEF" for c in raw):
        raise ConfigError(f"not a SHA-256 fingerprint (64 hex digits): {value!r}")
    return ":".join(raw[i : i + 2] for i in range(0, 64, 2))


def fingerprint_of_file(cert: Path) -> str:
    """The fingerprint of the first certificate in a PEM file."""
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    return fingerprint(der)


def _names(hosts: tuple[str, ...]) -> list[object]:
    from cryptography import x509

    names: list[object] = []
    for host in dict.fromkeys(("localhost", "127.0.0.1", "::1", socket.gethostname(), *hosts)):
        if not host or host in ("0.0.0.0", "::"):
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _generate(cert: Path, key: Path, hosts: tuple[str, ...]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "farm node")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_names(hosts)), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(private, hashes.SHA256())
    )
    pem_key = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_atomically(key, pem_key)
    _write_atomically(cert, certificate.public_bytes(serialization.Encoding.PEM))
    cert.chmod(0o644)  # public: operators hand it to transcoders as --orch-ca


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers see the whole file or none; mkstemp makes it 0600 (right for the key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def server_paths(
    tls_dir: Path, cert: Path | None = None, key: Path | None = None
) -> tuple[Path, Path]:
    """Where the node's certificate and key are: the given pair, or the kept self-signed one."""
    if cert is not None and key is not None:
        return cert, key
    return tls_dir / "node.crt", tls_dir / "node.key"


def ensure_certificate(
    tls_dir: Path,
    hosts: tuple[str, ...] = (),
    cert: Path | None = None,
    key: Path | None = None,
) -> tuple[Path, Path]:
    """The certificate and key to serve; a self-signed pair is made on first use and kept."""
    cert_path, key_path = server_paths(tls_dir, cert, key)
    if cert is not None:
        for path in (cert_path, key_path):
            if not path.is_file():
                raise ConfigError(f"TLS file {path} does not exist")
        return cert_path, key_path
    if not (cert_path.is_file() and key_path.is_file()):
        _generate(cert_path, key_path, hosts)
    return cert_path, key_path


def _peer_certificate(host: str, port: int, timeout: float) -> bytes:
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Only to read the certificate; nothing is sent before its fingerprint matched.
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            probe.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as e:
        raise NodeUnreachable(f"cannot open TLS to {host}:{port}: {e}") from e
    if not der:
        raise NodeUnreachable(f"{host}:{port} sent no certificate")
    return der


def pinned_context(host: str, port: int, pin: str, timeout: float = 10.0) -> ssl.SSLContext:
    """A client context that trusts only the node certificate whose fingerprint is ``pin``.

    ConfigError when the node shows another certificate (a wrong pin, or someone else).
    """
    want = normalise_fingerprint(pin)
    der = _peer_certificate(host, port, timeout)
    got = fingerprint(der)
    if got != want:
        raise ConfigError(
            f"the node at {host}:{port} shows certificate {got}, not the pinned {want}; "
            "refusing to send the secret"
        )
    context = ssl.create_default_context(cadata=ssl.DER_cert_to_PEM_cert(der))
    context.check_hostname = False  # the pin names the certificate itself
    return context


def node_verify(
    url: str, ca: str | None = None, pin: str | None = None, timeout: float = 10.0
) -> ssl.SSLContext | bool:
    """How a client verifies the node API at ``url`` (httpx's ``verify``): the certificate
    whose fingerprint is ``pin``, or a CA file (the node's own certificate will do), or the
    system's CAs. Plain HTTP needs none of them.

    NodeUnreachable when a pinned node cannot be reached to read its certificate, ConfigError
    when it shows another one or the CA file cannot be read.
    """
    if not url.startswith("https://"):
        return True
    if pin:
        parsed = urllib.parse.urlsplit(url)
        host, port = parsed.hostname or "", parsed.port or 443
        return pinned_context(host, port, pin, timeout)
    if ca:
        try:
            return ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"cannot read the node's CA file {ca}: {e}") from e
    return True


class NodeHttp:
    """An httpx client for one node API, verified by :func:`node_verify`; made when first
    needed and again after :meth:`reset` (a failure), so a pin is checked on each new one."""

    def __init__(
        self, url: str, ca: str | None = None, pin: str | None = None, timeout_s: float = 5.0
    ) -> None:
        self.url, self.ca, self.pin, self.timeout_s = url, ca, pin, timeout_s
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def client(self) -> httpx.Client:
        """The client; NodeUnreachable or ConfigError when the node cannot be trusted."""
        with self._lock:
            if self._client is None:
                verify = node_verify(self.url, self.ca, self.pin, self.timeout_s)
                self._client = httpx.Client(timeout=self.timeout_s, verify=verify)
            return self._client

    def reset(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    close = reset
