"""The autoscaling signal of the served MiniLM ensemble, from one measurement to the replayed HPA decision.

Builds all-MiniLM-L6-v2 as the text-in, embedding-out ensemble ``minilm_text``, boots the real Triton on it (with
latency summaries), and in one run:

1. measures it with tritongen perf at ``--levels`` (closed loop);
2. writes the Kubernetes bundle from that measurement for ``--slo-p99-ms`` (default: 4x the p99 at the lowest
   level, so the knee falls inside the ladder on any machine) and prints the knee and the derived HPA target;
3. starts a real Prometheus with the bundle's rules, scraping the server like a ServiceMonitor would;
4. drives half the knee, the knee and twice the knee, and prints for each the HPA metric read through the
   prometheus-adapter query, the replica count Kubernetes' HPA rule gives from one replica, and the alerts' states;
5. runs every query of the bundle against Prometheus and lists those that returned nothing.

    .venv/bin/python bench/autoscale_signal.py [--levels 1,2,4,8,16,32] [--slo-p99-ms N]

Rate windows are 10 s and alert ``for`` durations 1/40 of a cluster's, so the run takes minutes, not hours. Each
level is held until Prometheus has scraped a full rate window of it (tritongen/deploy/live.py says how).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ensemble_overhead import SENTENCES, minilm_dir  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", default="1,2,4,8,16,32", help="concurrency ladder of the measurement")
    parser.add_argument("--slo-p99-ms", type=float, help="p99 objective (default: 4x the p99 at the lowest level)")
    parser.add_argument("--measure-s", type=float, default=3.0, help="measured seconds per level of the ladder")
    parser.add_argument("--max-batch-size", type=int, default=16)
    args = parser.parse_args()
    levels = tuple(int(v) for v in args.levels.split(","))

    from tritongen.deploy.live import autoscale_proof, proof_table
    from tritongen.ensemble import build_ensemble
    from tritongen.perf import PerfSpec, perf_from_spec
    from tritongen.server import ServeSpec, server_from_repository
    from tritongen.spec import build_spec_from_options

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = work / "repo"
        texts = work / "sentences.txt"
        texts.write_text("\n".join(SENTENCES) + "\n")
        print("building minilm_text ...", flush=True)
        build_ensemble(
            build_spec_from_options(
                minilm_dir(), name="minilm_text", repo=repo, max_batch_size=args.max_batch_size, max_queue_delay_us=2000
            )
        )
        serve = ServeSpec(
            repo=repo, extra_args=("--metrics-config=summary_latencies=true", "--metrics-interval-ms=500")
        )
        with server_from_repository(serve) as server:

            def perf(loads: tuple[int, ...], load_s: float | None):
                phase = "measure" if load_s is None else "drive"
                timing = (
                    {"duration_s": args.measure_s, "warmup_s": 1.0, "max_windows": 5, "stability_pct": 15.0}
                    if load_s is None  # the measurement
                    else {"duration_s": load_s - 1.0, "warmup_s": 1.0, "max_windows": 3, "stability_pct": 100.0}
                )
                run = perf_from_spec(
                    PerfSpec(
                        model="minilm_text",
                        url=server.grpc_url,
                        concurrency=loads,
                        text_file=texts,
                        repo=None,
                        metrics_url=server.metrics_url,
                        **timing,
                    )
                )
                print(
                    f"  perf {phase} {loads}: "
                    + ", ".join(
                        f"c{p.load:g} {p.throughput_rps:.1f} req/s p99 {p.latency.p99_ms:.1f} ms" for p in run.points
                    ),
                    flush=True,
                )
                return run

            slo = args.slo_p99_ms
            if slo is None:
                first = perf((levels[0],), None).points[0]
                slo = round(4 * first.latency.p99_ms, 1)
                print(f"objective: p99 <= {slo:g} ms (4x the p99 at concurrency {levels[0]})", flush=True)
            proof = autoscale_proof(server, repo, work / "proof", perf=perf, measure_levels=levels, slo_p99_ms=slo)
    print(proof_table(proof))
    t = proof.bundle.thresholds
    half, _, double = proof.levels
    verdict = (
        half.alerts["TritonAboveKnee"] == "inactive"
        and double.alerts["TritonAboveKnee"] == "firing"
        and half.desired_replicas == 1
        and double.desired_replicas >= 2
    )
    print(
        f"target {t.target_in_flight:g} in flight per replica; above-knee alert inactive at 0.5x: "
        f"{half.alerts['TritonAboveKnee'] == 'inactive'}, "
        f"firing at 2x: {double.alerts['TritonAboveKnee'] == 'firing'}; "
        f"replicas 0.5x/1x/2x: {'/'.join(str(lv.desired_replicas) for lv in proof.levels)}"
    )
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
