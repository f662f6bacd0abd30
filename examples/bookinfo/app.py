"""The bookinfo services of the demo, each a small stdlib HTTP server on 127.0.0.1.

One file runs any of them: `python app.py reviews --version v3 --port P --mesh-port M`. A service
that calls others does so through its sidecar's outbound listener (`--mesh-port`), naming the
service in the Host header as it would in Kubernetes, and passes on `end-user` and the tracing
headers so that routing by user and traces work across hops. Every answer says which version
produced it, so the demo can count where traffic went.
"""

from __future__ import annotations

import argparse
import http.client
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROPAGATED = ("end-user", "x-request-id", "traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid",
              "x-b3-parentspanid", "x-b3-sampled")
CALL_TIMEOUT_S = 5.0
STARS = {"v2": "black", "v3": "red"}


class Calls:
    """Outbound calls through the local sidecar: `Host` picks the service, the sidecar the endpoint."""

    def __init__(self, mesh_port: int) -> None:
        self.mesh_port = mesh_port

    def get(self, service: str, path: str, incoming: Any) -> tuple[int, Any, float]:
        """(status, decoded JSON body or error text, seconds taken); never raises."""
        headers = {"host": f"{service}:9080"}
        headers.update({name: incoming[name] for name in PROPAGATED if incoming.get(name)})
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.mesh_port, timeout=CALL_TIMEOUT_S)
        try:
            connection.request("GET", path, headers=headers)
            reply = connection.getresponse()
            body = reply.read()
            status = reply.status
        except (OSError, http.client.HTTPException) as err:
            return 0, f"{service} unreachable: {err}", time.monotonic() - started
        finally:
            connection.close()
        taken = time.monotonic() - started
        if status != 200:
            return status, f"{service} answered {status}: {body[:80].decode(errors='replace')}", taken
        try:
            return status, json.loads(body), taken
        except ValueError:
            return 0, f"{service} sent invalid JSON", taken


def details(version: str, calls: Calls | None, headers: Any) -> tuple[int, Any]:
    return 200, {"id": 0, "author": "William Shakespeare", "year": 1595, "type": "paperback",
                 "pages": 200, "publisher": "PublisherA", "language": "English", "version": version}


def ratings(version: str, calls: Calls | None, headers: Any) -> tuple[int, Any]:
    return 200, {"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}, "version": version}


def reviews(version: str, calls: Calls | None, headers: Any) -> tuple[int, Any]:
    body: dict[str, Any] = {"id": 0, "version": version, "reviews": [
        {"reviewer": "Reviewer1", "text": "An extremely entertaining play by Shakespeare."},
        {"reviewer": "Reviewer2", "text": "Absolutely fun and entertaining."}]}
    if version in STARS and calls is not None:
        status, answer, taken = calls.get("ratings", "/ratings/0", headers)
        body["ratings"] = {"status": status, "seconds": round(taken, 3), "color": STARS[version],
                           **({"stars": answer["ratings"]} if status == 200 else {"error": answer})}
    return 200, body


def productpage(version: str, calls: Calls | None, headers: Any) -> tuple[int, Any]:
    assert calls is not None
    page: dict[str, Any] = {"product": "The Comedy of Errors", "version": version,
                            "user": headers.get("end-user", "")}
    for service, path in (("details", "/details/0"), ("reviews", "/reviews/0")):
        status, answer, taken = calls.get(service, path, headers)
        page[service] = answer if status == 200 else {"error": answer, "status": status}
        page[f"{service}_seconds"] = round(taken, 3)
    return 200, page


SERVICES = {"details": details, "ratings": ratings, "reviews": reviews, "productpage": productpage}


def handler(service: str, version: str, calls: Calls | None) -> type[BaseHTTPRequestHandler]:
    answer = SERVICES[service]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = f"bookinfo-{service}"

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            if self.path == "/health":
                status, body = 200, {"service": service, "version": version}
            else:
                status, body = answer(version, calls, self.headers)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("x-bookinfo", f"{service}-{version}")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", choices=sorted(SERVICES))
    parser.add_argument("--version", default="v1")
    parser.add_argument("--port", type=int, required=True, help="port to serve on (127.0.0.1)")
    parser.add_argument("--mesh-port", type=int, default=0, help="the sidecar's outbound listener")
    args = parser.parse_args(argv)
    calls = Calls(args.mesh_port) if args.mesh_port else None
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(args.service, args.version, calls))
    server.daemon_threads = True
    print(f"{args.service} {args.version} on 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
