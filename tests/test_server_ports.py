"""``tritongen.server.ports``: where a local tritonserver serves its metrics, read from its own command line."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tritongen.server import ports


@pytest.mark.parametrize(
    "argv, found",
    [
        (["--metrics-port=40123", "--metrics-address=127.0.0.1"], "127.0.0.1:40123"),
        (["--metrics-port", "40124"], "127.0.0.1:40124"),  # the address it was found at
        (["--metrics-port=40125", "--metrics-address=0.0.0.0"], "127.0.0.1:40125"),
        (["--metrics-port=40126", "--metrics-address=::1"], "[::1]:40126"),
        ([], "127.0.0.1:8002"),  # Triton's default
        (["--metrics-port=40127", "--allow-metrics=false"], None),
        (["--metrics-port=99999"], None),
        (["--metrics-port=x"], None),
    ],
)
def test_the_metrics_address_is_the_servers_own_metrics_port(monkeypatch, argv, found):
    """perf read no server gauges from a server tritongen serve started on ports of its own: it guessed port 8002
    only beside 8000/8001."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *argv])
    try:
        deadline = time.monotonic() + 10
        while b"sleep(60)" not in Path(f"/proc/{child.pid}/cmdline").read_bytes():  # empty until its exec
            assert time.monotonic() < deadline
            time.sleep(0.01)
        monkeypatch.setattr(ports, "server_found_at", lambda url: ports.FoundServer(child.pid, "127.0.0.1:41000"))
        assert ports.metrics_address_at("localhost:41000") == found
    finally:
        child.kill()
        child.wait()
    monkeypatch.setattr(ports, "server_found_at", lambda url: None)
    assert ports.metrics_address_at("localhost:41000") is None  # no tritonserver of this user's there


@pytest.mark.server
def test_a_served_repository_on_ports_of_its_own_is_found_with_its_metrics(tiny_server):
    assert ports.metrics_address_at(tiny_server.grpc_url) == tiny_server.metrics_url
    assert ports.metrics_address_at(tiny_server.http_url) == tiny_server.metrics_url
