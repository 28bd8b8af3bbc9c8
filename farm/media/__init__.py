"""The media engine: Livepeer profiles and a decode-once rendition ladder on PyAV."""

from farm.media.engine import EngineOptions, Rendition, TranscodeResult, transcode
from farm.media.profiles import BUILTIN_PROFILES, VideoProfile, parse_profiles, profiles_from_json

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
