"""A real Prometheus on this machine, for proving a bundle's queries and alerts against a live tritonserver.

It scrapes one Triton metrics endpoint as the cluster would (``job`` = the bundle's app name, and the
``namespace``/``pod`` labels a ServiceMonitor adds), loads the bundle's ``monitoring/rules.yaml``, and answers
PromQL over its HTTP API. Debian's ``prometheus`` package provides the binary.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TritongenError
from .checks import tool


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


class LocalPrometheus:
    def __init__(self, process: subprocess.Popen, url: str, workdir: Path) -> None:
        self.process, self.url, self.workdir = process, url, workdir

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as err:
            body = json.loads(err.read() or b"{}")
        if body.get("status") != "success":
            raise TritongenError(f"Prometheus rejected {params.get('query', path)!r}", str(body.get("error", body)))
        return body["data"]

    def query(self, expr: str, at_s: float | None = None) -> list[Sample]:
        """An instant query (at ``at_s``, Unix seconds, or now)."""
        params: dict[str, Any] = {"query": expr}
        if at_s is not None:
            params["time"] = f"{at_s:.3f}"
        data = self._get("/api/v1/query", params)
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][1]))]
        return [Sample(r["metric"], float(r["value"][1])) for r in data["result"]]

    def alerts(self, name: str, at_s: float | None = None) -> set[str]:
        """States (``pending``/``firing``) alert ``name`` was in at ``at_s``."""
        return {s.labels["alertstate"] for s in self.query(f'ALERTS{{alertname="{name}"}}', at_s)}

    def targets_up(self) -> bool:
        return any(t["health"] == "up" for t in self._get("/api/v1/targets", {})["activeTargets"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> LocalPrometheus:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prometheus_scraping(
    metrics_hostport: str,
    workdir: Path,
    *,
    job: str,
    namespace: str,
    pod: str,
    rule_files: tuple[Path, ...] = (),
    interval_s: float = 1.0,
    ready_timeout_s: float = 60.0,
) -> LocalPrometheus:
    """Start Prometheus scraping ``metrics_hostport`` every ``interval_s`` (rules evaluated as often); wait until the
    target is up."""
    import yaml

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    interval = f"{int(interval_s * 1000)}ms"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(Path(r).resolve()) for r in rule_files],
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [{"targets": [metrics_hostport], "labels": {"namespace": namespace, "pod": pod}}],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = _free_port()
    log = open(workdir / "prometheus.log", "wb")
    process = subprocess.Popen(
        [
            tool("prometheus", "apt-get install prometheus"),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    prom = LocalPrometheus(process, f"http://127.0.0.1:{port}", workdir)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TritongenError(
                "Prometheus exited at start",
                f"see {workdir / 'prometheus.log'}",
                details=(workdir / "prometheus.log").read_text()[-2000:],
            )
        try:
            if prom.targets_up():
                return prom
        except (OSError, TritongenError):
            pass
        time.sleep(0.5)
    prom.stop()
    raise TritongenError(
        f"Prometheus did not scrape {metrics_hostport} within {ready_timeout_s:g} s",
        f"see {workdir / 'prometheus.log'}",
    )
