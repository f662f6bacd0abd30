"""The story `wasmesh demo` tells, one verified step at a time.

Each step applies the manifests of `examples/bookinfo/manifests/` through the control plane's
API (as `wasmesh apply -f` does by hand), then proves its effect with real requests through
the sidecars and reports a pass/fail line with what it measured. A step waits, with a
deadline, for the push to reach the proxies before it counts.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane._demo_mesh import BOOKINFO, ChildExited, DemoError, DemoMesh, http_get

MANIFESTS = BOOKINFO / "manifests"
CONVERGE_S = 20.0
SAMPLES = 100
PLUGIN = "header_rewrite"
PLUGIN_HEADER = "x-demo-plugin"


@dataclass
class StepResult:
    name: str
    passed: bool
    detail: str
    seconds: float = 0.0


def page(mesh: DemoMesh, user: str = "") -> dict[str, Any]:
    """The product page through productpage's sidecar (its inbound listener)."""
    status, _, body = http_get(mesh.workload("productpage-v1").inbound_port, "/productpage",
                               {"end-user": user} if user else {})
    if status != 200:
        raise DemoError(f"productpage answered {status}")
    return dict(json.loads(body))


def reviews_version(answer: dict[str, Any]) -> str:
    return str(answer.get("reviews", {}).get("version", "error"))


