"""The sans-io Distribution API: requests in, responses out, no sockets."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest

from registry import (
    AccessPolicy,
    Authenticator,
    Digest,
    FileBody,
    PasswordFile,
    RegistryApp,
    Request,
    Response,
    Storage,
    TokenIssuer,
    hash_password,
)
from registry import _mediatypes as mt
from registry._manifest import Descriptor


def call(app: RegistryApp, method: str, target: str, body: bytes = b"", **headers: str) -> Response:
    lowered = {k.lower().replace("_", "-"): v for k, v in headers.items()}
    return app.handle(Request(method, target, lowered, io.BytesIO(body), len(body)))


def error_of(response: Response) -> dict[str, object]:
    assert isinstance(response.body, bytes)
    doc = json.loads(response.body)
    assert set(doc) == {"errors"}
    return doc["errors"][0]


def body_of(response: Response) -> bytes:
    if isinstance(response.body, FileBody):
        with response.body.path.open("rb") as f:
            f.seek(response.body.offset)
            return f.read(response.body.length)
    return response.body


@pytest.fixture
def app(tmp_path: Path) -> RegistryApp:
    return RegistryApp(Storage(tmp_path))


def upload(app: RegistryApp, repo: str, data: bytes) -> Digest:
    digest = Digest.of(data)
    response = call(app, "POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", data)
    assert response.status == 201, response.body
    return digest


def push_image(app: RegistryApp, repo: str, tag: str, layer: bytes = b"layer") -> tuple[Digest, bytes]:
    config = b"{}"
    upload(app, repo, config)
    upload(app, repo, layer)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": Descriptor.for_bytes(mt.OCI_CONFIG, config).to_json(),
        "layers": [Descriptor.for_bytes(mt.OCI_LAYER_TAR_GZIP, layer).to_json()]}).encode()
    response = call(app, "PUT", f"/v2/{repo}/manifests/{tag}", manifest, content_type=mt.OCI_MANIFEST)
    assert response.status == 201, response.body
    return Digest.of(manifest), manifest


def test_base_endpoint_announces_the_api_version(app: RegistryApp) -> None:
    response = call(app, "GET", "/v2/")
    assert response.status == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_errors_use_the_spec_json_format_and_status(app: RegistryApp) -> None:
    cases = [
        ("GET", "/v2/nope/manifests/latest", 404, "NAME_UNKNOWN"),
        ("GET", "/v2/nope/tags/list", 404, "NAME_UNKNOWN"),
        ("GET", f"/v2/nope/blobs/{Digest.of(b'x')}", 404, "BLOB_UNKNOWN"),
        ("GET", "/v2/repo/blobs/sha256:short", 400, "DIGEST_INVALID"),
        ("GET", "/v2/repo/blobs/md5:abc", 400, "DIGEST_INVALID"),
        ("PATCH", "/v2/repo/blobs/uploads/deadbeef", 404, "BLOB_UPLOAD_UNKNOWN"),
        ("DELETE", "/v2/_catalog", 405, "UNSUPPORTED"),
        ("GET", "/v2/Bad_Name/tags/list", 404, "NOT_FOUND"),
    ]
    for method, target, status, code in cases:
        response = call(app, method, target)
        assert response.status == status, (target, response.body)
        assert error_of(response)["code"] == code, target
        assert response.headers["Content-Type"] == "application/json"


def test_manifest_round_trip_by_tag_and_digest(app: RegistryApp) -> None:
    digest, manifest = push_image(app, "team/app", "v1")
    for ref in ("v1", str(digest)):
        response = call(app, "GET", f"/v2/team/app/manifests/{ref}")
        assert response.status == 200
        assert response.body == manifest
        assert response.headers["Content-Type"] == mt.OCI_MANIFEST
        assert response.headers["Docker-Content-Digest"] == str(digest)
    head = call(app, "HEAD", "/v2/team/app/manifests/v1")
    assert head.status == 200 and head.content_length == len(manifest)


def test_manifest_put_by_digest_must_match(app: RegistryApp) -> None:
    _, manifest = push_image(app, "repo", "v1")
    wrong = Digest.of(b"other")
    response = call(app, "PUT", f"/v2/repo/manifests/{wrong}", manifest, content_type=mt.OCI_MANIFEST)
    assert response.status == 400 and error_of(response)["code"] == "DIGEST_INVALID"


def test_manifest_validation_names_the_field(app: RegistryApp) -> None:
    upload(app, "repo", b"{}")
    bad = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
           "config": {"mediaType": mt.OCI_CONFIG, "digest": str(Digest.of(b"{}")), "size": -1}, "layers": []}
    response = call(app, "PUT", "/v2/repo/manifests/v1", json.dumps(bad).encode(), content_type=mt.OCI_MANIFEST)
    assert error_of(response)["code"] == "MANIFEST_INVALID"
    assert "config.size" in str(error_of(response)["message"])
    response = call(app, "PUT", "/v2/repo/manifests/v1", b"not json", content_type=mt.OCI_MANIFEST)
    assert error_of(response)["code"] == "MANIFEST_INVALID"
    missing = dict(bad, config={"mediaType": mt.OCI_CONFIG, "digest": str(Digest.of(b"nope")), "size": 4})
    response = call(app, "PUT", "/v2/repo/manifests/v1", json.dumps(missing).encode(), content_type=mt.OCI_MANIFEST)
    assert response.status == 400 and error_of(response)["code"] == "MANIFEST_BLOB_UNKNOWN"


def test_docker_schema2_and_index_manifests(app: RegistryApp) -> None:
    digest, manifest = push_image(app, "repo", "amd64")
    docker = json.loads(manifest)
    docker["mediaType"] = mt.DOCKER_MANIFEST
    data = json.dumps(docker).encode()
    assert call(app, "PUT", "/v2/repo/manifests/docker", data, content_type=mt.DOCKER_MANIFEST).status == 201
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_MANIFEST, "digest": str(digest), "size": len(manifest),
         "platform": {"architecture": "wasm", "os": "wasip1"}}]}).encode()
    assert call(app, "PUT", "/v2/repo/manifests/multi", index, content_type=mt.OCI_INDEX).status == 201
    assert call(app, "GET", "/v2/repo/manifests/docker").headers["Content-Type"] == mt.DOCKER_MANIFEST
    missing_child = index.replace(str(digest).encode(), str(Digest.of(b"none")).encode())
    response = call(app, "PUT", "/v2/repo/manifests/bad", missing_child, content_type=mt.OCI_INDEX)
    assert error_of(response)["code"] == "MANIFEST_BLOB_UNKNOWN"


def test_chunked_upload_protocol(app: RegistryApp) -> None:
    start = call(app, "POST", "/v2/repo/blobs/uploads/")
    assert start.status == 202
    location = start.headers["Location"]
    assert start.headers["Range"] == "0-0" and start.headers["Docker-Upload-UUID"] in location
    first = call(app, "PATCH", location, b"hello ", content_range="0-5")
    assert first.status == 202 and first.headers["Range"] == "0-5"
    wrong = call(app, "PATCH", location, b"x", content_range="9-9")
    assert wrong.status == 416 and error_of(wrong)["code"] == "RANGE_INVALID"
    assert call(app, "GET", location).headers["Range"] == "0-5"
    done = call(app, "PUT", f"{location}?digest={Digest.of(b'hello world')}", b"world")
    assert done.status == 201
    assert done.headers["Location"] == f"/v2/repo/blobs/{Digest.of(b'hello world')}"
    blob = call(app, "GET", done.headers["Location"])
    assert body_of(blob) == b"hello world"


def test_finishing_an_upload_without_digest_or_with_a_wrong_one(app: RegistryApp) -> None:
    location = call(app, "POST", "/v2/repo/blobs/uploads/").headers["Location"]
    assert error_of(call(app, "PUT", location, b"abc"))["code"] == "DIGEST_INVALID"
    location = call(app, "POST", "/v2/repo/blobs/uploads/").headers["Location"]
    response = call(app, "PUT", f"{location}?digest={Digest.of(b'abcd')}", b"abc")
    assert response.status == 400 and error_of(response)["code"] == "DIGEST_INVALID"
    assert call(app, "HEAD", f"/v2/repo/blobs/{Digest.of(b'abcd')}").status == 404


def test_blob_range_requests(app: RegistryApp) -> None:
    digest = upload(app, "repo", b"0123456789")
    target = f"/v2/repo/blobs/{digest}"
    part = call(app, "GET", target, range="bytes=2-4")
    assert part.status == 206 and body_of(part) == b"234"
    assert part.headers["Content-Range"] == "bytes 2-4/10"
    assert body_of(call(app, "GET", target, range="bytes=7-")) == b"789"
    assert body_of(call(app, "GET", target, range="bytes=-3")) == b"789"
    bad = call(app, "GET", target, range="bytes=20-30")
    assert bad.status == 416 and bad.headers["Content-Range"] == "bytes */10"
    head = call(app, "HEAD", target)
    assert head.status == 200 and head.content_length == 10 and head.headers["Docker-Content-Digest"] == str(digest)


def test_cross_repository_mount(app: RegistryApp) -> None:
    digest = upload(app, "source", b"shared")
    mounted = call(app, "POST", f"/v2/dest/blobs/uploads/?mount={digest}&from=source")
    assert mounted.status == 201 and mounted.headers["Docker-Content-Digest"] == str(digest)
    assert call(app, "HEAD", f"/v2/dest/blobs/{digest}").status == 200
    fallback = call(app, "POST", f"/v2/dest/blobs/uploads/?mount={Digest.of(b'absent')}&from=source")
    assert fallback.status == 202


def test_tags_pagination_with_link_header(app: RegistryApp) -> None:
    for tag in ("c", "a", "d", "b"):
        push_image(app, "repo", tag)
    first = call(app, "GET", "/v2/repo/tags/list?n=2")
    assert json.loads(body_of(first)) == {"name": "repo", "tags": ["a", "b"]}
    assert first.headers["Link"] == '</v2/repo/tags/list?n=2&last=b>; rel="next"'
    second = call(app, "GET", "/v2/repo/tags/list?n=2&last=b")
    assert json.loads(body_of(second))["tags"] == ["c", "d"]
    assert "Link" not in second.headers
    assert error_of(call(app, "GET", "/v2/repo/tags/list?n=x"))["code"] == "PAGINATION_NUMBER_INVALID"
    catalog = call(app, "GET", "/v2/_catalog?n=10")
    assert json.loads(body_of(catalog)) == {"repositories": ["repo"]}


def test_delete_tag_manifest_and_blob(app: RegistryApp) -> None:
    digest, _ = push_image(app, "repo", "v1")
    push_image(app, "repo", "v2")
    assert call(app, "DELETE", "/v2/repo/manifests/v1").status == 202
    assert call(app, "GET", "/v2/repo/manifests/v1").status == 404
    assert call(app, "DELETE", f"/v2/repo/manifests/{digest}").status == 202
    assert error_of(call(app, "GET", "/v2/repo/manifests/v2"))["code"] == "MANIFEST_UNKNOWN"
    layer = Digest.of(b"layer")
    assert call(app, "DELETE", f"/v2/repo/blobs/{layer}").status == 202
    assert call(app, "HEAD", f"/v2/repo/blobs/{layer}").status == 404


def test_referrers_api_with_artifact_type_filter(app: RegistryApp) -> None:
    digest, manifest = push_image(app, "repo", "v1")
    upload(app, "repo", mt.EMPTY_JSON)
    upload(app, "repo", b"sig")
    subject = {"mediaType": mt.OCI_MANIFEST, "digest": str(digest), "size": len(manifest)}
    for artifact_type in ("application/example.sig", "application/example.sbom"):
        doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": artifact_type,
               "config": Descriptor.for_bytes(mt.OCI_EMPTY, mt.EMPTY_JSON).to_json(),
               "layers": [Descriptor.for_bytes("application/octet-stream", b"sig").to_json()], "subject": subject}
        data = json.dumps(doc).encode()
        response = call(app, "PUT", f"/v2/repo/manifests/{Digest.of(data)}", data, content_type=mt.OCI_MANIFEST)
        assert response.headers["OCI-Subject"] == str(digest)
    every = call(app, "GET", f"/v2/repo/referrers/{digest}")
    assert every.headers["Content-Type"] == mt.OCI_INDEX
    assert {m["artifactType"] for m in json.loads(body_of(every))["manifests"]} == {
        "application/example.sig", "application/example.sbom"}
    only = call(app, "GET", f"/v2/repo/referrers/{digest}?artifactType=application/example.sig")
    assert only.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["artifactType"] for m in json.loads(body_of(only))["manifests"]] == ["application/example.sig"]
    none = call(app, "GET", f"/v2/repo/referrers/{Digest.of(b'unknown')}")
    assert none.status == 200 and json.loads(body_of(none))["manifests"] == []


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def passwords() -> PasswordFile:
    return PasswordFile({"alice": hash_password("pw-a", scheme="pbkdf2-sha256"),
                         "bob": hash_password("pw-b", scheme="pbkdf2-sha256")})


def test_basic_auth_challenge_and_denied(tmp_path: Path, passwords: PasswordFile) -> None:
    policy = AccessPolicy.parse("rules:\n- {users: [alice], repositories: ['*'], actions: ['*']}\n"
                                "- {users: [bob], repositories: ['public/*'], actions: [pull]}\n")
    app = RegistryApp(Storage(tmp_path), Authenticator("basic", passwords, policy))
    anonymous = call(app, "GET", "/v2/")
    assert anonymous.status == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert error_of(anonymous)["code"] == "UNAUTHORIZED"
    wrong = call(app, "GET", "/v2/", authorization=_basic("alice", "nope"))
    assert wrong.status == 401 and "invalid username or password" in str(error_of(wrong)["message"])
    assert call(app, "GET", "/v2/", authorization=_basic("alice", "pw-a")).status == 200
    denied = call(app, "POST", "/v2/public/x/blobs/uploads/", authorization=_basic("bob", "pw-b"))
    assert denied.status == 403 and error_of(denied)["code"] == "DENIED"
    assert call(app, "GET", "/v2/public/x/tags/list", authorization=_basic("bob", "pw-b")).status == 404


def test_token_auth_grants_only_policy_scopes(tmp_path: Path, passwords: PasswordFile) -> None:
    policy = AccessPolicy.parse("rules:\n- {users: [bob], repositories: ['team/*'], actions: [pull]}\n")
    app = RegistryApp(Storage(tmp_path), Authenticator("token", passwords, policy, TokenIssuer("test-registry")))
    challenge = call(app, "GET", "/v2/team/app/tags/list", host="reg.test:5000")
    assert challenge.status == 401
    assert challenge.headers["WWW-Authenticate"] == (
        'Bearer realm="http://reg.test:5000/token",service="test-registry",scope="repository:team/app:pull"')
    issued = call(app, "GET", "/token?service=test-registry&scope=repository:team/app:pull,push",
                  authorization=_basic("bob", "pw-b"))
    token = json.loads(body_of(issued))["token"]
    pull = call(app, "GET", "/v2/team/app/tags/list", authorization=f"Bearer {token}")
    assert pull.status == 404  # authorised; the repository just does not exist
    push = call(app, "POST", "/v2/team/app/blobs/uploads/", authorization=f"Bearer {token}")
    assert push.status == 403 and 'error="insufficient_scope"' in push.headers["WWW-Authenticate"]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    bad = call(app, "GET", "/v2/team/app/tags/list", authorization=f"Bearer {forged}")
    assert bad.status == 401 and 'error="invalid_token"' in bad.headers["WWW-Authenticate"]
    wrong_password = call(app, "GET", "/token?scope=repository:team/app:pull", authorization=_basic("bob", "x"))
    assert wrong_password.status == 401


def test_token_endpoint_accepts_oauth2_password_grant(tmp_path: Path, passwords: PasswordFile) -> None:
    app = RegistryApp(Storage(tmp_path), Authenticator("token", passwords))
    form = b"grant_type=password&username=alice&password=pw-a&scope=repository%3Ax%3Apull&service=s"
    response = call(app, "POST", "/token", form, content_type="application/x-www-form-urlencoded")
    doc = json.loads(body_of(response))
    user, scopes = app.auth.issuer.check(doc["access_token"])
    assert user == "alice" and [str(s) for s in scopes] == ["repository:x:pull"]
