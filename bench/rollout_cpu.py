"""Where the CPU goes in a rollout's steps: CPU seconds per process (tritonserver, each Python-backend stub) and
wall time per step, on a real Triton serving the 34 MB model of ``bench/rollout.py``, idle or under
``--concurrency`` closed-loop clients (then also the clients' p50/p99 per step).

The steps are the ones ``tritongen rollout`` takes (see :mod:`tritongen.deploy.rollout`): the candidate loaded
from the request's files, its unload (Triton finishes it in the background: its index never lists a model
loaded from request content, so its teardown's CPU shows in the quiet step after it), then the switch (the model loaded
with ``specific [2]``) until only version 2 is READY, and a quiet wait for the old stub's exit. CPU figures are
read from ``/proc`` (utime + stime of the server's process tree): robust to other load on the machine, unlike
wall times and latencies.

    .venv/bin/python bench/rollout_cpu.py [--concurrency 0] [--stub-blas-threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TICKS = os.sysconf("SC_CLK_TCK")


def process_tree_cpu_s(root: int) -> dict[str, float]:
    """{"name(pid)": CPU seconds} for ``root`` and its descendants."""
    table: dict[int, tuple[int, float, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            cmd = Path(f"/proc/{entry}/cmdline").read_text().replace("\0", " ")
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS, cmd)
    keep, grew = {root}, True
    while grew:
        found = {pid for pid, (parent, _, _) in table.items() if parent in keep} - keep
        keep, grew = keep | found, bool(found)
    return {f"{_label(table[p][2])}({p})": table[p][1] for p in keep if p in table}


def _label(cmd: str) -> str:
    return "stub" if "triton_python_backend_stub" in cmd else "tritonserver" if "tritonserver" in cmd else cmd[:30]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=0, help="closed-loop clients (0: idle server)")
    parser.add_argument(
        "--stub-blas-threads", type=int, default=1, help="the server's ServeSpec.stub_blas_threads (0: numpy's default)"
    )
    args = parser.parse_args()

    import numpy as np
    import torch

    import tritongen
    from tests.conftest import free_ports
    from tritongen.client import Triton
    from tritongen.deploy.rollout import CANDIDATE_SUFFIX
    from tritongen.server import ServeSpec, server_from_repository
    from tritongen.testing.closed_loop import ClosedLoop, percentile_ms

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 16)).eval()
    example = {"x": torch.randn(2, 1024)}
    x = np.random.default_rng(3).standard_normal((1, 1024)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="tritongen-bench-rollout-cpu-") as work:
        repo = Path(work) / "repo"
        tritongen.build(net, example_inputs=example, name="wide", repo=repo)
        http, grpc, metrics = free_ports(3)
        spec = ServeSpec(
            repo=repo,
            http_port=http,
            grpc_port=grpc,
            metrics_port=metrics,
            model_control="explicit",
            stub_blas_threads=args.stub_blas_threads,
        )
        with (
            server_from_repository(spec) as server,
            Triton(server.grpc_url, "grpc", 60, server.admin_headers("grpc")) as triton,
        ):
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(3e-4 * torch.randn_like(p))
            tritongen.build(net, example_inputs=example, name="wide", repo=repo, new_version=True)
            config = triton.model_config("wide")
            candidate = "wide" + CANDIDATE_SUFFIX
            files = {
                str(p.relative_to(repo / "wide")): p.read_bytes()
                for p in sorted((repo / "wide").rglob("*"))
                if p.is_file() and p.parts[-2] != "tritongen" and (p.parts[-2] == "2" or p.parts[-2] == "warmup")
            }

            def pinned(name: str) -> dict:
                return {**config, "name": name, "version_policy": {"specific": {"versions": [2]}}}

            def until(check: Callable[[], bool]) -> Callable[[], None]:
                def wait() -> None:
                    while not check():
                        time.sleep(0.05)

                return wait

            steps: list[tuple[str, Callable[[], None]]] = [
                ("quiet 2 s", lambda: time.sleep(2)),
                ("candidate load (files sent)", lambda: triton.load(candidate, pinned(candidate), 300, files)),
                ("candidate unload call", lambda: triton.unload(candidate)),
                ("quiet 2 s", lambda: time.sleep(2)),
                ("switch load (specific [2])", lambda: triton.load("wide", pinned("wide"), 300)),
                ("old version drained", until(lambda: triton.ready_versions("wide") == [2])),
                ("quiet 2 s (old stub exits)", lambda: time.sleep(2)),
            ]
            loop = ClosedLoop(server.grpc_url, "wide", {"x": x}, "output", args.concurrency)
            if args.concurrency:
                loop.__enter__()
                time.sleep(3)
            marks = []
            for name, step in steps:
                before, start = process_tree_cpu_s(server.pid), time.monotonic()
                step()
                end, after = time.monotonic(), process_tree_cpu_s(server.pid)
                used = {k: round(v - before.get(k, 0.0), 2) for k, v in after.items() if v - before.get(k, 0.0) >= 0.01}
                marks.append((name, start, end))
                print(f"{name}: wall {end - start:.2f} s; CPU s {used}", flush=True)
            if args.concurrency:
                loop.stop()
                answers = loop.snapshot()
                for name, start, end in marks:
                    window = [a for a in answers if start <= a.sent_s < end]
                    if len(window) >= 100:
                        print(
                            f"  {name}: {len(window)} requests, p50 {percentile_ms(window, 50):.1f} ms, "
                            f"p99 {percentile_ms(window, 99):.1f} ms"
                        )
    print(f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (others' work inflates wall times)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
