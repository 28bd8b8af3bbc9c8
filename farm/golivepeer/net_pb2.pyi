from chain import pm_pb2 as _pm_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Capabilities(_message.Message):
    __slots__ = ("bitstring", "mandatories", "capacities", "version", "constraints")
    class CapacitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    class Constraints(_message.Message):
        __slots__ = ("minVersion", "PerCapability")
        class PerCapabilityEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: int
            value: Capabilities.CapabilityConstraints
            def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[Capabilities.CapabilityConstraints, _Mapping]] = ...) -> None: ...
        MINVERSION_FIELD_NUMBER: _ClassVar[int]
        PERCAPABILITY_FIELD_NUMBER: _ClassVar[int]
        minVersion: str
        PerCapability: _containers.MessageMap[int, Capabilities.CapabilityConstraints]
        def __init__(self, minVersion: _Optional[str] = ..., PerCapability: _Optional[_Mapping[int, Capabilities.CapabilityConstraints]] = ...) -> None: ...
    class CapabilityConstraints(_message.Message):
        __slots__ = ("models",)
        class ModelsEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: Capabilities.ModelConstraint
            def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Capabilities.ModelConstraint, _Mapping]] = ...) -> None: ...
        MODELS_FIELD_NUMBER: _ClassVar[int]
        models: _containers.MessageMap[str, Capabilities.ModelConstraint]
        def __init__(self, models: _Optional[_Mapping[str, Capabilities.ModelConstraint]] = ...) -> None: ...
    class ModelConstraint(_message.Message):
        __slots__ = ("warm", "capacity", "runnerVersion", "capacityInUse")
        WARM_FIELD_NUMBER: _ClassVar[int]
        CAPACITY_FIELD_NUMBER: _ClassVar[int]
        RUNNERVERSION_FIELD_NUMBER: _ClassVar[int]
        CAPACITYINUSE_FIELD_NUMBER: _ClassVar[int]
        warm: bool
        capacity: int
        runnerVersion: str
        capacityInUse: int
        def __init__(self, warm: _Optional[bool] = ..., capacity: _Optional[int] = ..., runnerVersion: _Optional[str] = ..., capacityInUse: _Optional[int] = ...) -> None: ...
    BITSTRING_FIELD_NUMBER: _ClassVar[int]
    MANDATORIES_FIELD_NUMBER: _ClassVar[int]
    CAPACITIES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    bitstring: _containers.RepeatedScalarFieldContainer[int]
    mandatories: _containers.RepeatedScalarFieldContainer[int]
    capacities: _containers.ScalarMap[int, int]
    version: str
    constraints: Capabilities.Constraints
    def __init__(self, bitstring: _Optional[_Iterable[int]] = ..., mandatories: _Optional[_Iterable[int]] = ..., capacities: _Optional[_Mapping[int, int]] = ..., version: _Optional[str] = ..., constraints: _Optional[_Union[Capabilities.Constraints, _Mapping]] = ...) -> None: ...

