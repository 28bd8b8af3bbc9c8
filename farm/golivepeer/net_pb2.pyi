from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Capabilities(_message.Message):
    __slots__ = ("bitstring", "mandatories", "capacities")
    class CapacitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    BITSTRING_FIELD_NUMBER: _ClassVar[int]
    MANDATORIES_FIELD_NUMBER: _ClassVar[int]
    CAPACITIES_FIELD_NUMBER: _ClassVar[int]
    bitstring: _containers.RepeatedScalarFieldContainer[int]
    mandatories: _containers.RepeatedScalarFieldContainer[int]
    capacities: _containers.ScalarMap[int, int]
    def __init__(self, bitstring: _Optional[_Iterable[int]] = ..., mandatories: _Optional[_Iterable[int]] = ..., capacities: _Optional[_Mapping[int, int]] = ...) -> None: ...

class AuthToken(_message.Message):
    __slots__ = ("token", "session_id", "expiration")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRATION_FIELD_NUMBER: _ClassVar[int]
    token: bytes
    session_id: str
    expiration: int
    def __init__(self, token: _Optional[bytes] = ..., session_id: _Optional[str] = ..., expiration: _Optional[int] = ...) -> None: ...

class VideoProfile(_message.Message):
    __slots__ = ("name", "width", "height", "bitrate", "fps", "format", "fpsDen", "profile", "gop", "encoder")
    class Format(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MPEGTS: _ClassVar[VideoProfile.Format]
        MP4: _ClassVar[VideoProfile.Format]
    MPEGTS: VideoProfile.Format
    MP4: VideoProfile.Format
    class Profile(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ENCODER_DEFAULT: _ClassVar[VideoProfile.Profile]
        H264_BASELINE: _ClassVar[VideoProfile.Profile]
        H264_MAIN: _ClassVar[VideoProfile.Profile]
        H264_HIGH: _ClassVar[VideoProfile.Profile]
        H264_CONSTRAINED_HIGH: _ClassVar[VideoProfile.Profile]
    ENCODER_DEFAULT: VideoProfile.Profile
    H264_BASELINE: VideoProfile.Profile
    H264_MAIN: VideoProfile.Profile
    H264_HIGH: VideoProfile.Profile
    H264_CONSTRAINED_HIGH: VideoProfile.Profile
    class VideoCodec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        H264: _ClassVar[VideoProfile.VideoCodec]
        H265: _ClassVar[VideoProfile.VideoCodec]
        VP8: _ClassVar[VideoProfile.VideoCodec]
        VP9: _ClassVar[VideoProfile.VideoCodec]
        AV1: _ClassVar[VideoProfile.VideoCodec]
    H264: VideoProfile.VideoCodec
    H265: VideoProfile.VideoCodec
    VP8: VideoProfile.VideoCodec
    VP9: VideoProfile.VideoCodec
    AV1: VideoProfile.VideoCodec
    NAME_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    BITRATE_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    FPSDEN_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    GOP_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    name: str
    width: int
    height: int
    bitrate: int
    fps: int
    format: VideoProfile.Format
    fpsDen: int
    profile: VideoProfile.Profile
    gop: int
    encoder: VideoProfile.VideoCodec
    def __init__(self, name: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., bitrate: _Optional[int] = ..., fps: _Optional[int] = ..., format: _Optional[_Union[VideoProfile.Format, str]] = ..., fpsDen: _Optional[int] = ..., profile: _Optional[_Union[VideoProfile.Profile, str]] = ..., gop: _Optional[int] = ..., encoder: _Optional[_Union[VideoProfile.VideoCodec, str]] = ...) -> None: ...

class SegData(_message.Message):
    __slots__ = ("manifestId", "seq", "hash", "profiles", "sig", "duration", "capabilities", "auth_token", "fullProfiles", "fullProfiles2", "fullProfiles3")
    MANIFESTID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    SIG_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    AUTH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FULLPROFILES_FIELD_NUMBER: _ClassVar[int]
    FULLPROFILES2_FIELD_NUMBER: _ClassVar[int]
    FULLPROFILES3_FIELD_NUMBER: _ClassVar[int]
    manifestId: bytes
    seq: int
    hash: bytes
    profiles: bytes
    sig: bytes
    duration: int
    capabilities: Capabilities
    auth_token: AuthToken
    fullProfiles: _containers.RepeatedCompositeFieldContainer[VideoProfile]
    fullProfiles2: _containers.RepeatedCompositeFieldContainer[VideoProfile]
    fullProfiles3: _containers.RepeatedCompositeFieldContainer[VideoProfile]
    def __init__(self, manifestId: _Optional[bytes] = ..., seq: _Optional[int] = ..., hash: _Optional[bytes] = ..., profiles: _Optional[bytes] = ..., sig: _Optional[bytes] = ..., duration: _Optional[int] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., auth_token: _Optional[_Union[AuthToken, _Mapping]] = ..., fullProfiles: _Optional[_Iterable[_Union[VideoProfile, _Mapping]]] = ..., fullProfiles2: _Optional[_Iterable[_Union[VideoProfile, _Mapping]]] = ..., fullProfiles3: _Optional[_Iterable[_Union[VideoProfile, _Mapping]]] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("secret", "capacity", "capabilities")
    SECRET_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    secret: str
    capacity: int
    capabilities: Capabilities
    def __init__(self, secret: _Optional[str] = ..., capacity: _Optional[int] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ...) -> None: ...

class NotifySegment(_message.Message):
    __slots__ = ("url", "segData", "taskId", "profiles", "orchId")
    URL_FIELD_NUMBER: _ClassVar[int]
    SEGDATA_FIELD_NUMBER: _ClassVar[int]
    TASKID_FIELD_NUMBER: _ClassVar[int]
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    ORCHID_FIELD_NUMBER: _ClassVar[int]
    url: str
    segData: SegData
    taskId: int
    profiles: bytes
    orchId: str
    def __init__(self, url: _Optional[str] = ..., segData: _Optional[_Union[SegData, _Mapping]] = ..., taskId: _Optional[int] = ..., profiles: _Optional[bytes] = ..., orchId: _Optional[str] = ...) -> None: ...
