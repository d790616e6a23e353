"""Steady serving per variant of the generated runner's ONNX Runtime options: ``--concurrency`` closed-loop clients
on the 34 MB model of ``bench/rollout.py``, one server per variant and round, variants alternating within each
round. Prints requests/s, p50/p99 and the CPU (cores, and microseconds per request) of the stub and of
tritonserver, read from ``/proc``. CPU per request is the robust figure on a shared machine; requests/s and
latencies move with whatever else runs, so compare variants round by round.

    .venv/bin/python bench/stub_steady_cpu.py [--rounds 3] [--measure-s 8] [--variants blas1+spin blas1 ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from rollout_cpu import process_tree_cpu_s  # noqa: E402
from stub_start_cpu import ANCHOR, VARIANTS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--measure-s", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--variants", nargs="+", default=["blas1+spin", "blas1", "blas1+intra1"], choices=list(VARIANTS)
    )
    args = parser.parse_args()

    import numpy as np
    import torch

    import tritongen
    from tests.conftest import free_ports
    from tritongen.server import ServeSpec, server_from_repository
    from tritongen.testing.closed_loop import ClosedLoop, percentile_ms

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 16)).eval()
    x = np.random.default_rng(3).standard_normal((1, 1024)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="tritongen-bench-stub-steady-") as work:
        repo = Path(work) / "repo"
        tritongen.build(net, example_inputs={"x": torch.randn(2, 1024)}, name="wide", repo=repo)
        runner = repo / "wide" / "1" / "model.py"
        original = runner.read_text()
        for r in range(args.rounds):
            for name in args.variants:
                blas_threads, lines = VARIANTS[name]
                runner.write_text(original.replace(ANCHOR, ANCHOR + "".join(f"        {x}\n" for x in lines)))
                http, grpc, metrics = free_ports(3)
                spec = ServeSpec(
                    repo=repo, http_port=http, grpc_port=grpc, metrics_port=metrics, stub_blas_threads=blas_threads
                )
                with server_from_repository(spec) as server:
                    with ClosedLoop(server.grpc_url, "wide", {"x": x}, "output", args.concurrency) as loop:
                        time.sleep(3)
                        before, start = process_tree_cpu_s(server.pid), time.monotonic()
                        time.sleep(args.measure_s)
                        after, end = process_tree_cpu_s(server.pid), time.monotonic()
                        loop.stop()
                        window = [a for a in loop.snapshot() if start <= a.sent_s < end and a.output is not None]
                rate = len(window) / (end - start)
                cpu = {k.split("(")[0]: (v - before.get(k, 0.0)) / (end - start) for k, v in after.items()}
                shown = ", ".join(f"{k} {v:.2f} cores = {v / rate * 1e6:.0f} us/request" for k, v in cpu.items())
                print(
                    f"round {r + 1} {name:14} {rate:7.1f} req/s p50 {percentile_ms(window, 50):6.1f} ms "
                    f"p99 {percentile_ms(window, 99):6.1f} ms; {shown}",
                    flush=True,
                )
    print(f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (others' work moves req/s and p99)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
