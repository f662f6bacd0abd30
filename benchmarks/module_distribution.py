"""Module distribution at scale: N simulated proxies need a new 2 MB signed module at once.

A real registry (`registry.testing`, in this process, counting blob reads) holds the module,
signed with a key the trust policy names. The control plane runs as its own process
(`wasmesh controlplane --trust-policy ... --mesh-config ...`). N lightweight ADS clients
(`controlplane._adsclient`, sharing a few HTTP/2 connections) subscribe like Envoy. The clock
starts when the WasmPlugin file lands in the watched folder and stops when every proxy holds
the verified bytes:
- `inline` delivery: the bytes arrive in the ECDS config itself (the client checks their sha256);
- `remote` delivery: ECDS names the control plane's module endpoint and a sha256, and each
  client then GETs the module over HTTP and checks it, as Envoy does with `code.remote`.
Reported: time until the first and the last proxy has the module, how many times the registry
served the module blob (the goal is one, however many proxies), and the control plane's RSS.
Bounded: each phase gives up after --deadline seconds.

    python benchmarks/module_distribution.py --proxies 200 --delivery remote
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controlplane._adsclient import AdsClient  # noqa: E402
from controlplane._protos import EXTENSION_CONFIG, ROUTE, unpack  # noqa: E402
from registry import (  # noqa: E402
    Reference,
    RegistryClient,
    generate_keypair,
    load_private_key,
    push_module,
    sign_image,
)
from registry.testing import running_registry  # noqa: E402

SERVICE = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: 20000}}]
"""


def big_module(size: int) -> bytes:
    """A valid Wasm module of about `size` bytes: an empty module plus one custom section."""
    payload = os.urandom(size)
    name = b"payload"
    body = bytes([len(name)]) + name + payload
    length = bytearray()
    value = len(body)
    while True:
        byte, value = value & 0x7F, value >> 7
        length.append(byte | (0x80 if value else 0))
        if not value:
            break
    return b"\0asm\x01\0\0\0" + b"\x00" + bytes(length) + body


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def module_in(client: AdsClient) -> tuple[str, bytes | str] | None:
    """('inline', bytes) or ('remote', url) for the plugin's module in the client's ECDS, if any."""
    config = (client.resources.get(EXTENSION_CONFIG) or {}).get("default.big")
    if config is None or not config.typed_config.type_url.endswith("wasm.v3.Wasm"):
        return None
    code = unpack(config.typed_config).config.vm_config.code
    if code.WhichOneof("specifier") == "local":
        return "inline", bytes(code.local.inline_bytes)
    return "remote", str(code.remote.http_uri.uri)


async def http_get(url: str) -> bytes:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(f"GET {parts.path} HTTP/1.1\r\nhost: {parts.netloc}\r\nconnection: close\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))  # type: ignore[union-attr]
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"{url}: {head.splitlines()[0]!r}")
        return await reader.readexactly(length)
    finally:
        writer.close()


