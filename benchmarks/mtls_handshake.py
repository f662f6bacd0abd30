"""mTLS cost: new connections per second per core, and the added p50 on a keep-alive path.

The server is ``wasmhost.security.SecureListener`` (STRICT mTLS, or DISABLE for the
plaintext baseline) in its own process on 127.0.0.1, answering one line per request; the
client runs here with asyncio. Certificates are real EC P-256 SVIDs from
``controlplane.ca``. Reported:

- new connections/s (wall clock, ``--concurrency`` clients each doing connect + one request +
  close; both processes share this machine's cores, so this depends on the machine), and per
  core: connections per CPU-second the server process used during that phase (read from
  /proc, Linux), and the same for the client process;
- keep-alive round-trip p50/p99 over one connection, mTLS minus plaintext = added p50.

Every phase is bounded by ``--seconds``; the server is stopped by PID.

    python benchmarks/mtls_handshake.py [--seconds 5] [--concurrency 16] [--round-trips 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controlplane.ca import CertificateAuthority  # noqa: E402
from wasmhost.security import (  # noqa: E402
    PeerAuthenticationMode,
    SecureListener,
    SpiffeId,
    TlsContexts,
    WorkloadSvid,
    build_csr,
    client_context_for,
    generate_key,
    load_pem_certificates,
)

SERVER = SpiffeId("cluster.local", "bench", "server")
CLIENT = SpiffeId("cluster.local", "bench", "client")


def issue(ca: CertificateAuthority, identity: SpiffeId) -> WorkloadSvid:
    key = generate_key()
    issued = ca.sign(build_csr(key, identity), identity, validity_seconds=3600)
    return WorkloadSvid.from_response(key, issued.cert_chain, load_pem_certificates("".join(issued.trust_bundle)))


class Echo(asyncio.Protocol):
    def __init__(self, peer: object) -> None:
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\n", 1)
            self.transport.write(b"ok\n")  # type: ignore[attr-defined]


async def serve(ca_dir: str, mode: str) -> None:
    """Server process: print the port, serve until SIGTERM."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    ca = CertificateAuthority(Path(ca_dir), "cluster.local")
    listener = await SecureListener(TlsContexts(issue(ca, SERVER)), Echo, mode=PeerAuthenticationMode(mode)).start()
    print(listener.port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await listener.close()


def start_server(ca_dir: str, mode: str) -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen([sys.executable, __file__, "--serve", ca_dir, mode], stdout=subprocess.PIPE)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise RuntimeError("benchmark server did not start")
    return process, int(line)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def new_connections(port: int, context: object, seconds: float, concurrency: int) -> int:
    deadline = time.monotonic() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="" if context else None)
            writer.write(b"ping\n")
            if await reader.readline() != b"ok\n":
                raise RuntimeError("bad answer")
            writer.close()
            done += 1

    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return done


async def keepalive(port: int, context: object, round_trips: int, seconds: float) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                   server_hostname="" if context else None)
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    for _ in range(round_trips):
        start = time.perf_counter()
        writer.write(b"ping\n")
        await reader.readline()
        samples.append(time.perf_counter() - start)
        if time.monotonic() > deadline:
            break
    writer.close()
    return samples


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(ca_dir: str, mode: str, context: object, args: argparse.Namespace) -> dict[str, float]:
    process, port = start_server(ca_dir, mode)
    try:
        client_cpu, server_cpu = cpu_self(), cpu_of(process.pid)
        wall = time.monotonic()
        count = asyncio.run(new_connections(port, context, args.seconds, args.concurrency))
        wall = time.monotonic() - wall
        client_cpu, server_cpu = cpu_self() - client_cpu, cpu_of(process.pid) - server_cpu
        samples = asyncio.run(keepalive(port, context, args.round_trips, args.seconds))
    finally:
        stop_server(process)
    ordered = sorted(samples)
    return {
        "conns": count, "conns_per_s": count / wall,
        "server_conns_per_cpu_s": count / max(server_cpu, 1e-9), "client_conns_per_cpu_s": count / max(client_cpu, 1e-9),
        "p50_us": statistics.median(samples) * 1e6, "p99_us": ordered[int(len(ordered) * 0.99) - 1] * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--round-trips", type=int, default=5000)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(*args.serve))
        return
    with tempfile.TemporaryDirectory(prefix="wasmesh-bench-ca-") as ca_dir:
        ca = CertificateAuthority(Path(ca_dir), "cluster.local")
        client = issue(ca, CLIENT)
        plain = measure(ca_dir, "DISABLE", None, args)
        mtls = measure(ca_dir, "STRICT", client_context_for(client), args)
    print(f"cpu: {os.cpu_count()} cores; server: SecureListener in its own process; {args.seconds:.0f} s per phase")
    print(f"{'':10} {'conns/s':>9} {'server conns/cpu-s':>19} {'client conns/cpu-s':>19} {'keep-alive p50':>15} {'p99':>9}")
    for name, row in (("plaintext", plain), ("mTLS", mtls)):
        print(f"{name:10} {row['conns_per_s']:9.0f} {row['server_conns_per_cpu_s']:19.0f} "
              f"{row['client_conns_per_cpu_s']:19.0f} {row['p50_us']:13.1f}us {row['p99_us']:7.1f}us")
    print(f"mTLS handshakes per server core-second: {mtls['server_conns_per_cpu_s']:.0f}; "
          f"added keep-alive p50: {mtls['p50_us'] - plain['p50_us']:.1f} us")


if __name__ == "__main__":
    main()
