"""The OCI Distribution API v2 as a sans-io request handler.

``RegistryApp.handle(Request) -> Response`` does the whole protocol: routing, scopes,
storage calls, headers and the JSON error format. The asyncio edge (``_server``) only
parses HTTP, spools bodies to files and streams ``FileBody`` responses.
"""

from __future__ import annotations

import base64
import io
import json
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from . import _mediatypes as mt
from ._auth import Authenticator, Scope
from ._digest import Digest
from ._errors import RegistryError
from ._manifest import MAX_MANIFEST_SIZE, parse_manifest
from ._reference import NAME_PATTERN, validate_tag
from ._storage import Storage

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")


@dataclass
class Request:
    """One HTTP request as the edge received it; header names are lowercase."""

    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)
    body: BinaryIO = field(default_factory=io.BytesIO)
    body_length: int = 0
    scheme: str = "http"

    @property
    def path(self) -> str:
        return urllib.parse.unquote(urllib.parse.urlsplit(self.target).path)

    @property
    def query(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.target).query, keep_blank_values=True)

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def host(self) -> str:
        return self.headers.get("host", "localhost")


@dataclass(frozen=True)
class FileBody:
    """A byte range of a file, streamed by the edge (sendfile where it can)."""

    path: Path
    offset: int
    length: int


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | FileBody = b""

    @property
    def content_length(self) -> int:
        return self.body.length if isinstance(self.body, FileBody) else len(self.body)


def _json(status: int, doc: object, content_type: str = "application/json", **headers: str) -> Response:
    return Response(status, {"Content-Type": content_type, **headers}, json.dumps(doc).encode())


def error_response(err: RegistryError) -> Response:
    headers = {"Content-Type": "application/json", **err.headers}
    return Response(err.status, headers, err.to_json())


_N = f"(?P<name>{NAME_PATTERN})"
Handler = Callable[["RegistryApp", Request, dict[str, str]], Response]


