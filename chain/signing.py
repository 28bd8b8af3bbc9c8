"""keccak256, eth_sign signatures and secp256k1 signer recovery.

Tickets are signed the way ``eth_sign`` signs a 32-byte message: the signature covers
``keccak256("\\x19Ethereum Signed Message:\\n32" ‖ hash)``, v is 27 or 28, and s is in the low
half of the curve order (OpenZeppelin's ECDSA and go-livepeer's VerifySig refuse the rest).

Recovery uses coincurve (libsecp256k1) when it is importable: about 90 times faster on one
core than the pure-Python eth_keys backend that is the fallback.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Final, Protocol

from eth_hash.auto import keccak as _eth_hash_keccak
from eth_keys.backends.native.main import NativeECCBackend
from eth_keys.datatypes import PrivateKey, Signature

from chain.errors import InvalidSignature


class KeccakHasher(Protocol):
    def update(self, data: bytes, /) -> object: ...
    def digest(self) -> bytes: ...


def _load_keccak() -> tuple[Callable[[bytes], bytes], Callable[[], KeccakHasher]]:
    """keccak256 and an incremental keccak256, from pysha3's C extension when it is
    importable: a call costs about a third of eth_hash's pycryptodome backend, whose Python
    wrapper and cffi buffers are most of a hash of a few hundred bytes; a received ticket
    takes five."""
    try:
        from sha3 import keccak_256
    except ImportError:  # pragma: no cover - where safe-pysha3 is not installed
        from Crypto.Hash import keccak as crypto_keccak

        return _eth_hash_keccak, lambda: crypto_keccak.new(digest_bits=256)

    def keccak(data: bytes) -> bytes:
        return bytes(keccak_256(data).digest())

    return keccak, keccak_256


_keccak, _keccak_hasher = _load_keccak()


def keccak_hasher() -> KeccakHasher:
    """An incremental keccak256 (``update`` chunk by chunk, then ``digest``): a body can be
    hashed while it arrives rather than after."""
    return _keccak_hasher()


def _load_coincurve() -> ModuleType | None:
    try:
        import coincurve
    except ImportError:  # pragma: no cover - where coincurve is not installed
        return None
    return coincurve


coincurve = _load_coincurve()

__all__ = [
    "HAS_COINCURVE",
    "SECP256K1_N",
    "Signer",
    "check_signature",
    "eth_signed_hash",
    "keccak256",
    "keccak_hasher",
    "recover",
    "recover_coincurve",
    "recover_eth_keys",
]

SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N: Final = SECP256K1_N // 2
_ETH_SIGN_PREFIX: Final = b"\x19Ethereum Signed Message:\n32"
HAS_COINCURVE: Final = coincurve is not None

# The pure-Python backend, named explicitly: eth_keys' default would pick coincurve too.
_NATIVE = NativeECCBackend()


def keccak256(data: bytes) -> bytes:
    """Ethereum's keccak256 (not NIST SHA3-256) of ``data``."""
    return _keccak(data)


def eth_signed_hash(message_hash: bytes) -> bytes:
    """The digest eth_sign really signs for a 32-byte message (go-livepeer's TextHash)."""
    if len(message_hash) != 32:
        raise ValueError(f"message hash must be 32 bytes, got {len(message_hash)}")
    return _keccak(_ETH_SIGN_PREFIX + message_hash)


def check_signature(sig: bytes) -> tuple[int, int, int]:
    """Split a 65-byte r ‖ s ‖ v signature into (r, s, recovery id 0/1), refusing what
    TicketBroker refuses: another length, v not 27/28, s above n/2, r or s out of range."""
    if len(sig) != 65:
        raise InvalidSignature(f"signature must be 65 bytes, got {len(sig)}")
    v = sig[64]
    if v not in (27, 28):
        raise InvalidSignature(f"signature v must be 27 or 28, got {v}")
    r = int.from_bytes(sig[0:32], "big")
    s = int.from_bytes(sig[32:64], "big")
    if not 0 < r < SECP256K1_N or not 0 < s < SECP256K1_N:
        raise InvalidSignature("signature r or s out of range")
    if s > _HALF_N:
        raise InvalidSignature("signature s is in the upper half of the curve order")
    return r, s, v - 27


def recover_coincurve(message_hash: bytes, sig: bytes) -> bytes:
    """The 20-byte address that signed ``message_hash`` the eth_sign way, via libsecp256k1."""
    if coincurve is None:  # pragma: no cover - only without coincurve
        raise RuntimeError("coincurve is not installed")
    _, _, recid = check_signature(sig)
    digest = eth_signed_hash(message_hash)
    try:
        public = coincurve.PublicKey.from_signature_and_message(
            sig[:64] + bytes((recid,)), digest, hasher=None
        )
    except ValueError as e:
        raise InvalidSignature(f"signature does not recover a public key: {e}") from e
    return _keccak(public.format(compressed=False)[1:])[12:]


def recover_eth_keys(message_hash: bytes, sig: bytes) -> bytes:
    """The same recovery as :func:`recover_coincurve` with eth_keys' pure-Python backend."""
    r, s, recid = check_signature(sig)
    digest = eth_signed_hash(message_hash)
    try:
        public = Signature(vrs=(recid, r, s), backend=_NATIVE).recover_public_key_from_msg_hash(
            digest
        )
    except Exception as e:  # eth_keys raises BadSignature or ValidationError
        raise InvalidSignature(f"signature does not recover a public key: {e}") from e
    return public.to_canonical_address()


#: The fastest recovery this interpreter has.
recover: Callable[[bytes, bytes], bytes] = recover_coincurve if HAS_COINCURVE else recover_eth_keys


class Signer:
    """A secp256k1 private key that signs ticket hashes as eth_sign does (v = 27/28, low s)."""

    def __init__(self, private_key: bytes, *, fast: bool = HAS_COINCURVE) -> None:
        if len(private_key) != 32 or not 0 < int.from_bytes(private_key, "big") < SECP256K1_N:
            raise ValueError("a private key is 32 bytes in 1..n-1")
        self._native_key = PrivateKey(private_key, backend=_NATIVE)
        # fast=False signs with eth_keys' pure-Python backend, as without coincurve.
        self._cc_key = coincurve.PrivateKey(private_key) if fast and coincurve is not None else None
        #: The signer's 20-byte address.
        self.address: bytes = (
            _keccak(self._cc_key.public_key.format(compressed=False)[1:])[12:]
            if self._cc_key is not None
            else self._native_key.public_key.to_canonical_address()
        )

    def __repr__(self) -> str:  # never show the key
        return f"Signer(0x{self.address.hex()})"

    def sign_hash(self, message_hash: bytes) -> bytes:
        """The 65-byte r ‖ s ‖ v eth_sign signature over a 32-byte hash."""
        digest = eth_signed_hash(message_hash)
        if self._cc_key is not None:
            sig: bytes = self._cc_key.sign_recoverable(digest, hasher=None)
            # libsecp256k1 always produces a low s.
            return sig[:64] + bytes((sig[64] + 27,))
        signature = self._native_key.sign_msg_hash(digest)
        v: int = signature.v
        r: int = signature.r
        s: int = signature.s
        if s > _HALF_N:  # pragma: no cover - RFC 6979 nonces may land either side
            s, v = SECP256K1_N - s, v ^ 1
        return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((v + 27,))
