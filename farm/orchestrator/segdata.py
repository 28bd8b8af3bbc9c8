"""``SegData``: what a gateway says about a segment, in the ``Livepeer-Segment`` header.

The gateway signs ``flatten`` (manifest id ‖ seq as 32 bytes ‖ keccak of the segment ‖ the hex
of keccak(name)[0:4] for each profile) the way it signs everything else, eth_sign over its
keccak; duration, capabilities, token and storage are not signed.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Final

from google.protobuf.message import DecodeError

from chain.signing import keccak256, recover
from farm.errors import ProfileInvalid
from farm.golivepeer import net_pb2
from farm.golivepeer.wire import capability_bits, from_net_profiles
from farm.media.profiles import VideoProfile

__all__ = [
    "MAX_DURATION_MS",
    "SegmentInvalid",
    "SignedSegment",
    "decode_segment",
    "flatten",
    "signature_valid",
]

#: go-livepeer refuses segments said to be longer than 5 minutes.
MAX_DURATION_MS: Final = 300_000
MAX_HEADER_BYTES: Final = 256 * 1024
#: Profile names become URL path segments and storage keys.
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
#: Manifest ids become storage keys too; go-livepeer's are URL-safe strings.
_MANIFEST = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


class SegmentInvalid(ValueError):
    """Raised when a ``Livepeer-Segment`` header is not a segment this node can take; the
    message is go-livepeer's where it has one."""


@dataclass(frozen=True, slots=True)
class SignedSegment:
    """A decoded ``SegData``."""

    data: net_pb2.SegData
    manifest_id: str
    seq: int
    duration_s: float
    profiles: list[VideoProfile]
    format: str
    capabilities: set[int]


def flatten(manifest_id: bytes, seq: int, data_hash: bytes, names: list[str]) -> bytes:
    """The bytes a gateway signs for a segment (go-livepeer's SegData Flatten)."""
    profiles = "".join(keccak256(n.encode())[:4].hex() for n in names)
    return manifest_id + seq.to_bytes(32, "big", signed=True) + data_hash + profiles.encode()


def signature_valid(seg: net_pb2.SegData, names: list[str], sender: bytes) -> bool:
    """Whether ``seg.sig`` is ``sender``'s signature over the segment's flatten."""
    message = flatten(seg.manifestId, seg.seq, seg.hash, names)
    try:
        return recover(keccak256(message), seg.sig) == sender
    except Exception:  # a malformed signature is a wrong one
        return False


def decode_segment(header: str) -> SignedSegment:
    """The segment a ``Livepeer-Segment`` header describes; SegmentInvalid otherwise."""
    if len(header) > MAX_HEADER_BYTES:
        raise SegmentInvalid("ErrorSegEncoding")
    try:
        raw = base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SegmentInvalid("ErrorSegEncoding") from None
    seg = net_pb2.SegData()
    try:
        seg.ParseFromString(raw)
    except DecodeError as e:
        raise SegmentInvalid(f"proto: {e}") from None
    try:
        manifest_id = seg.manifestId.decode()
    except UnicodeDecodeError:
        raise SegmentInvalid("invalid manifest id") from None
    if not _MANIFEST.fullmatch(manifest_id):
        raise SegmentInvalid("invalid manifest id")
    if seg.seq < 0:
        raise SegmentInvalid("invalid sequence number")
    if len(seg.hash) != 32:
        raise SegmentInvalid("invalid segment hash")
    if seg.duration < 0 or seg.duration > MAX_DURATION_MS:
        raise SegmentInvalid("invalid duration")
    try:
        profiles, fmt = from_net_profiles(seg)
    except ProfileInvalid as e:
        raise SegmentInvalid(str(e)) from None
    except (KeyError, ValueError):
        raise SegmentInvalid("unrecognized profile output format") from None
    for p in profiles:
        if not _NAME.fullmatch(p.name):
            raise SegmentInvalid("invalid profile name")
    if len({p.name for p in profiles}) != len(profiles):
        raise SegmentInvalid("duplicate profile names")
    return SignedSegment(
        data=seg,
        manifest_id=manifest_id,
        seq=seg.seq,
        duration_s=(seg.duration or 2000) / 1000,
        profiles=profiles,
        format=fmt,
        capabilities=capability_bits(seg.capabilities.bitstring),
    )
