"""A synchronous OCI Distribution client: blobs, manifests, tags, referrers, auth.

Speaks to any registry (ours, distribution, ...) over ``http.client`` with keep-alive.
Auth follows the challenge: ``Basic`` resends with credentials, ``Bearer`` fetches a
token from the realm for the needed scope and caches it. Every blob and manifest read is
checked against its digest, so a tampered store or a lying server gives a clear error.
Not thread-safe: use one client per thread.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import ssl
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from . import _mediatypes as mt
from ._credentials import Credentials
from ._digest import Digest
from ._errors import RegistryError, parse_error_body
from ._manifest import Descriptor

Progress = Callable[[str, int, int | None], None]
"""Called as ``progress(label, bytes_done, bytes_total)`` while a blob moves."""

MANIFEST_ACCEPT = ", ".join([mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST])
DEFAULT_CHUNK = 8 * 1024 * 1024
READ_CHUNK = 256 * 1024


@dataclass
class _Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def _parse_challenge(value: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = value.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)\s*=\s*"([^"]*)"', rest)}
    params.update({k.lower(): v for k, v in re.findall(r'(\w+)\s*=\s*([^",\s]+)', rest) if k.lower() not in params})
    return scheme.lower(), params


class RegistryClient:
    """Client for one registry host (``host[:port]``)."""

    def __init__(self, host: str, credentials: Credentials | None = None, *, scheme: str = "auto",
                 ca_file: str | None = None, insecure_tls: bool = False, timeout: float = 60.0,
                 chunk_size: int = DEFAULT_CHUNK, progress: Progress | None = None):
        if scheme not in ("auto", "http", "https"):
            raise ValueError(f"scheme must be auto, http or https, not {scheme!r}")
        self.host = host
        self.credentials = credentials
        self.scheme = scheme
        self.timeout = timeout
        self.chunk_size = chunk_size
        self.progress = progress
        self._ssl = ssl.create_default_context(cafile=ca_file)
        if insecure_tls:
            self._ssl.check_hostname = False
            self._ssl.verify_mode = ssl.CERT_NONE
        self._conn: http.client.HTTPConnection | None = None
        self._tokens: dict[str, str] = {}
        self._basic = False

    # ---- transport ------------------------------------------------------------------------
    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self, scheme: str) -> http.client.HTTPConnection:
        if scheme == "https":
            return http.client.HTTPSConnection(self.host, timeout=self.timeout, context=self._ssl)
        return http.client.HTTPConnection(self.host, timeout=self.timeout)

    def _send_once(self, method: str, target: str, headers: dict[str, str], body: bytes | BinaryIO | None,
                   sink: Callable[[bytes], None] | None) -> _Reply:
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = self._connect("https" if self.scheme in ("auto", "https") else "http")
            try:
                if hasattr(body, "seek"):
                    body.seek(0)  # type: ignore[union-attr]
                self._conn.request(method, target, body=body, headers=headers)
                response = self._conn.getresponse()
                if sink is not None and response.status in (200, 206):
                    while chunk := response.read(READ_CHUNK):
                        sink(chunk)
                    data = b""
                else:
                    data = response.read()
                if response.getheader("connection", "").lower() == "close":
                    self.close()
                return _Reply(response.status, response.headers, data)
            except ssl.SSLError as err:
                self.close()
                if self.scheme == "auto" and ("WRONG_VERSION_NUMBER" in str(err) or "record layer" in str(err)):
                    self.scheme = "http"  # the registry speaks plain HTTP (as Istio falls back)
                    continue
                raise RegistryError("UNKNOWN", f"TLS error talking to {self.host}: {err}", status=0) from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as err:
                self.close()
                if attempt == 0 and sink is None:
                    continue  # a kept-alive connection the server had closed: retry once on a new one
                raise RegistryError("UNKNOWN", f"connection to {self.host} failed: {err}", status=0) from None
            except (OSError, http.client.HTTPException) as err:
                self.close()
                raise RegistryError("UNKNOWN", f"cannot reach registry {self.host}: {err}", status=0) from None
        if self.scheme == "auto":
            self.scheme = "https"
        raise RegistryError("UNKNOWN", f"cannot talk to {self.host}", status=0)

    def _request(self, method: str, target: str, *, scope: str, headers: dict[str, str] | None = None,
                 body: bytes | BinaryIO | None = None, sink: Callable[[bytes], None] | None = None,
                 follow: int = 5) -> _Reply:
        """One request with auth (retried once after a challenge) and redirects for GET/HEAD."""
        hdrs = dict(headers or {})
        answered = False
        while True:
            auth = self._auth_header(scope)
            if auth:
                hdrs["Authorization"] = auth
            reply = self._send_once(method, target, hdrs, body, sink)
            if reply.status in (401, 403) and not answered and self._answer_challenge(reply, scope):
                answered = True
                continue
            break
        if reply.status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD") and follow > 0:
            location = reply.header("location") or ""
            return self._follow(method, location, sink, follow - 1)
        return reply

    def _follow(self, method: str, url: str, sink: Callable[[bytes], None] | None, follow: int) -> _Reply:
        parts = urllib.parse.urlsplit(url)
        if not parts.netloc or parts.netloc == self.host:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            return self._request(method, target, scope="", sink=sink, follow=follow)
        other = RegistryClient(parts.netloc, None, scheme=parts.scheme or "https", timeout=self.timeout)
        other._ssl = self._ssl
        with other:  # redirected to blob storage: no registry credentials go there
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            return other._send_once(method, target, {}, None, sink)

    def _auth_header(self, scope: str) -> str | None:
        if scope in self._tokens:
            return f"Bearer {self._tokens[scope]}"
        if self._basic and self.credentials:
            creds = f"{self.credentials.username}:{self.credentials.password}"
            return "Basic " + base64.b64encode(creds.encode()).decode()
        return None

    def _answer_challenge(self, reply: _Reply, scope: str) -> bool:
        """Prepare credentials for one retry; False when retrying cannot help."""
        kind, params = _parse_challenge(reply.header("www-authenticate") or "")
        if reply.status == 403 and params.get("error") != "insufficient_scope":
            return False  # denied outright: new credentials will not change that
        if kind == "basic":
            if self.credentials is None:
                return False
            self._basic = True
            return True
        if kind != "bearer" or "realm" not in params:
            return False
        wanted = " ".join(dict.fromkeys((params.get("scope") or "").split(" ") + scope.split(" ")))
        self._tokens[scope] = self._fetch_token(params["realm"], params.get("service"), wanted.strip())
        return True

    def _fetch_token(self, realm: str, service: str | None, scope: str) -> str:
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RegistryError("UNAUTHORIZED", f"registry {self.host} sent an unusable token realm {realm[:100]!r}")
        query = [("service", service)] if service else []
        query += [("scope", s) for s in scope.split(" ") if s]
        target = parts.path + "?" + urllib.parse.urlencode(query) + (f"&{parts.query}" if parts.query else "")
        headers: dict[str, str] = {}
        if self.credentials:
            creds = f"{self.credentials.username}:{self.credentials.password}"
            headers["Authorization"] = "Basic " + base64.b64encode(creds.encode()).decode()
        if parts.netloc == self.host:
            reply = self._send_once("GET", target, headers, None, None)
        else:
            with RegistryClient(parts.netloc, scheme=parts.scheme, timeout=self.timeout) as other:
                other._ssl = self._ssl
                reply = other._send_once("GET", target, headers, None, None)
        if reply.status != 200:
            err = parse_error_body(reply.status, reply.body)
            raise RegistryError("UNAUTHORIZED", f"token request to {realm} failed: {err.message}", status=reply.status)
        try:
            doc = json.loads(reply.body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError("UNAUTHORIZED", f"token response from {realm} has no token")
        return token

    @staticmethod
    def _check(reply: _Reply, *ok: int) -> _Reply:
        if reply.status not in ok:
            raise parse_error_body(reply.status, reply.body)
        return reply

    def _location(self, reply: _Reply) -> str:
        location = reply.header("location")
        if not location:
            raise RegistryError("BLOB_UPLOAD_INVALID", f"registry {self.host} sent no Location for the upload")
        parts = urllib.parse.urlsplit(location)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    # ---- API ----------------------------------------------------------------------------
    def ping(self) -> None:
        self._check(self._request("GET", "/v2/", scope=""), 200)

    def blob_exists(self, repo: str, digest: Digest) -> bool:
        reply = self._request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull")
        if reply.status == 404:
            return False
        self._check(reply, 200)
        return True

    def mount_blob(self, repo: str, digest: Digest, source_repo: str) -> bool:
        query = urllib.parse.urlencode({"mount": str(digest), "from": source_repo})
        scope = f"repository:{repo}:pull,push repository:{source_repo}:pull"
        reply = self._check(self._request("POST", f"/v2/{repo}/blobs/uploads/?{query}", scope=scope), 201, 202)
        if reply.status == 202:
            self._request("DELETE", self._location(reply), scope=f"repository:{repo}:pull,push")
        return reply.status == 201

    def push_blob(self, repo: str, data: bytes, media_type: str = "application/octet-stream",
                  annotations: dict[str, str] | None = None, *, label: str = "blob") -> Descriptor:
        """Upload bytes unless the registry already has them; chunked above ``chunk_size``."""
        desc = Descriptor.for_bytes(media_type, data, annotations)
        if self.blob_exists(repo, desc.digest):
            if self.progress:
                self.progress(label, len(data), len(data))
            return desc
        scope = f"repository:{repo}:pull,push"
        reply = self._check(self._request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope), 202)
        location = self._location(reply)
        offset = 0
        while len(data) - offset > self.chunk_size:
            chunk = data[offset:offset + self.chunk_size]
            headers = {"Content-Type": "application/octet-stream",
                       "Content-Range": f"{offset}-{offset + len(chunk) - 1}", "Content-Length": str(len(chunk))}
            reply = self._check(self._request("PATCH", location, scope=scope, headers=headers, body=chunk), 202, 204)
            location = self._location(reply)
            offset += len(chunk)
            if self.progress:
                self.progress(label, offset, len(data))
        sep = "&" if "?" in location else "?"
        rest = data[offset:]
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(rest))}
        self._check(self._request("PUT", f"{location}{sep}digest={desc.digest}", scope=scope,
                                  headers=headers, body=rest), 201, 204)
        if self.progress:
            self.progress(label, len(data), len(data))
        return desc

    def get_blob(self, repo: str, digest: Digest, size: int | None = None, *, label: str = "blob",
                 max_size: int | None = None) -> bytes:
        """Download a blob and check it against ``digest`` (and ``size`` when known)."""
        buffer = io.BytesIO()
        hasher = digest.hasher()
        limit = max_size if max_size is not None else (size if size is not None else None)

        def sink(chunk: bytes) -> None:
            buffer.write(chunk)
            hasher.update(chunk)
            if limit is not None and buffer.tell() > limit:
                raise RegistryError("SIZE_INVALID", f"blob {digest} is larger than {limit} bytes")
            if self.progress:
                self.progress(label, buffer.tell(), size)

        reply = self._request("GET", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull", sink=sink)
        self._check(reply, 200)
        if size is not None and buffer.tell() != size:
            raise RegistryError("SIZE_INVALID", f"blob {digest}: expected {size} bytes, received {buffer.tell()}")
        if hasher.hexdigest() != digest.hex:
            raise RegistryError("DIGEST_INVALID", f"blob {digest} from {self.host}/{repo} does not match its digest "
                                f"(got {digest.algorithm}:{hasher.hexdigest()}): the stored content was altered")
        return buffer.getvalue()

    def push_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> tuple[Digest, str | None]:
        """Put a manifest by tag or digest; returns its digest and the ``OCI-Subject`` header."""
        headers = {"Content-Type": media_type}
        reply = self._request("PUT", f"/v2/{repo}/manifests/{reference}", scope=f"repository:{repo}:pull,push",
                              headers=headers, body=data)
        self._check(reply, 201, 200, 202)
        digest = Digest.of(data)
        returned = reply.header("docker-content-digest")
        if returned and returned != str(digest):
            raise RegistryError("DIGEST_INVALID", f"registry stored the manifest as {returned}, expected {digest}")
        return digest, reply.header("oci-subject")

    def get_manifest(self, repo: str, reference: str, accept: str = MANIFEST_ACCEPT) -> tuple[bytes, str, Digest]:
        """Manifest bytes, media type and digest; the bytes are checked against the digest."""
        reply = self._check(self._request("GET", f"/v2/{repo}/manifests/{reference}", scope=f"repository:{repo}:pull",
                                          headers={"Accept": accept}), 200)
        media_type = (reply.header("content-type") or "").split(";")[0].strip()
        try:
            declared = json.loads(reply.body).get("mediaType")
        except (ValueError, AttributeError):
            declared = None
        if isinstance(declared, str) and declared:
            media_type = declared
        expected = Digest.parse(reference) if ":" in reference else None
        header = reply.header("docker-content-digest")
        if expected is None and header:
            expected = Digest.parse(header)
        actual = Digest.of(reply.body, expected.algorithm if expected else "sha256")
        if expected is not None and actual != expected:
            raise RegistryError("DIGEST_INVALID", f"manifest {repo}:{reference} from {self.host} does not match "
                                f"digest {expected} (got {actual})")
        return reply.body, media_type, actual

    def head_manifest(self, repo: str, reference: str) -> Digest | None:
        reply = self._request("HEAD", f"/v2/{repo}/manifests/{reference}", scope=f"repository:{repo}:pull",
                              headers={"Accept": MANIFEST_ACCEPT})
        if reply.status == 404:
            return None
        self._check(reply, 200)
        header = reply.header("docker-content-digest")
        if header:
            return Digest.parse(header)
        return self.get_manifest(repo, reference)[2]

    def delete_manifest(self, repo: str, reference: str) -> None:
        self._check(self._request("DELETE", f"/v2/{repo}/manifests/{reference}",
                                  scope=f"repository:{repo}:delete"), 202, 200)

    def _paged(self, first: str, scope: str, key: str) -> Iterator[str]:
        target: str | None = first
        while target:
            reply = self._check(self._request("GET", target, scope=scope), 200)
            doc = json.loads(reply.body or b"{}")
            yield from doc.get(key) or []
            link = reply.header("link") or ""
            match = re.search(r"<([^>]+)>\s*;\s*rel=\"?next\"?", link)
            target = None
            if match:
                parts = urllib.parse.urlsplit(match.group(1))
                target = parts.path + (f"?{parts.query}" if parts.query else "")

    def tags(self, repo: str, page_size: int | None = None) -> list[str]:
        first = f"/v2/{repo}/tags/list" + (f"?n={page_size}" if page_size else "")
        return list(self._paged(first, f"repository:{repo}:pull", "tags"))

    def catalog(self, page_size: int | None = None) -> list[str]:
        first = "/v2/_catalog" + (f"?n={page_size}" if page_size else "")
        return list(self._paged(first, "registry:catalog:*", "repositories"))

    def referrers(self, repo: str, digest: Digest, artifact_type: str | None = None) -> list[Descriptor]:
        """OCI 1.1 referrers; falls back to the ``sha256-<hex>`` tag index where the API is missing."""
        from ._manifest import parse_manifest

        query = f"?{urllib.parse.urlencode({'artifactType': artifact_type})}" if artifact_type else ""
        reply = self._request("GET", f"/v2/{repo}/referrers/{digest}{query}", scope=f"repository:{repo}:pull")
        content_type = (reply.header("content-type") or "").split(";")[0].strip()
        if reply.status == 200 and content_type == mt.OCI_INDEX:
            entries = parse_manifest(reply.body, mt.OCI_INDEX).manifests
        elif reply.status in (404, 405, 400):
            tag = f"{digest.algorithm}-{digest.hex}"
            if self.head_manifest(repo, tag) is None:
                return []
            data, media_type, _ = self.get_manifest(repo, tag, accept=mt.OCI_INDEX)
            entries = parse_manifest(data, media_type).manifests
        else:
            raise parse_error_body(reply.status, reply.body)
        if artifact_type:
            entries = tuple(e for e in entries if e.artifact_type == artifact_type)
        return list(entries)

    def referrers_api_supported(self, repo: str, digest: Digest) -> bool:
        reply = self._request("GET", f"/v2/{repo}/referrers/{digest}", scope=f"repository:{repo}:pull")
        return reply.status == 200

