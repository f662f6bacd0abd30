"""Errors of the OCI Distribution API, shared by the server core and the client.

The wire format is the spec's ``{"errors": [{"code", "message", "detail"}]}``; each
code has one HTTP status, so an error raised anywhere in the core becomes exactly one
response at the edge, and the client turns such a body back into the same exception.
"""

from __future__ import annotations

import json
from typing import Any

# code -> (HTTP status, default message); the codes and statuses of the distribution spec.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "BLOB_UNKNOWN": (404, "blob unknown to registry"),
    "BLOB_UPLOAD_INVALID": (400, "blob upload invalid"),
    "BLOB_UPLOAD_UNKNOWN": (404, "blob upload unknown to registry"),
    "DIGEST_INVALID": (400, "provided digest did not match uploaded content"),
    "MANIFEST_BLOB_UNKNOWN": (400, "manifest references a manifest or blob unknown to registry"),
    "MANIFEST_INVALID": (400, "manifest invalid"),
    "MANIFEST_UNKNOWN": (404, "manifest unknown to registry"),
    "NAME_INVALID": (400, "invalid repository name"),
    "NAME_UNKNOWN": (404, "repository name not known to registry"),
    "SIZE_INVALID": (400, "provided length did not match content length"),
    "TAG_INVALID": (400, "manifest tag did not match URI"),
    "UNAUTHORIZED": (401, "authentication required"),
    "DENIED": (403, "requested access to the resource is denied"),
    "UNSUPPORTED": (405, "the operation is unsupported"),
    "RANGE_INVALID": (416, "invalid content range"),
    "TOOMANYREQUESTS": (429, "too many requests"),
    "PAYLOAD_TOO_LARGE": (413, "request entity too large"),
    "PAGINATION_NUMBER_INVALID": (400, "invalid number of results requested"),
    "NOT_FOUND": (404, "no route for this path"),
}


class RegistryError(Exception):
    """A distribution-spec error: a code from ``ERROR_CODES``, a message and optional detail."""

    def __init__(self, code: str, message: str | None = None, detail: Any = None, *, status: int | None = None,
                 headers: dict[str, str] | None = None):
        default_status, default_message = ERROR_CODES.get(code, (500, "internal error"))
        self.code = code
        self.headers = dict(headers or {})
        self.message = message or default_message
        self.detail = detail
        self.status = status or default_status
        super().__init__(f"{code}: {self.message}" + (f" ({detail})" if detail not in (None, "", {}) else ""))

    def to_json(self) -> bytes:
        entry: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            entry["detail"] = self.detail
        return json.dumps({"errors": [entry]}).encode()


def parse_error_body(status: int, body: bytes) -> RegistryError:
    """Turn an error response of any registry into a ``RegistryError`` (first error wins)."""
    try:
        doc = json.loads(body.decode("utf-8", "replace")) if body else None
        first = doc["errors"][0] if isinstance(doc, dict) and doc.get("errors") else None
    except (ValueError, KeyError, IndexError, TypeError):
        first = None
    if isinstance(first, dict) and isinstance(first.get("code"), str):
        return RegistryError(first["code"], str(first.get("message") or ""), first.get("detail"), status=status)
    code = {401: "UNAUTHORIZED", 403: "DENIED", 404: "NOT_FOUND", 429: "TOOMANYREQUESTS"}.get(status, "UNKNOWN")
    text = body[:200].decode("utf-8", "replace").strip() if body else ""
    return RegistryError(code, f"HTTP {status}" + (f": {text}" if text else ""), status=status)
