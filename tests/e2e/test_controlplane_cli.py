"""`wasmesh controlplane --config-dir` as its own process: announces its ports, serves the API
from the folder's manifests, and exits cleanly on SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_controlplane_process_serves_the_folder_and_stops_on_sigterm() -> None:
    command = [sys.executable, "-m", "controlplane.cli._controlplane", "controlplane",
               "--config-dir", str(ROOT / "examples" / "manifests" / "bookinfo"),
               "--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        match = re.match(r"wasmesh control plane: xDS 127\.0\.0\.1:(\d+), API 127\.0\.0\.1:(\d+)$", banner.strip())
        assert match, banner
        api = f"http://127.0.0.1:{match.group(2)}"
        with urllib.request.urlopen(f"{api}/api/v1/resources?kind=vs", timeout=10) as reply:
            names = sorted(item["metadata"]["name"] for item in json.loads(reply.read())["items"])
        assert names == ["details", "productpage", "ratings", "reviews"]
        with urllib.request.urlopen(f"{api}/api/v1/analyze", timeout=10) as reply:
            assert json.loads(reply.read())["errors"] == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_controlplane_refuses_a_missing_folder(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "controlplane.cli._controlplane", "controlplane",
                             "--config-dir", str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "is not a directory" in result.stderr