class PingPong(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: bytes
    def __init__(self, value: _Optional[bytes] = ...) -> None: ...

class OrchestratorRequest(_message.Message):
    __slots__ = ("address", "sig", "capabilities", "ignoreCapacityCheck")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SIG_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    IGNORECAPACITYCHECK_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    sig: bytes
    capabilities: Capabilities
    ignoreCapacityCheck: bool
    def __init__(self, address: _Optional[bytes] = ..., sig: _Optional[bytes] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., ignoreCapacityCheck: _Optional[bool] = ...) -> None: ...

class OSInfo(_message.Message):
    __slots__ = ("storageType", "s3info")
    class StorageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        DIRECT: _ClassVar[OSInfo.StorageType]
        S3: _ClassVar[OSInfo.StorageType]
        GOOGLE: _ClassVar[OSInfo.StorageType]
    DIRECT: OSInfo.StorageType
    S3: OSInfo.StorageType
    GOOGLE: OSInfo.StorageType
    STORAGETYPE_FIELD_NUMBER: _ClassVar[int]
    S3INFO_FIELD_NUMBER: _ClassVar[int]
    storageType: OSInfo.StorageType
    s3info: S3OSInfo
    def __init__(self, storageType: _Optional[_Union[OSInfo.StorageType, str]] = ..., s3info: _Optional[_Union[S3OSInfo, _Mapping]] = ...) -> None: ...

class S3OSInfo(_message.Message):
    __slots__ = ("host", "key", "policy", "signature", "credential", "xAmzDate")
    HOST_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    XAMZDATE_FIELD_NUMBER: _ClassVar[int]
    host: str
    key: str
    policy: str
    signature: str
    credential: str
    xAmzDate: str
    def __init__(self, host: _Optional[str] = ..., key: _Optional[str] = ..., policy: _Optional[str] = ..., signature: _Optional[str] = ..., credential: _Optional[str] = ..., xAmzDate: _Optional[str] = ...) -> None: ...

class GPUComputeInfo(_message.Message):
    __slots__ = ("id", "name", "major", "minor", "memory_free", "memory_total")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAJOR_FIELD_NUMBER: _ClassVar[int]
    MINOR_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    major: int
    minor: int
    memory_free: int
    memory_total: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., major: _Optional[int] = ..., minor: _Optional[int] = ..., memory_free: _Optional[int] = ..., memory_total: _Optional[int] = ...) -> None: ...

class HardwareInformation(_message.Message):
    __slots__ = ("pipeline", "model_id", "gpu_info")
    class GpuInfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: GPUComputeInfo
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[GPUComputeInfo, _Mapping]] = ...) -> None: ...
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_INFO_FIELD_NUMBER: _ClassVar[int]
    pipeline: str
    model_id: str
    gpu_info: _containers.MessageMap[str, GPUComputeInfo]
    def __init__(self, pipeline: _Optional[str] = ..., model_id: _Optional[str] = ..., gpu_info: _Optional[_Mapping[str, GPUComputeInfo]] = ...) -> None: ...

class OrchestratorInfo(_message.Message):
    __slots__ = ("transcoder", "ticket_params", "price_info", "address", "capabilities", "auth_token", "hardware", "storage", "capabilities_prices", "nodes")
    TRANSCODER_FIELD_NUMBER: _ClassVar[int]
    TICKET_PARAMS_FIELD_NUMBER: _ClassVar[int]
    PRICE_INFO_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    AUTH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_PRICES_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    transcoder: str
    ticket_params: _pm_pb2.TicketParams
    price_info: _pm_pb2.PriceInfo
    address: bytes
    capabilities: Capabilities
    auth_token: AuthToken
    hardware: _containers.RepeatedCompositeFieldContainer[HardwareInformation]
    storage: _containers.RepeatedCompositeFieldContainer[OSInfo]
    capabilities_prices: _containers.RepeatedCompositeFieldContainer[_pm_pb2.PriceInfo]
    nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, transcoder: _Optional[str] = ..., ticket_params: _Optional[_Union[_pm_pb2.TicketParams, _Mapping]] = ..., price_info: _Optional[_Union[_pm_pb2.PriceInfo, _Mapping]] = ..., address: _Optional[bytes] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., auth_token: _Optional[_Union[AuthToken, _Mapping]] = ..., hardware: _Optional[_Iterable[_Union[HardwareInformation, _Mapping]]] = ..., storage: _Optional[_Iterable[_Union[OSInfo, _Mapping]]] = ..., capabilities_prices: _Optional[_Iterable[_Union[_pm_pb2.PriceInfo, _Mapping]]] = ..., nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class EndTranscodingSessionRequest(_message.Message):
    __slots__ = ("auth_token",)
    AUTH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    auth_token: AuthToken
    def __init__(self, auth_token: _Optional[_Union[AuthToken, _Mapping]] = ...) -> None: ...

class EndTranscodingSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SegParameters(_message.Message):
    __slots__ = ("to",)
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    to: int
    def __init__(self, to: _Optional[int] = ..., **kwargs) -> None: ...

class TranscodedSegmentData(_message.Message):
    __slots__ = ("url", "pixels", "perceptual_hash_url")
    URL_FIELD_NUMBER: _ClassVar[int]
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    PERCEPTUAL_HASH_URL_FIELD_NUMBER: _ClassVar[int]
    url: str
    pixels: int
    perceptual_hash_url: str
    def __init__(self, url: _Optional[str] = ..., pixels: _Optional[int] = ..., perceptual_hash_url: _Optional[str] = ...) -> None: ...

class TranscodeData(_message.Message):
    __slots__ = ("segments", "sig")
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    SIG_FIELD_NUMBER: _ClassVar[int]
    segments: _containers.RepeatedCompositeFieldContainer[TranscodedSegmentData]
    sig: bytes
    def __init__(self, segments: _Optional[_Iterable[_Union[TranscodedSegmentData, _Mapping]]] = ..., sig: _Optional[bytes] = ...) -> None: ...

class TranscodeResult(_message.Message):
    __slots__ = ("seq", "error", "data", "info")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    seq: int
    error: str
    data: TranscodeData
    info: OrchestratorInfo
    def __init__(self, seq: _Optional[int] = ..., error: _Optional[str] = ..., data: _Optional[_Union[TranscodeData, _Mapping]] = ..., info: _Optional[_Union[OrchestratorInfo, _Mapping]] = ...) -> None: ...

class PaymentResult(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: OrchestratorInfo
    def __init__(self, info: _Optional[_Union[OrchestratorInfo, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("manifestId", "seq", "hash", "profiles", "sig", "duration", "capabilities", "auth_token", "calc_perceptual_hash", "storage", "fullProfiles", "fullProfiles2", "fullProfiles3", "segment_parameters", "ForceSessionReinit")
    MANIFESTID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    SIG_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    AUTH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CALC_PERCEPTUAL_HASH_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    FULLPROFILES_FIELD_NUMBER: _ClassVar[int]
    FULLPROFILES2_FIELD_NUMBER: _ClassVar[int]
    FULLPROFILES3_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    FORCESESSIONREINIT_FIELD_NUMBER: _ClassVar[int]
    manifestId: bytes
    seq: int
    hash: bytes
    profiles: bytes
    sig: bytes
    duration: int
    capabilities: Capabilities
    auth_token: AuthToken
    calc_perceptual_hash: bool
    storage: _containers.RepeatedCompositeFieldContainer[OSInfo]
    fullProfiles: _containers.RepeatedCompositeFieldContainer[VideoProfile]
    fullProfiles2: _containers.RepeatedCompositeFieldContainer[VideoProfile]
    fullProfiles3: _containers.RepeatedCompositeFieldContainer[VideoProfile]
    segment_parameters: SegParameters
    ForceSessionReinit: bool
    def __init__(self, manifestId: _Optional[bytes] = ..., seq: _Optional[int] = ..., hash: _Optional[bytes] = ..., profiles: _Optional[bytes] = ..., sig: _Optional[bytes] = ..., duration: _Optional[int] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., auth_token: _Optional[_Union[AuthToken, _Mapping]] = ..., calc_perceptual_hash: _Optional[bool] = ..., storage: _Optional[_Iterable[_Union[OSInfo, _Mapping]]] = ..., fullProfiles: _Optional[_Iterable[_Union[VideoProfile, _Mapping]]] = ..., fullProfiles2: _Optional[_Iterable[_Union[VideoProfile, _Mapping]]] = ..., fullProfiles3: _Optional[_Iterable[_Union[VideoProfile, _Mapping]]] = ..., segment_parameters: _Optional[_Union[SegParameters, _Mapping]] = ..., ForceSessionReinit: _Optional[bool] = ...) -> None: ...

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
