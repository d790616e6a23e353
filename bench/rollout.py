"""Roll a model out and back under a closed loop of clients on a real Triton; print what the clients saw.

Builds a 34 MB model (1024 -> 4096 -> 16) as version 1 into a temporary repository, boots tritonserver with
explicit model control, builds version 2 beside it (weights moved slightly: it passes the gate), then, with
``--concurrency`` clients sending back to back the whole time, ``--cycles`` times: a quiet wait, ``tritongen
rollout`` to 2, a quiet wait, ``tritongen rollback`` to 1. Prints, per command and over the cycles:

The commands run as ``python -m tritongen`` in their own process, as a user runs them (in the bench's process
their verify, file reading and gate would take the measuring clients' GIL).

- failed requests (target 0) and answers that are neither version's;
- time from the command to the last answer from the old version, how long the command took (gate included) and
  how long its switch took (from the ``switch:`` progress line to the command's end);
- **p99 switch / p99 steady** (target <= 1.5): requests *sent* during the switch, against requests sent in a
  quiet window of the **same length** just before the command (same clients, same concurrency). Equal windows
  matter: a short burst (the new version's stub starting) is a large share of a short window's slowest 1 %;
- the same ratio for the gate (the candidate is loaded and judged beside the live version);
- **noise floor**: the same ratio between two quiet windows of that length (the one just after the command, once
  the old stub has had ``--quiet-s`` to exit, against the one before): what the machine's noise alone produces.
  On a shared machine a switch ratio within the noise floor says nothing either way. Each ratio is given per
  cycle, as the median of the cycles, and pooled (the p99 of all cycles' windows together: the steadiest figure);
- the server's memory (tritonserver + Python-backend stubs) before and after.

    .venv/bin/python bench/rollout.py [--concurrency 32] [--cycles 3] [--quiet-s 6] [--json out.json]
        [--stub-blas-threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--cycles", type=int, default=3, help="rollout + rollback pairs, one server")
    parser.add_argument("--quiet-s", type=float, default=6.0, help="quiet time before and after each command")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--stub-blas-threads", type=int, default=1, help="the server's ServeSpec.stub_blas_threads (0: numpy's default)"
    )
    args = parser.parse_args()

    import numpy as np
    import torch

    import tritongen
    from tests.conftest import free_ports
    from tritongen.server import ServeSpec, server_from_repository
    from tritongen.testing.closed_loop import ClosedLoop, settled_rss_kb

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
    figures: dict[str, object] = {"concurrency": args.concurrency, "cycles": args.cycles}
    commands: list[dict[str, object]] = []
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
            stub_blas_threads=args.stub_blas_threads,
        )
        with server_from_repository(spec) as server:
            tritongen.build(nets[2], example_inputs=example, name="wide", repo=repo, new_version=True)
            figures["rss_before_mb"] = round(settled_rss_kb(server.pid) / 1024, 1)
            with ClosedLoop(server.grpc_url, "wide", {"x": x}, "output", args.concurrency) as loop:
                for cycle in range(args.cycles):
                    for action, old in (("rollout", 1), ("rollback", 2)):
                        time.sleep(args.quiet_s)
                        start = time.monotonic()
                        switch, end = _command(action, repo, server.grpc_url, Path(work) / "report")
                        commands.append({"action": action, "cycle": cycle, "old": old, "marks": (start, switch, end)})
                time.sleep(args.quiet_s)
            answers = loop.snapshot()
            figures["rss_after_mb"] = round(settled_rss_kb(server.pid) / 1024, 1)
    pooled: dict[str, dict[str, list[float]]] = {"rollout": {}, "rollback": {}}
    for c in commands:
        c.update(_judged(answers, c, refs, args.quiet_s))
        for name, values in c.pop("latencies_ms").items():  # type: ignore[union-attr]
            pooled[str(c["action"])].setdefault(name, []).extend(values)
        del c["marks"]
    for action in ("rollout", "rollback"):
        runs = [c for c in commands if c["action"] == action]
        p99 = {name: float(np.percentile(v, 99)) for name, v in pooled[action].items() if len(v) >= 100}
        figures[action] = {
            "pooled_p99_ms": {name: round(v, 1) for name, v in p99.items()},
            "pooled_p99_ratio": round(p99["switch"] / p99["steady"], 2),
            "pooled_gate_p99_ratio": round(p99["gate"] / p99["steady"], 2) if "gate" in p99 else None,
            "pooled_noise_p99_ratio": round(p99["after"] / p99["steady"], 2),
            "runs": runs,
            "failed": sum(int(r["failed"]) for r in runs),  # type: ignore[call-overload]
            "unknown_answers": sum(int(r["unknown_answers"]) for r in runs),  # type: ignore[call-overload]
            **{
                f"{key}_median": round(statistics.median(float(r[key]) for r in runs), 2)  # type: ignore[arg-type]
                for key in ("p99_ratio", "gate_p99_ratio", "noise_p99_ratio", "switch_s", "command_s")
                if all(r.get(key) is not None for r in runs)
            },
        }
    print(json.dumps(figures, indent=2))
    print("(one machine; figures are as noisy as the machine: compare the switch ratio with the noise floor)")
    for c in commands:
        print(
            f"{c['action']} #{c['cycle']}: {c['failed']} failed of {c['requests']}; old version's last answer "
            f"{c['to_all_new_s']} s after the command (command {c['command_s']} s, switch {c['switch_s']} s); "
            f"p99 switch/steady {c['p99_switch_ms']}/{c['p99_steady_ms']} ms = {c['p99_ratio']}  "
            f"(gate {c['gate_p99_ratio']}, noise floor {c['noise_p99_ratio']})"
        )
    for action in ("rollout", "rollback"):
        f = figures[action]
        assert isinstance(f, dict)
        print(
            f"{action}: {args.cycles} cycles pooled: p99 switch/steady {f['pooled_p99_ratio']}, gate/steady "
            f"{f['pooled_gate_p99_ratio']}, noise floor {f['pooled_noise_p99_ratio']}; median of the cycles' "
            f"ratios {f.get('p99_ratio_median')} (noise floor {f.get('noise_p99_ratio_median')}); {f['failed']} failed"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def _command(action: str, repo: Path, url: str, out: Path) -> tuple[float, float]:
    """Run ``tritongen rollout``/``rollback`` as a user would, in its own process (in this one its verify, file
    reading and gate would hold the measuring clients' GIL); (when its ``switch:`` line came, when it ended)."""
    import os
    import subprocess

    argv = [sys.executable, "-m", "tritongen", action, str(repo), "wide", "--url", url]
    argv += ["--to-version", "2", "--out", str(out)] if action == "rollout" else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stderr is not None
    switch, lines = None, []
    for line in process.stderr:
        lines.append(line)
        if switch is None and line.startswith("switch:"):
            switch = time.monotonic()
    code = process.wait()
    if code != 0 or switch is None:
        raise SystemExit(f"{action} failed (exit {code}):\n{''.join(lines)}")
    return switch, time.monotonic()


def _judged(answers: list, command: dict, refs: dict, quiet_s: float) -> dict[str, object]:
    """Figures of one command: windows by the time a request was sent; steady windows as long as the switch."""
    from tritongen.testing.closed_loop import percentile_ms, which

    start, switch, end = command["marks"]
    length = min(end - switch, quiet_s)  # the quiet windows are as long as the switch (at most the quiet time)

    def sent(lo: float, hi: float) -> list:
        return [a for a in answers if lo <= a.sent_s < hi]

    window = sent(start, end)
    steady, after = sent(start - length, start), sent(end + quiet_s - length, end + quiet_s)
    during, gate = sent(switch, end), sent(start, switch)
    old = command["old"]
    last_old = max(
        (a.received_s for a in window if a.output is not None and which(a.output, refs, 1e-4) == old), default=start
    )
    p99 = {name: percentile_ms(w, 99) for name, w in (("steady", steady), ("switch", during), ("after", after))}

    def ratio(value: float) -> float | None:
        return round(value / p99["steady"], 2) if value == value else None  # NaN: an empty window (no gate)

    return {
        "requests": len(window),
        "failed": sum(1 for a in window if a.output is None),
        "unknown_answers": sum(1 for a in window if a.output is not None and which(a.output, refs, 1e-4) is None),
        "command_s": round(end - start, 2),
        "switch_s": round(end - switch, 2),
        "window_s": round(length, 2),
        "to_all_new_s": round(last_old - start, 2),
        "p99_steady_ms": round(p99["steady"], 1),
        "p99_switch_ms": round(p99["switch"], 1),
        "p99_ratio": ratio(p99["switch"]),
        "gate_p99_ratio": ratio(percentile_ms(gate, 99)) if len(gate) >= 100 else None,
        "noise_p99_ratio": ratio(p99["after"]),
        "requests_switch_steady": [len(during), len(steady)],
        "old_answers_after_command": sum(
            1 for a in sent(end, end + quiet_s) if a.output is not None and which(a.output, refs, 1e-4) == old
        ),
        "latencies_ms": {
            name: [(a.received_s - a.sent_s) * 1e3 for a in w if a.output is not None]
            for name, w in (("steady", steady), ("switch", during), ("after", after), ("gate", gate))
        },
    }


if __name__ == "__main__":
    sys.exit(main())
