"""Livepeer's wire protocol as the farm speaks it: the pieces a gateway needs to talk to any
orchestrator (go-livepeer's or a farm's node API) without reaching into the farm's internals.

Part of the farm's public face (see :mod:`farm`). The farm keeps owning these (its node API
serves the same protocol); this module names the ones a caller may rely on:

- ``net_pb2``: go-livepeer's ``net`` protobuf messages (``OrchestratorInfo``, ``SegData``,
  ``Payment``, ``TranscodeResult`` …);
- gRPC message framing (:func:`frame`, :class:`MessageReader`, :class:`FrameError`) and the
  profiles a ``SegData`` carries (:func:`seg_data_profiles`);
- :func:`flatten`, the ``SegData`` bytes a gateway signs;
- :data:`AI_PIPELINES`, go-livepeer's AI pipeline table (capability, route, units), and
  :data:`DEFAULT_MODELS`, the model each pipeline runs when a request names none;
- the AI result format: :data:`BLOB_SCHEME` (media kept in the blob store) and the media
  types and extensions results carry (:data:`MEDIA_TYPES`, :data:`MEDIA_EXTENSIONS`);
- TLS to a node whose certificate is pinned (:func:`pinned_context`, :class:`NodeHttp`);
- fetching a URL on a caller's behalf without reaching the operator's network
  (:class:`SafeFetcher`), and the rule it applies to an address (:class:`FetchPolicy`, whose
  ``resolve`` raises :class:`AddressRefused`).
"""

from farm.ai.config import DEFAULT_MODELS
from farm.ai.results import BLOB_SCHEME, MEDIA_EXTENSIONS, MEDIA_TYPES
from farm.fetch import FetchPolicy, SafeFetcher
from farm.fetch import Refused as AddressRefused
from farm.golivepeer import net_pb2
from farm.golivepeer.wire import FrameError, MessageReader, frame, seg_data_profiles
from farm.orchestrator.aireq import AI_PIPELINES
from farm.orchestrator.segdata import flatten
from farm.remote.tls import NodeHttp, pinned_context

__all__ = [
    "AI_PIPELINES",
    "BLOB_SCHEME",
    "DEFAULT_MODELS",
    "MEDIA_EXTENSIONS",
    "MEDIA_TYPES",
    "AddressRefused",
    "FetchPolicy",
    "FrameError",
    "MessageReader",
    "NodeHttp",
    "SafeFetcher",
    "flatten",
    "frame",
    "net_pb2",
    "pinned_context",
    "seg_data_profiles",
]
