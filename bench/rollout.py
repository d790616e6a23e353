"""Roll a model out and back under a closed loop of clients on a real Triton; print what the clients saw.

Builds a 34 MB model (1024 -> 4096 -> 16) as version 1 into a temporary repository, boots tritonserver with
explicit model control, builds version 2 beside it (weights moved slightly: it passes the gate), then, with
``--concurrency`` clients sending back to back the whole time: a steady window, ``tritongen rollout`` to 2, a
steady window, ``tritongen rollback``, a steady window. Prints, measured in that one run:

- failed requests during the rollout and the rollback (target 0);
- time from the command to all answers from the new version (the last answer from the old one), and how long
  the command took (the gate included);
- p99 during the switch (requests sent between the switch's start and the command's end) / p99 steady (the
  window before the command) (target <= 1.5);
- the server's memory (tritonserver + Python-backend stubs) before and after.

    .venv/bin/python bench/rollout.py [--concurrency 32] [--steady-s 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--steady-s", type=float, default=5.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    import numpy as np
    import torch

    import tritongen
    from tests.conftest import free_ports
    from tritongen.testing.closed_loop import ClosedLoop, percentile_ms, settled_rss_kb, which
    from tritongen.server import ServeSpec, server_from_repository

    def net(moved: bool) -> torch.nn.Module:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 16)).eval()
        if moved:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(3e-4 * torch.randn_like(p))
        return model

    nets = {1: net(False), 2: net(True)}
    example = {"x": torch.randn(2, 1024)}
    x = np.random.default_rng(3).standard_normal((1, 1024)).astype(np.float32)
    with torch.no_grad():
        refs = {v: n(torch.from_numpy(x)).numpy() for v, n in nets.items()}
    figures: dict[str, object] = {"concurrency": args.concurrency}
    with tempfile.TemporaryDirectory(prefix="tritongen-bench-rollout-") as work:
        repo = Path(work) / "repo"
        tritongen.build(nets[1], example_inputs=example, name="wide", repo=repo)
        http, grpc, metrics = free_ports(3)
        spec = ServeSpec(
            repo=repo,
            http_port=http,
            grpc_port=grpc,
            metrics_port=metrics,
            model_control="explicit",
            ready_timeout_s=180,
        )
        with server_from_repository(spec) as server:
            tritongen.build(nets[2], example_inputs=example, name="wide", repo=repo, new_version=True)
            figures["rss_before_mb"] = settled_rss_kb(server.pid) / 1024
            events: list[tuple[float, str]] = []
            marks: dict[str, float] = {}

            def progress(line: str) -> None:
                events.append((time.monotonic(), line))

            with ClosedLoop(server.grpc_url, "wide", {"x": x}, "output", args.concurrency) as loop:
                time.sleep(args.steady_s)
                marks["rollout"] = time.monotonic()
                tritongen.rollout(
                    repo, "wide", to_version=2, url=server.grpc_url, progress=progress, out=Path(work) / "report"
                )
                marks["rollout_end"] = time.monotonic()
                time.sleep(args.steady_s)
                marks["rollback"] = time.monotonic()
                tritongen.rollback(repo, "wide", url=server.grpc_url, progress=progress)
                marks["rollback_end"] = time.monotonic()
                time.sleep(args.steady_s)
            answers = loop.snapshot()
            figures["rss_after_mb"] = settled_rss_kb(server.pid) / 1024
    switches = [t for t, line in events if line.startswith("switch:")]
    for phase, old, start, switch, end, after in (
        ("rollout", 1, marks["rollout"], switches[0], marks["rollout_end"], marks["rollback"]),
        ("rollback", 2, marks["rollback"], switches[1], marks["rollback_end"], float("inf")),
    ):
        window = [a for a in answers if start <= a.sent_s <= end]
        steady = [a for a in answers if start - args.steady_s <= a.sent_s < start]
        during = [a for a in answers if switch <= a.sent_s <= end]
        last_old = max(
            (a.received_s for a in window if a.output is not None and which(a.output, refs, 1e-4) == old), default=start
        )
        figures[phase] = {
            "requests": len(window),
            "failed": sum(1 for a in window if a.output is None),
            "unknown_answers": sum(1 for a in window if a.output is not None and which(a.output, refs, 1e-4) is None),
            "command_s": round(end - start, 2),
            "switch_s": round(end - switch, 2),
            "to_all_new_s": round(last_old - start, 2),
            "p99_steady_ms": round(percentile_ms(steady, 99), 1),
            "p99_switch_ms": round(percentile_ms(during, 99), 1),
            "p99_ratio": round(percentile_ms(during, 99) / percentile_ms(steady, 99), 2),
            "old_answers_after_command": sum(
                1
                for a in answers
                if end < a.sent_s < after and a.output is not None and which(a.output, refs, 1e-4) == old
            ),
        }
    print(json.dumps(figures, indent=2))
    for phase in ("rollout", "rollback"):
        f = figures[phase]
        assert isinstance(f, dict)
        print(
            f"{phase}: {f['failed']} failed of {f['requests']} requests; all answers from the new version "
            f"{f['to_all_new_s']} s after the command (command {f['command_s']} s, switch {f['switch_s']} s); "
            f"p99 switch/steady {f['p99_switch_ms']}/{f['p99_steady_ms']} ms = {f['p99_ratio']}"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
