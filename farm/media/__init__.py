"""The media engine: Livepeer profiles and a decode-once rendition ladder on PyAV."""

from farm.media.engine import EngineOptions, transcode
from farm.media.profiles import BUILTIN_PROFILES, VideoProfile, parse_profiles, profiles_from_json
from farm.media.result import Rendition, TranscodeResult

__all__ = [
    "BUILTIN_PROFILES",
    "EngineOptions",
    "Rendition",
    "TranscodeResult",
    "VideoProfile",
    "parse_profiles",
    "profiles_from_json",
    "transcode",
]