class RegistryApp:
    """Distribution API v2 over a ``Storage`` and an ``Authenticator``."""

    def __init__(self, storage: Storage, auth: Authenticator | None = None):
        self.storage = storage
        self.auth = auth or Authenticator()
        self._routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
            (re.compile(r"^/v2/?$"), {"GET": RegistryApp._base, "HEAD": RegistryApp._base}),
            (re.compile(r"^/token/?$"), {"GET": RegistryApp._token, "POST": RegistryApp._token}),
            (re.compile(r"^/v2/_catalog$"), {"GET": RegistryApp._catalog}),
            (re.compile(rf"^/v2/{_N}/tags/list$"), {"GET": RegistryApp._tags}),
            (re.compile(rf"^/v2/{_N}/manifests/(?P<ref>[^/]+)$"), {
                "GET": RegistryApp._get_manifest, "HEAD": RegistryApp._get_manifest,
                "PUT": RegistryApp._put_manifest, "DELETE": RegistryApp._delete_manifest}),
            (re.compile(rf"^/v2/{_N}/blobs/uploads/?$"), {"POST": RegistryApp._start_upload}),
            (re.compile(rf"^/v2/{_N}/blobs/uploads/(?P<uuid>[^/]+)$"), {
                "GET": RegistryApp._upload_status, "PATCH": RegistryApp._patch_upload,
                "PUT": RegistryApp._finish_upload, "DELETE": RegistryApp._cancel_upload}),
            (re.compile(rf"^/v2/{_N}/blobs/(?P<digest>[^/]+)$"), {
                "GET": RegistryApp._get_blob, "HEAD": RegistryApp._get_blob, "DELETE": RegistryApp._delete_blob}),
            (re.compile(rf"^/v2/{_N}/referrers/(?P<digest>[^/]+)$"), {"GET": RegistryApp._referrers}),
        ]

    def handle(self, req: Request) -> Response:
        try:
            response = self._dispatch(req)
        except RegistryError as err:
            response = error_response(err)
        except (OSError, ValueError) as err:  # storage trouble: report it, keep serving
            response = error_response(RegistryError("UNKNOWN", f"internal error: {err}", status=500))
        response.headers.setdefault(*API_VERSION_HEADER)
        return response

    def _dispatch(self, req: Request) -> Response:
        path = req.path
        for pattern, methods in self._routes:
            match = pattern.match(path)
            if match is None:
                continue
            handler = methods.get(req.method)
            if handler is None:
                allowed = ", ".join(sorted(methods))
                raise RegistryError("UNSUPPORTED", f"{req.method} is not allowed here", headers={"Allow": allowed})
            return handler(self, req, match.groupdict())
        raise RegistryError("NOT_FOUND", f"no route for {path[:200]}")

    def _authorize(self, req: Request, *scopes: Scope) -> str | None:
        return self.auth.authorize(req.headers, list(scopes), host=req.host, scheme=req.scheme)

    @staticmethod
    def _repo_scope(name: str, *actions: str) -> Scope:
        return Scope("repository", name, frozenset(actions))

    # ---- base, token, catalog, tags ---------------------------------------------------
    def _base(self, req: Request, _: dict[str, str]) -> Response:
        self._authorize(req)
        return _json(200, {})

    def _token(self, req: Request, _: dict[str, str]) -> Response:
        headers = dict(req.headers)
        scopes = req.query.get("scope", [])
        if req.method == "POST":
            form = urllib.parse.parse_qs(req.body.read(65536).decode("utf-8", "replace"))
            scopes += form.get("scope", [])
            if form.get("grant_type", [""])[0] == "password":
                creds = f"{form.get('username', [''])[0]}:{form.get('password', [''])[0]}"
                headers["authorization"] = "Basic " + base64.b64encode(creds.encode()).decode()
        return _json(200, self.auth.token_response(headers, scopes))

    @staticmethod
    def _page(items: list[str], req: Request, base: str) -> tuple[list[str], dict[str, str]]:
        last = req.arg("last")
        if last:
            items = [i for i in items if i > last]
        n_text = req.arg("n")
        headers: dict[str, str] = {}
        if n_text is not None:
            if not n_text.isdigit():
                raise RegistryError("PAGINATION_NUMBER_INVALID", f"n={n_text[:20]!r}: expected a non-negative integer")
            n = int(n_text)
            if len(items) > n:
                items = items[:n]
                if items:
                    query = urllib.parse.urlencode({"n": n, "last": items[-1]})
                    headers["Link"] = f'<{base}?{query}>; rel="next"'
        return items, headers

    def _catalog(self, req: Request, _: dict[str, str]) -> Response:
        self._authorize(req, Scope("registry", "catalog", frozenset({"*"})))
        repos, headers = self._page(self.storage.repositories(), req, "/v2/_catalog")
        return _json(200, {"repositories": repos}, **headers)

    def _tags(self, req: Request, p: dict[str, str]) -> Response:
        name = p["name"]
        self._authorize(req, self._repo_scope(name, "pull"))
        if not self.storage.repo_exists(name):
            raise RegistryError("NAME_UNKNOWN", detail={"name": name})
        tags, headers = self._page(self.storage.tags(name), req, f"/v2/{name}/tags/list")
        return _json(200, {"name": name, "tags": tags}, **headers)

    # ---- manifests ------------------------------------------------------------------------
    def _get_manifest(self, req: Request, p: dict[str, str]) -> Response:
        name = p["name"]
        self._authorize(req, self._repo_scope(name, "pull"))
        if not self.storage.repo_exists(name):
            raise RegistryError("NAME_UNKNOWN", detail={"name": name})
        digest = self.storage.resolve(name, p["ref"])
        data, media_type = self.storage.get_manifest(name, digest)
        headers = {"Content-Type": media_type, "Docker-Content-Digest": str(digest), "ETag": f'"{digest}"'}
        return Response(200, headers, data)

    def _put_manifest(self, req: Request, p: dict[str, str]) -> Response:
        name, ref = p["name"], p["ref"]
        self._authorize(req, self._repo_scope(name, "pull", "push"))
        if req.body_length > MAX_MANIFEST_SIZE:
            raise RegistryError("PAYLOAD_TOO_LARGE", f"manifest is {req.body_length} bytes; the limit is {MAX_MANIFEST_SIZE}")
        data = req.body.read()
        manifest = parse_manifest(data, req.headers.get("content-type"))
        tag: str | None = None
        if ":" in ref:
            expected = Digest.parse(ref)
            if Digest.of(data, expected.algorithm) != expected:
                raise RegistryError("DIGEST_INVALID", f"manifest content does not match {expected}")
        else:
            tag = validate_tag(ref)
        digest = self.storage.put_manifest(name, data, manifest, tag)
        headers = {"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": str(digest)}
        if manifest.subject is not None:
            headers["OCI-Subject"] = str(manifest.subject.digest)
        return Response(201, headers)

    def _delete_manifest(self, req: Request, p: dict[str, str]) -> Response:
        name, ref = p["name"], p["ref"]
        self._authorize(req, self._repo_scope(name, "delete"))
        if ":" in ref:
            self.storage.delete_manifest(name, Digest.parse(ref))
        else:
            self.storage.delete_tag(name, ref)
        return Response(202)

    # ---- blobs ----------------------------------------------------------------------------
    def _get_blob(self, req: Request, p: dict[str, str]) -> Response:
        name = p["name"]
        self._authorize(req, self._repo_scope(name, "pull"))
        digest = Digest.parse(p["digest"])
        path, size = self.storage.stat_blob(name, digest)
        headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": str(digest),
                   "Accept-Ranges": "bytes", "ETag": f'"{digest}"'}
        span = _parse_range(req.headers.get("range"), size)
        if span is None:
            return Response(200, headers, FileBody(path, 0, size))
        start, end = span
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return Response(206, headers, FileBody(path, start, end - start + 1))

    def _delete_blob(self, req: Request, p: dict[str, str]) -> Response:
        name = p["name"]
        self._authorize(req, self._repo_scope(name, "delete"))
        self.storage.unlink_blob(name, Digest.parse(p["digest"]))
        return Response(202)

    @staticmethod
    def _upload_headers(name: str, upload_id: str, offset: int) -> dict[str, str]:
        return {"Location": f"/v2/{name}/blobs/uploads/{upload_id}", "Range": f"0-{max(offset - 1, 0)}",
                "Docker-Upload-UUID": upload_id}

    def _start_upload(self, req: Request, p: dict[str, str]) -> Response:
        name = p["name"]
        self._authorize(req, self._repo_scope(name, "pull", "push"))
        mount, source = req.arg("mount"), req.arg("from")
        if mount and source:
            digest = Digest.parse(mount)
            try:
                self._authorize(req, self._repo_scope(source, "pull"))
                allowed = True
            except RegistryError:
                allowed = False  # not allowed to read the source: fall back to a normal upload
            if allowed and self.storage.repo_exists(source) and self.storage.repo_has_blob(source, digest):
                self.storage.link_blob(name, digest)
                return Response(201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": str(digest)})
        upload_id = self.storage.start_upload(name)
        digest_text = req.arg("digest")
        if digest_text:
            digest = Digest.parse(digest_text)
            try:
                self.storage.finish_upload(name, upload_id, digest, req.body)
            except RegistryError:
                self.storage.remove_upload(upload_id)
                raise
            return Response(201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": str(digest)})
        return Response(202, self._upload_headers(name, upload_id, 0))

    def _upload_status(self, req: Request, p: dict[str, str]) -> Response:
        name = p["name"]
        self._authorize(req, self._repo_scope(name, "pull", "push"))
        offset = self.storage.upload_offset(name, p["uuid"])
        return Response(204, self._upload_headers(name, p["uuid"], offset))

    def _patch_upload(self, req: Request, p: dict[str, str]) -> Response:
        name, upload_id = p["name"], p["uuid"]
        self._authorize(req, self._repo_scope(name, "pull", "push"))
        start: int | None = None
        content_range = req.headers.get("content-range")
        if content_range:
            match = re.fullmatch(r"(?:bytes[ =])?(\d+)-(\d+)(?:/\d+|/\*)?", content_range.strip())
            if not match:
                raise RegistryError("RANGE_INVALID", f"malformed Content-Range {content_range[:60]!r}")
            start, end = int(match.group(1)), int(match.group(2))
            if end - start + 1 != req.body_length:
                raise RegistryError("RANGE_INVALID", f"Content-Range {content_range} does not match "
                                    f"the {req.body_length}-byte body")
        offset = self.storage.append_upload(name, upload_id, req.body, start)
        return Response(202, self._upload_headers(name, upload_id, offset))

    def _finish_upload(self, req: Request, p: dict[str, str]) -> Response:
        name, upload_id = p["name"], p["uuid"]
        self._authorize(req, self._repo_scope(name, "pull", "push"))
        digest_text = req.arg("digest")
        if not digest_text:
            raise RegistryError("DIGEST_INVALID", "the digest query parameter is required to finish an upload")
        digest = Digest.parse(digest_text)
        self.storage.finish_upload(name, upload_id, digest, req.body if req.body_length else None)
        return Response(201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": str(digest)})

    def _cancel_upload(self, req: Request, p: dict[str, str]) -> Response:
        name = p["name"]
        self._authorize(req, self._repo_scope(name, "push"))
        self.storage.cancel_upload(name, p["uuid"])
        return Response(204)

    # ---- referrers (OCI 1.1) -------------------------------------------------------------
    def _referrers(self, req: Request, p: dict[str, str]) -> Response:
        name = p["name"]
        self._authorize(req, self._repo_scope(name, "pull"))
        digest = Digest.parse(p["digest"])
        entries = self.storage.referrers(name, digest) if self.storage.repo_exists(name) else []
        headers: dict[str, str] = {}
        wanted = req.query.get("artifactType")
        if wanted:
            entries = [e for e in entries if e.get("artifactType") in wanted]
            headers["OCI-Filters-Applied"] = "artifactType"
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
        return _json(200, index, mt.OCI_INDEX, **headers)


def _parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """``Range: bytes=a-b`` to an inclusive span; None for the whole blob; RANGE_INVALID if unsatisfiable."""
    if not value:
        return None
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", value)
    if not match or (not match.group(1) and not match.group(2)):
        return None  # multiple or unknown ranges: serving the whole entity is allowed
    unsatisfiable = RegistryError("RANGE_INVALID", f"range {value.strip()[:60]!r} is not satisfiable for "
                                  f"{size} bytes", headers={"Content-Range": f"bytes */{size}"})
    if not match.group(1):
        suffix = int(match.group(2))
        if suffix == 0 or size == 0:
            raise unsatisfiable
        return max(size - suffix, 0), size - 1
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else size - 1
    if start >= size or end < start:
        raise unsatisfiable
    return start, min(end, size - 1)
