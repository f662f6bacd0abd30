"""The CSR protocol between the identity agent and the CA: Istio's ``IstioCertificateService``.

Wire-compatible with ``istio.v1.auth.IstioCertificateService/CreateCertificate`` (request:
``csr`` = 1, ``validity_duration`` seconds = 3, ``metadata`` Struct = 4; response: repeated
``cert_chain`` = 1, leaf first, root last). No Python package ships these types, so their
descriptors are built here in code and registered in the default protobuf pool once; both
the sidecar's client and the control plane's server import them from this module. The
caller authenticates with ``authorization: Bearer <token>`` metadata, as istio-agent does.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, struct_pb2
from google.protobuf.message_factory import GetMessageClass

CERTIFICATE_SERVICE_NAME = "istio.v1.auth.IstioCertificateService"
CREATE_CERTIFICATE_METHOD = "CreateCertificate"
CREATE_CERTIFICATE_PATH = f"/{CERTIFICATE_SERVICE_NAME}/{CREATE_CERTIFICATE_METHOD}"
_FILE_NAME = "wasmesh/security/istioca.proto"


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(
        name=_FILE_NAME, package="istio.v1.auth", syntax="proto3", dependency=[struct_pb2.DESCRIPTOR.name]
    )
    field = descriptor_pb2.FieldDescriptorProto
    request = fd.message_type.add(name="IstioCertificateRequest")
    request.field.add(name="csr", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL, json_name="csr")
    request.field.add(
        name="validity_duration", number=3, type=field.TYPE_INT64, label=field.LABEL_OPTIONAL,
        json_name="validityDuration",
    )
    request.field.add(
        name="metadata", number=4, type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
        type_name=".google.protobuf.Struct", json_name="metadata",
    )
    response = fd.message_type.add(name="IstioCertificateResponse")
    response.field.add(
        name="cert_chain", number=1, type=field.TYPE_STRING, label=field.LABEL_REPEATED, json_name="certChain"
    )
    service = fd.service.add(name="IstioCertificateService")
    service.method.add(
        name=CREATE_CERTIFICATE_METHOD,
        input_type=".istio.v1.auth.IstioCertificateRequest",
        output_type=".istio.v1.auth.IstioCertificateResponse",
    )
    return fd


def _register() -> tuple[Any, Any]:
    pool = descriptor_pool.Default()
    try:
        file_desc = pool.FindFileByName(_FILE_NAME)
    except KeyError:
        file_desc = pool.AddSerializedFile(_file_descriptor().SerializeToString())
    return (
        GetMessageClass(file_desc.message_types_by_name["IstioCertificateRequest"]),
        GetMessageClass(file_desc.message_types_by_name["IstioCertificateResponse"]),
    )


#: Message classes (protobuf ``Message`` subclasses built from the descriptors above).
IstioCertificateRequest, IstioCertificateResponse = _register()