async def run(proxies: int, channels: int, size: int, delivery: str, deadline: float) -> None:
    with tempfile.TemporaryDirectory() as directory, running_registry(Path(directory) / "registry") as registry:
        work = Path(directory)
        module = big_module(size)
        sha256 = hashlib.sha256(module).hexdigest()
        private_pem, public_pem = generate_keypair()
        ref = Reference.parse(f"{registry.host}/plugins/big:v1")
        with RegistryClient(registry.host) as publisher:
            push_module(publisher, ref, module)
            sign_image(publisher, ref, load_private_key(private_pem))
        blob_reads: list[str] = []
        original = registry.app.handle

        def counting(request: Any) -> Any:
            if request.method == "GET" and request.path.endswith(sha256):
                blob_reads.append(request.path)
            return original(request)

        registry.app.handle = counting  # type: ignore[method-assign,assignment]
        (work / "key.pub").write_bytes(public_pem)
        (work / "trust.yaml").write_text(f"rules: [{{images: ['{registry.host}/*'], keys: [key.pub]}}]\n")
        (work / "mesh.yaml").write_text(f"modules: {{delivery: {delivery}}}\n")
        folder = work / "config"
        folder.mkdir()
        (folder / "service.yaml").write_text(SERVICE)
        command = [sys.executable, "-m", "controlplane.cli._controlplane", "controlplane", "--config-dir", str(folder),
                   "--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0",
                   "--mesh-config", str(work / "mesh.yaml"), "--trust-policy", str(work / "trust.yaml"),
                   "--module-cache", str(work / "module-cache")]
        server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        pool: list[grpc.aio.Channel] = []
        clients: list[AdsClient] = []
        try:
            assert server.stdout is not None
            banner = server.stdout.readline()
            match = re.search(r"xDS (\S+):(\d+)", banner)
            if match is None:
                raise SystemExit(f"control plane did not start: {banner!r}")
            address = f"{match.group(1)}:{match.group(2)}"
            options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 * 1024 * 1024)]
            pool = [grpc.aio.insecure_channel(address, options=options) for _ in range(channels)]
            clients = [AdsClient(address, f"sidecar~127.0.0.1~app{i}.default~default.svc.cluster.local",
                                 {"NAME": f"app{i}", "NAMESPACE": "default", "LABELS": {"app": "app"},
                                  "OUTBOUND_PORTS": '{"9080": 0}'}, channel=pool[i % channels])
                       for i in range(proxies)]
            started = time.monotonic()
            for client in clients:
                await client.start()
            while sum(1 for c in clients if ROUTE in c.versions) < proxies:
                if time.monotonic() - started > deadline:
                    raise SystemExit("not every proxy got its configuration")
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
            idle_rss = rss_mib(server.pid)

            has: dict[int, float] = {}
            fetches: dict[int, asyncio.Task[None]] = {}
            errors: list[str] = []

            async def fetch(index: int, url: str) -> None:
                try:
                    data = await http_get(url)
                    if hashlib.sha256(data).hexdigest() == sha256:
                        has[index] = time.monotonic()
                    else:
                        errors.append(f"proxy {index}: checksum mismatch")
                except (OSError, RuntimeError, asyncio.IncompleteReadError) as err:
                    errors.append(f"proxy {index}: {err}")

            changed_at = time.monotonic()
            (folder / "plugin.tmp").write_text(f"""apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: big}}
spec:
  url: oci://{ref.registry}/{ref.repository}:v1
""")
            (folder / "plugin.tmp").replace(folder / "plugin.yaml")
            while len(has) < proxies:
                if time.monotonic() - changed_at > deadline:
                    raise SystemExit(f"only {len(has)} of {proxies} proxies got the module; errors: {errors[:3]}")
                for index, client in enumerate(clients):
                    if index in has or index in fetches:
                        continue
                    found = module_in(client)
                    if found is None:
                        continue
                    kind, value = found
                    if kind == "inline":
                        if isinstance(value, bytes) and hashlib.sha256(value).hexdigest() == sha256:
                            has[index] = client.updated_at[EXTENSION_CONFIG]
                    else:
                        fetches[index] = asyncio.get_running_loop().create_task(fetch(index, str(value)))
                await asyncio.sleep(0.005)
            first, last = min(has.values()) - changed_at, max(has.values()) - changed_at
            print(f"proxies: {proxies} over {channels} HTTP/2 connections; module {len(module) / 1e6:.1f} MB, "
                  f"delivery {delivery}")
            print(f"WasmPlugin written -> first proxy has the verified module {first * 1000:.0f} ms, "
                  f"all {proxies} proxies {last * 1000:.0f} ms (includes the folder poll of 0.2 s, the 0.1 s "
                  "debounce, the registry pull and the signature check)")
            print(f"registry reads of the module blob: {len(blob_reads)}; failed proxy fetches: {len(errors)}")
            print(f"control plane RSS: before {idle_rss:.0f} MiB, after {rss_mib(server.pid):.0f} MiB")
        finally:
            for client in clients:
                await client.stop()
            for channel in pool:
                await channel.close()
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--proxies", type=int, default=200)
    parser.add_argument("--channels", type=int, default=20, help="client HTTP/2 connections the streams share")
    parser.add_argument("--size", type=int, default=2 * 1024 * 1024, help="module size in bytes")
    parser.add_argument("--delivery", choices=("inline", "remote", "both"), default="both")
    parser.add_argument("--deadline", type=float, default=120.0, help="give up after this many seconds per phase")
    args = parser.parse_args()
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    for delivery in ("inline", "remote") if args.delivery == "both" else (args.delivery,):
        asyncio.run(run(args.proxies, args.channels, args.size, delivery, args.deadline))


if __name__ == "__main__":
    main()
