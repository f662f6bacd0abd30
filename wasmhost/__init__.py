"""wasmhost: the sidecar — a proxy-wasm host on wasmtime, and the proxy around it.

Where it sits: plugins (any proxy-wasm SDK) run inside :class:`Runtime`-owned VMs; the
sidecar's HTTP filter adapter, ``wasmesh plugin run`` and ``sdk.testing`` all drive them
through the same sans-io API: feed stream events into :class:`HttpStream`, then carry out
the :mod:`commands <wasmhost._commands>` drained from :meth:`Runtime.take_commands`.
"""

from . import _native

_native.activate(__path__, __name__)  # compiled copies of the request path, when current

from ._abi import (
    AbiVersion,
    Action,
    BufferType,
    FailurePolicy,
    LogLevel,
    MapType,
    MetricType,
    Status,
    StreamType,
    decode_pairs,
    encode_pairs,
)
from ._commands import (
    CancelGrpc,
    ClearRouteCache,
    CloseStream,
    Command,
    DeleteRootContext,
    DispatchGrpcCall,
    DispatchHttpCall,
    NotifyQueueReady,
    ResumeStream,
    SendGrpcMessage,
    SendLocalReply,
    SetTickPeriod,
)
from ._context import HttpContext, RootContext, StreamInfo, TcpContext
from ._environment import Environment
from ._filter_status import BodyVerdict
from ._hostcalls_grpc import DispatchGrpcServiceCall
from ._http_stream import HttpStream
from ._plugin import Plugin, PluginSpec, PluginStartError
from ._runner import (
    CalloutAnswer,
    CalloutRecord,
    ClientResponse,
    HttpMessage,
    PluginRunError,
    RunRequest,
    RunResult,
    run_request,
)
from ._runner_env import PropertyError, apply_properties
from ._tcp_stream import TcpStream
from ._vm import CALLBACK_LATENCY_BOUNDS_US, CallStats, CompiledModule, ModuleError, Runtime, VmFailed, WasmVM
from .limits import DEFAULT_LIMITS, Limits

__all__ = [
    "CALLBACK_LATENCY_BOUNDS_US",
    "CallStats",
    "DEFAULT_LIMITS",
    "AbiVersion",
    "Action",
    "BodyVerdict",
    "BufferType",
    "CalloutAnswer",
    "CalloutRecord",
    "ClientResponse",
    "CancelGrpc",
    "ClearRouteCache",
    "CloseStream",
    "Command",
    "CompiledModule",
    "DeleteRootContext",
    "DispatchGrpcCall",
    "DispatchGrpcServiceCall",
    "DispatchHttpCall",
    "Environment",
    "FailurePolicy",
    "HttpContext",
    "HttpMessage",
    "HttpStream",
    "Limits",
    "LogLevel",
    "MapType",
    "MetricType",
    "ModuleError",
    "NotifyQueueReady",
    "Plugin",
    "PluginRunError",
    "PluginSpec",
    "PluginStartError",
    "PropertyError",
    "ResumeStream",
    "RootContext",
    "RunRequest",
    "RunResult",
    "Runtime",
    "SendGrpcMessage",
    "SendLocalReply",
    "SetTickPeriod",
    "Status",
    "StreamInfo",
    "StreamType",
    "TcpContext",
    "TcpStream",
    "VmFailed",
    "WasmVM",
    "apply_properties",
    "decode_pairs",
    "encode_pairs",
    "run_request",
]