def until(condition: Callable[[], bool], what: str, timeout: float = CONVERGE_S) -> None:
    """Poll `condition` (errors count as not yet) until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except ChildExited:
            raise
        except (OSError, ValueError, DemoError):
            pass
        time.sleep(0.1)
    raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")


def versions(mesh: DemoMesh, count: int, user: str = "") -> Counter[str]:
    return Counter(reviews_version(page(mesh, user)) for _ in range(count))


# ---- routing ----------------------------------------------------------------------------------
def all_v1(mesh: DemoMesh) -> tuple[bool, str]:
    mesh.apply(MANIFESTS / "01-all-v1.yaml")
    until(lambda: set(versions(mesh, 5)) == {"v1"}, "reviews v1 only")
    counts = versions(mesh, SAMPLES // 2)
    details = page(mesh).get("details", {}).get("author", "")
    return set(counts) == {"v1"} and bool(details), f"reviews {dict(counts)}; details by {details}"


def split_50_v3(mesh: DemoMesh) -> tuple[bool, str]:
    mesh.apply(MANIFESTS / "02-reviews-50-v3.yaml")
    until(lambda: "v3" in versions(mesh, 10), "reviews v3 to appear")
    counts = versions(mesh, SAMPLES)
    balanced = set(counts) == {"v1", "v3"} and all(30 <= counts[v] <= 70 for v in ("v1", "v3"))
    return balanced, f"{SAMPLES} requests: v1 {counts['v1']}, v3 {counts['v3']}"


def user_jason(mesh: DemoMesh) -> tuple[bool, str]:
    mesh.apply(MANIFESTS / "03-reviews-jason-v2.yaml")
    until(lambda: set(versions(mesh, 5, "jason")) == {"v2"} and set(versions(mesh, 5)) == {"v1"},
          "jason on v2, others on v1")
    jason, others = versions(mesh, 20, "jason"), versions(mesh, 20, "alice")
    stars = page(mesh, "jason")["reviews"].get("ratings", {}).get("color", "")
    ok = set(jason) == {"v2"} and set(others) == {"v1"} and stars == "black"
    return ok, f"jason {dict(jason)} ({stars} stars); alice {dict(others)}"


def ratings_of(mesh: DemoMesh, user: str) -> dict[str, Any]:
    return dict(page(mesh, user)["reviews"].get("ratings") or {})


def fault_delay(mesh: DemoMesh) -> tuple[bool, str]:
    mesh.apply(MANIFESTS / "04-ratings-delay.yaml")
    until(lambda: ratings_of(mesh, "jason").get("seconds", 0) >= 1.4, "the delay on ratings for jason")
    delayed = ratings_of(mesh, "jason")
    ok = delayed.get("status") == 200 and delayed["seconds"] >= 1.4
    return ok, f"jason's ratings call took {delayed.get('seconds')} s (1.5 s injected), answered {delayed.get('status')}"


def fault_abort(mesh: DemoMesh) -> tuple[bool, str]:
    mesh.apply(MANIFESTS / "05-ratings-abort.yaml")
    until(lambda: ratings_of(mesh, "jason").get("status") == 500, "the abort on ratings for jason")
    aborted = ratings_of(mesh, "jason")
    return aborted.get("status") == 500, f"jason's ratings call: {aborted.get('error')}; the page still rendered"


# ---- plugins ----------------------------------------------------------------------------------
def with_custom_section(module: bytes, name: str, payload: bytes) -> bytes:
    """The same module plus one custom section: other bytes, other digest, same behaviour."""
    def leb128(value: int) -> bytes:
        out = bytearray()
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return bytes(out)

    body = leb128(len(name)) + name.encode() + payload
    return module + b"\x00" + leb128(len(body)) + body


def publish_plugin(mesh: DemoMesh) -> str:
    """Build plugins/header_rewrite, push 1.0 and 2.0 signed and one tag unsigned; a summary."""
    folder = mesh.workdir / "plugin"
    folder.mkdir(exist_ok=True)
    built = folder / f"{PLUGIN}.wasm"
    mesh.wasmesh("plugin", "build", str(BOOKINFO.parents[1] / "plugins" / PLUGIN / "plugin.py"), "-o", str(built))
    module = built.read_bytes()
    variants = {"1.0": (module, True), "2.0": (with_custom_section(module, "wasmesh.demo", b"2.0"), True),
                "unsigned": (with_custom_section(module, "wasmesh.demo", b"unsigned"), False)}
    for tag, (data, signed) in variants.items():
        path = folder / f"{PLUGIN}-{tag}.wasm"
        path.write_bytes(data)
        sign = ["--sign", str(mesh.key) + ".key"] if signed else []
        mesh.wasmesh("plugin", "push", str(path), f"oci://{mesh.registry}/plugins/{PLUGIN}:{tag}", "--plain-http",
                     "-q", *sign)
    return f"built {len(module)} bytes; pushed {PLUGIN}:1.0 and :2.0 signed, :unsigned without a signature"


def plugin_header(mesh: DemoMesh, name: str) -> str:
    status, headers, _ = http_get(mesh.workload(name).inbound_port, "/health")
    if status != 200:
        raise DemoError(f"{name} answered {status}")
    return headers.get(PLUGIN_HEADER, "")


def plugin_applied(mesh: DemoMesh) -> tuple[bool, str]:
    mesh.apply(MANIFESTS / "01-all-v1.yaml")  # the plugin steps start from plain v1 routing
    until(lambda: "ratings" not in page(mesh, "jason")["reviews"], "routing back to v1")
    summary = publish_plugin(mesh)
    mesh.apply(MANIFESTS / "06-plugin-v1.yaml")
    until(lambda: plugin_header(mesh, "details-v1") == "v1", "the plugin on details")
    others = {name: plugin_header(mesh, name) for name in ("productpage-v1", "reviews-v1", "ratings-v1")}
    ok = not any(others.values()) and plugin_header(mesh, "details-v1") == "v1"
    return ok, f"{summary}; details answers {PLUGIN_HEADER}: v1, productpage/reviews/ratings without it"


class Load:
    """Keep-alive clients against one workload for a bounded time, counting plugin versions."""

    def __init__(self, port: int, clients: int = 4, limit_s: float = 60.0) -> None:
        self.port = port
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []
        self.order: list[str] = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + limit_s
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _client(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                connection.request("GET", "/details/0")
                reply = connection.getresponse()
                reply.read()
            except (OSError, http.client.HTTPException) as err:
                with self._lock:
                    self.failures.append(f"{type(err).__name__}: {err}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                continue
            version = reply.getheader(PLUGIN_HEADER) or "none"
            with self._lock:
                if reply.status != 200:
                    self.failures.append(f"status {reply.status}")
                self.counts[version] += 1
                if not self.order or self.order[-1] != version:
                    self.order.append(version)
        connection.close()


def hot_reload(mesh: DemoMesh) -> tuple[bool, str]:
    port = mesh.workload("details-v1").inbound_port
    with Load(port) as load:
        time.sleep(1.0)
        mesh.apply(MANIFESTS / "07-plugin-v2.yaml")
        until(lambda: load.counts["v2"] >= 50, "v2 under load")
        time.sleep(1.0)
    ok = not load.failures and load.counts["v1"] > 0 and load.counts["v2"] > 0 and load.order[-1] == "v2"
    return ok, (f"{sum(load.counts.values())} requests, {len(load.failures)} failed: v1 {load.counts['v1']}, "
                f"v2 {load.counts['v2']}" + (f", other {dict(load.counts)}" if set(load.counts) - {"v1", "v2"} else ""))


def verified_condition(mesh: DemoMesh) -> dict[str, Any]:
    [manifest] = json.loads(mesh.wasmesh("get", "wasmplugin", "demo-header", "-o", "json", "--control-plane",
                                         mesh.api)) or [{}]
    conditions = (manifest.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Verified"), {})


def refused(mesh: DemoMesh, manifest: str, reason: str) -> tuple[bool, str]:
    port = mesh.workload("details-v1").inbound_port
    with Load(port) as load:
        mesh.apply(MANIFESTS / manifest)
        until(lambda: verified_condition(mesh).get("status") == "False"
              and reason in str(verified_condition(mesh).get("message")), f"refusal ({reason})", 30)
        time.sleep(0.5)
    condition = verified_condition(mesh)
    modules = mesh.wasmesh("proxy-status", "--control-plane", mesh.api).split("MODULES:")[-1]
    status_line = " ".join(line.strip() for line in modules.splitlines() if "details-v1" in line)
    ok = not load.failures and set(load.counts) == {"v2"}
    return ok, (f"WasmPlugin status: Verified {condition.get('reason')}: {condition.get('message')}; "
                f"meanwhile {load.counts['v2']} requests served by v2, {len(load.failures)} failed; "
                f"proxy-status: {status_line}")


def refuse_unsigned(mesh: DemoMesh) -> tuple[bool, str]:
    return refused(mesh, "08-plugin-unsigned.yaml", "is not signed")


def refuse_wrong_sha256(mesh: DemoMesh) -> tuple[bool, str]:
    return refused(mesh, "09-plugin-wrong-sha256.yaml", "does not match the expected sha256")


STEPS: tuple[tuple[str, str, Callable[[DemoMesh], tuple[bool, str]]], ...] = (
    ("routing-v1", "all traffic to reviews v1", all_v1),
    ("split-50-v3", "50/50 between reviews v1 and v3", split_50_v3),
    ("user-jason", "end-user: jason to reviews v2", user_jason),
    ("fault-delay", "fault injection: delay on ratings for jason", fault_delay),
    ("fault-abort", "fault injection: abort on ratings for jason", fault_abort),
    ("plugin", "signed plugin from the registry on details only", plugin_applied),
    ("hot-reload", "hot reload to plugin 2.0 under load", hot_reload),
    ("refuse-unsigned", "an unsigned module is refused", refuse_unsigned),
    ("refuse-sha256", "a module with a wrong sha256 is refused", refuse_wrong_sha256),
)


def run_step(mesh: DemoMesh, name: str, step: Callable[[DemoMesh], tuple[bool, str]]) -> StepResult:
    started = time.monotonic()
    try:
        passed, detail = step(mesh)
    except DemoError as err:
        passed, detail = False, str(err)
    mesh.check_alive()
    return StepResult(name, passed, detail, time.monotonic() - started)


def write_json(path: Path, data: Any) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2))
    temporary.replace(path)


__all__ = ["STEPS", "StepResult", "page", "run_step", "until", "write_json"]
