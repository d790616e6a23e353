"""CPU seconds one Python-backend stub's start costs (what a rollout's switch adds on the serving cores), per
variant of the stub's environment and of the generated runner's ONNX Runtime options, on a real Triton serving the
34 MB model of ``bench/rollout.py`` (idle server, explicit model control).

Each variant boots one server, then ``--loads`` times unloads the model, loads it again and, after a 1 s quiet wait
(threads that spin after start are counted), reads the new stub's utime + stime from ``/proc`` and the server's
own CPU over the load. CPU figures are robust to other load on the machine (wall times are not).

    .venv/bin/python bench/stub_start_cpu.py [--loads 5] [--variants default blas1 ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from rollout_cpu import process_tree_cpu_s  # noqa: E402

# name -> (stub_blas_threads, lines added to the runner after its SessionOptions are made). The runner turns
# ONNX Runtime's spinning off itself (since this bench measured it); "spin" puts it back (ORT warns, overwrites).
VARIANTS: dict[str, tuple[int, tuple[str, ...]]] = {
    "default": (0, ()),
    "blas1": (1, ()),
    "blas1+intra1": (1, ("options.intra_op_num_threads = 1",)),
    "blas1+nospin": (1, ('options.add_session_config_entry("session.intra_op.allow_spinning", "0")',)),
    "blas1+spin": (1, ('options.add_session_config_entry("session.intra_op.allow_spinning", "1")',)),
    "blas1+basic": (1, ("options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC",)),
    "blas1+noopt": (1, ("options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL",)),
}
ANCHOR = "        options.log_severity_level = 3\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()

    import torch

    import tritongen
    from tests.conftest import free_ports
    from tritongen.client import Triton
    from tritongen.server import ServeSpec, server_from_repository

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 16)).eval()
    with tempfile.TemporaryDirectory(prefix="tritongen-bench-stub-start-") as work:
        repo = Path(work) / "repo"
        tritongen.build(net, example_inputs={"x": torch.randn(2, 1024)}, name="wide", repo=repo)
        runner = repo / "wide" / "1" / "model.py"
        original = runner.read_text()
        assert ANCHOR in original, "the runner's SessionOptions line moved: update ANCHOR"
        for name in args.variants:
            blas_threads, lines = VARIANTS[name]
            runner.write_text(original.replace(ANCHOR, ANCHOR + "".join(f"        {x}\n" for x in lines)))
            http, grpc, metrics = free_ports(3)
            spec = ServeSpec(
                repo=repo,
                http_port=http,
                grpc_port=grpc,
                metrics_port=metrics,
                model_control="explicit",
                stub_blas_threads=blas_threads,
            )
            stubs, server_cpu, walls = [], [], []
            with (
                server_from_repository(spec) as server,
                Triton(server.grpc_url, "grpc", 60, server.admin_headers("grpc")) as triton,
            ):
                for _ in range(args.loads):
                    triton.unload("wide")
                    while any("stub" in k for k in process_tree_cpu_s(server.pid)):
                        time.sleep(0.05)  # the old stub has exited
                    before, start = process_tree_cpu_s(server.pid), time.monotonic()
                    triton.load("wide", timeout_s=300)
                    walls.append(time.monotonic() - start)
                    time.sleep(1.0)
                    after = process_tree_cpu_s(server.pid)
                    stubs += [v for k, v in after.items() if k.startswith("stub")]
                    server_cpu += [v - before[k] for k, v in after.items() if k.startswith("tritonserver")]
            print(
                f"{name:14} stub start CPU-s: mean {statistics.mean(stubs):.3f} "
                f"(min {min(stubs):.2f}, max {max(stubs):.2f}, n {len(stubs)}); server over the load "
                f"{statistics.mean(server_cpu):.3f}; load wall {statistics.median(walls):.2f} s (median)",
                flush=True,
            )
    print(f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (others' work inflates wall times)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
