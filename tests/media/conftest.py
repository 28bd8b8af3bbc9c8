"""Shared clips for the media tests: made once per session, small, real."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.factories import clip


@pytest.fixture(scope="session")
def clip30() -> bytes:
    """1 s, 320x240, 30 fps, H.264 + AAC in MPEG-TS."""
    return clip()


@pytest.fixture(scope="session")
def clip30_2s() -> bytes:
    """2 s, 640x360, 30 fps, H.264 + AAC in MPEG-TS."""
    return clip(640, 360, 30, 2.0)


@pytest.fixture(scope="session")
def clip30_silent() -> bytes:
    """1 s, 320x240, 30 fps, video only."""
    return clip(audio=False)


@pytest.fixture(autouse=True)
def no_leaked_renditions() -> Iterator[None]:
    """Every transcode, failed or not, leaves no rendition thread running."""
    yield
    alive = [t.name for t in threading.enumerate() if t.name.startswith("rendition-")]
    assert not alive, f"rendition threads still running: {alive}"
