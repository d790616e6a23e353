"""A real Prometheus on this machine, for proving a bundle's queries and alerts against a live tritonserver.

It scrapes one Triton metrics endpoint as the cluster would (``job`` = the bundle's app name, and the
``namespace``/``pod`` labels a ServiceMonitor adds), loads the bundle's ``monitoring/rules.yaml``, and answers
PromQL over its HTTP API. Debian's ``prometheus`` package provides the binary.
"""

from __future__ import annotations

import json
import math
import re
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
from .monitoring import label_value

MAX_ANSWER_BYTES = 64 << 20  # of one API answer, read whole: the queries here select a few series


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
                raw = response.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as err:
            raw = err.read(MAX_ANSWER_BYTES + 1) or b"{}"
        if len(raw) > MAX_ANSWER_BYTES:
            raise TritongenError(
                f"Prometheus answered {params.get('query', path)!r} with more than {MAX_ANSWER_BYTES >> 20} MiB",
                "select fewer series or a shorter range",
            )
        body = json.loads(raw)
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

    def samples(self, selector: str, lookback_s: float, at_s: float | None = None) -> list[tuple[float, float]]:
        """The raw samples (timestamp in Unix seconds, value) of the one series ``selector`` matches, over the
        ``lookback_s`` before ``at_s`` (or now): one per successful scrape."""
        params: dict[str, Any] = {"query": f"{selector}[{max(1, math.ceil(lookback_s))}s]"}
        if at_s is not None:
            params["time"] = f"{at_s:.3f}"
        result = self._get("/api/v1/query", params)["result"]
        if len(result) > 1:
            raise TritongenError(f"{selector!r} matches {len(result)} series", "select one series")
        return [(float(t), float(v)) for t, v in result[0]["values"]] if result else []

    def query_range(self, expr: str, start_s: float, end_s: float, step_s: float) -> list[int]:
        """A range query, as a dashboard sends it: the number of points of each series it returns."""
        params = {"query": expr, "start": f"{start_s:.3f}", "end": f"{end_s:.3f}", "step": f"{step_s:g}"}
        data = self._get("/api/v1/query_range", params)
        return [len(r["values"]) for r in data["result"]]

    def rules_evaluated_s(self) -> float:
        """When the oldest rule group was last evaluated (Unix seconds; 0 before the first evaluation)."""
        groups = self._get("/api/v1/rules", {})["groups"]
        stamps = [_unix_s(g.get("lastEvaluation", "")) for g in groups]
        return min(stamps, default=0.0)

    def alerts(self, name: str, at_s: float | None = None) -> set[str]:
        """States (``pending``/``firing``) alert ``name`` was in at ``at_s``."""
        return {s.labels["alertstate"] for s in self.query(f"ALERTS{{alertname={label_value(name)}}}", at_s)}

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


def _unix_s(rfc3339: str) -> float:
    """Prometheus's RFC 3339 timestamps (nanoseconds, ``Z``) in Unix seconds; 0 for its zero time or none."""
    from datetime import datetime

    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", rfc3339)
    if not match:
        return 0.0
    whole = datetime.fromisoformat(match[1] + ("+00:00" if match[3] == "Z" else match[3])).timestamp()
    return max(0.0, whole + float(match[2] or 0.0))


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
    """Start Prometheus scraping ``metrics_hostport`` every ``interval_s`` (rules evaluated as often, a scrape given
    the whole interval to answer); wait until the target is up."""
    import yaml

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    interval = f"{int(interval_s * 1000)}ms"
    config = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
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
