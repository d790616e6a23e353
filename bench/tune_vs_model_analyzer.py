"""tritongen tune vs NVIDIA Model Analyzer: best throughput under the same p99 bound, and search time.

Both search the same model (SmallConvNet, Python backend + ONNX Runtime, CPU) over the same space (instance
count up to --max-instances, max batch size up to --max-batch, concurrency up to --max-concurrency) under the
same p99 bound. Model Analyzer runs in its own virtual environment (created here on first use, so its pins
never touch .venv) in ``--triton-launch-mode local`` with wrappers that start this project's tritonserver and
perf_analyzer. Its search time is its wall time; tune's includes booting its server.

Because the two searches measure with different load generators, both winners are then measured again in
one server with the same tool (perf_analyzer, alternating rounds, ``--rounds`` of ``--round-s`` each; each round
measures both, so each round gives a throughput ratio and the spread of those ratios is printed), twice:

- as chosen: each at the concurrency its search chose (tune: its confirmed operating point, the concurrency its
  written figure stands on). A search may have chosen a load whose p99 breaks the bound when measured again;
  the rounds over the bound are counted.
- at the load that holds the bound: each at the highest concurrency (<= --max-concurrency) at which its p99
  holds the bound, found by re-measurement: from its chosen concurrency (held when its median p99 over the
  as-chosen rounds did), doubling up to the first level that breaks it, else bisecting down towards 1, then
  bisecting between the two (``--max-probes`` perf_analyzer measurements of ``--probe-s`` each; a probe holds
  when its p99 is within ``--probe-margin`` of the bound, since a level that sits at the bound in one probe
  breaks it in half the rounds after). The same rule for both winners, so neither figure comes from a load that
  breaks the bound both were given.

- capacity at the bound: what each config serves at most with its p99 within the bound, whatever concurrency
  either search chose. Each of ``--capacity-rounds`` rounds measures both winners (the order alternating) on one
  shared ladder of ``--capacity-levels`` concurrencies (from half the lower chosen concurrency to 1.5x the higher),
  ``--capacity-s`` each; a config's capacity in a round is its highest throughput at any level whose p99 held the
  bound. The level is decided per round, so one lucky probe cannot put a config at a load that breaks the bound
  in every round after (seen with the load that holds the bound above); the ratio compares the configs, not the
  concurrencies the searches picked.

Each comparison ends with a verdict against the target, from the median of the per-round ratios and its 95%
bootstrap interval: met "clear of the noise" only when the whole interval lies at or above the target.
Targets (issues 5 and 17): throughput >= 1.0x, search time <= 0.25x.

Where Model Analyzer cannot be run (its environment is missing and may not be installed), ``--ma-winner`` gives
the config and concurrency an earlier Model Analyzer run chose and ``--ma-search-s`` its search time: that config
is then re-measured beside tune's, and the search-time ratio uses the given time (say so when reporting).

    .venv/bin/python bench/tune_vs_model_analyzer.py [--max-p99-ms 10] [--max-instances 2] [--max-batch 16]
    .venv/bin/python bench/tune_vs_model_analyzer.py --ma-winner instances=1,delay_us=500,max_batch=16,concurrency=32 \
        --ma-search-s 888 [--rounds 10] [--round-s 5] [--probe-s 5] [--probe-margin 0.95] [--max-probes 5]
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.ratios import verdict  # noqa: E402  (after the path is set)

MA_VERSION = "1.58.0"


def ma_venv() -> Path:
    from tritongen.layout import cache_root

    venv = cache_root() / "venv-model-analyzer"
    if not (venv / "bin" / "model-analyzer").exists():
        print(f"creating {venv} with triton-model-analyzer=={MA_VERSION} ...", flush=True)
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"triton-model-analyzer=={MA_VERSION}"], check=True)
    return venv


def wrappers(work: Path) -> tuple[Path, Path]:
    """Scripts Model Analyzer can start as 'tritonserver' and 'perf_analyzer'."""
    from tritongen.perf.perf_analyzer import find_perf_analyzer
    from tritongen.server import find_server_binary

    install = find_server_binary()
    env = install.environ({})
    server = work / "tritonserver"
    exports = "".join(
        f"export {k}={shlex.quote(v)}${{{k}:+:${k}}}\n"
        if k in ("PATH", "LD_LIBRARY_PATH")
        else f"export {k}={shlex.quote(v)}\n"
        for k, v in env.items()
    )
    command = " ".join(map(shlex.quote, [str(install.binary), *install.args()]))
    server.write_text(f'#!/usr/bin/env bash\n{exports}exec {command} "$@"\n')
    pa = find_perf_analyzer()
    analyzer = work / "perf_analyzer"
    library_path = shlex.quote(pa.env.get("LD_LIBRARY_PATH", ""))
    analyzer.write_text(
        f'#!/usr/bin/env bash\nexport LD_LIBRARY_PATH={library_path}\nexec {shlex.quote(str(pa.binary))} "$@"\n'
    )
    for path in (server, analyzer):
        path.chmod(0o755)
    return server, analyzer


def build_model(work: Path) -> Path:
    from tests import factories
    from tritongen.build import build
    from tritongen.spec import build_spec_from_options

    repo = work / "repo"
    conv = factories.save_model(factories.make_small_conv(), work / "conv.pt", "state_dict")
    build(
        build_spec_from_options(
            conv,
            name="conv",
            inputs=["x:FP32:3,32,32"],
            outputs=["logits"],
            max_batch_size=8,
            model_factory="tests.factories:make_small_conv",
            repo=repo,
            warmup=False,
        )
    )
    return repo


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_model_analyzer(args, work: Path, repo: Path) -> tuple[float, dict]:
    venv = ma_venv()
    server, analyzer = wrappers(work)
    export = work / "ma_export"
    export.mkdir()
    # Model Analyzer keeps the original preferred batch sizes while it lowers max_batch_size, and then skips
    # every such config as illegal: give it the config without them so it can search its whole space.
    ma_repo = work / "ma_repo"
    shutil.copytree(repo, ma_repo)
    cfg = ma_repo / "conv" / "config.pbtxt"
    cfg.write_text(re.sub(r"^\s*preferred_batch_size:.*\n", "", cfg.read_text(), flags=re.M))
    repo = ma_repo
    ports = [free_port() for _ in range(3)]
    config = work / "ma.yaml"
    config.write_text(f"""
model_repository: {repo}
output_model_repository_path: {work / "ma_output_repo"}
override_output_model_repository: true
export_path: {export}
checkpoint_directory: {work / "ma_ckpt"}
triton_launch_mode: local
triton_server_path: {server}
perf_analyzer_path: {analyzer}
triton_http_endpoint: 127.0.0.1:{ports[0]}
triton_grpc_endpoint: 127.0.0.1:{ports[1]}
triton_metrics_url: http://127.0.0.1:{ports[2]}/metrics
client_protocol: grpc
run_config_search_mode: brute
run_config_search_max_instance_count: {args.max_instances}
run_config_search_max_model_batch_size: {args.max_batch}
run_config_search_max_concurrency: {args.max_concurrency}
skip_summary_reports: true
profile_models:
  conv:
    cpu_only: true
    constraints:
      perf_latency_p99:
        max: {args.max_p99_ms}
""")
    env = dict(os.environ, PATH=f"{work}:{venv / 'bin'}:{os.environ['PATH']}")
    started = time.monotonic()
    log = work / "ma.log"
    with open(log, "w") as out:
        done = subprocess.run(
            [str(venv / "bin" / "model-analyzer"), "profile", "-f", str(config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=args.ma_timeout_s,
            cwd=work,
        )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        print(log.read_text()[-3000:])
        raise SystemExit(f"model-analyzer failed (exit {done.returncode}); log {log}")
    # The result CSVs are written only with the summary reports: a second, untimed run from the checkpoint
    # measures nothing again ("Existing measurement found") and just exports them.
    config.write_text(config.read_text().replace("skip_summary_reports: true", "skip_summary_reports: false"))
    with open(work / "ma_export.log", "w") as out:
        subprocess.run(
            [str(venv / "bin" / "model-analyzer"), "profile", "-f", str(config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=args.ma_timeout_s,
            cwd=work,
        )
    best = best_ma_row(export, args.max_p99_ms)
    if best is None:
        for path in (export / "results").glob("*.csv"):
            print(path, "\n", path.read_text()[:3000])
        print(log.read_text()[-3000:])
        raise SystemExit(f"model-analyzer found no config within p99 {args.max_p99_ms} ms; log {log}")
    best["output_repo"] = work / "ma_output_repo"
    return elapsed, best


def best_ma_row(export: Path, max_p99_ms: float) -> dict | None:
    rows = []
    for path in (export / "results").glob("*inference*.csv"):
        rows += list(csv.DictReader(path.read_text().splitlines()))
    best = None
    for row in rows:
        try:
            tp = float(row["Throughput (infer/sec)"])
            p99 = float(row["p99 Latency (ms)"])
        except (KeyError, ValueError):
            continue
        if p99 <= max_p99_ms and (best is None or tp > best["throughput_rps"]):
            best = {
                "throughput_rps": tp,
                "p99_ms": p99,
                "concurrency": int(float(row.get("Concurrency", "1"))),
                "config": row.get("Model Config Path", ""),
                "row": row,
            }
    return best


def given_ma_winner(args, work: Path, repo: Path) -> tuple[float, dict]:
    """--ma-winner: the config an earlier Model Analyzer run chose, written beside the model, and its time."""
    from google.protobuf import text_format

    from tritongen.perf.tune_configs import config_from_candidate
    from tritongen.perf.tune_spec import Candidate
    from tritongen.validate import config_from_file

    fields = dict(item.split("=", 1) for item in args.ma_winner.split(",") if item)
    preferred = tuple(int(b) for b in fields.get("preferred", "").split("+") if b)
    cand = Candidate(int(fields["instances"]), int(fields["delay_us"]), int(fields["max_batch"]), preferred)
    folder = work / "ma_given" / "conv"
    shutil.copytree(repo / "conv", folder)
    (folder / "config.pbtxt").write_text(
        text_format.MessageToString(config_from_candidate(config_from_file(repo / "conv" / "config.pbtxt"), cand))
    )
    return args.ma_search_s, {
        "throughput_rps": float("nan"),
        "p99_ms": float("nan"),
        "concurrency": int(fields["concurrency"]),
        "config": str(folder),
        "row": {},
        "output_repo": folder.parent,
    }


def run_tune(args, repo: Path) -> tuple[float, object]:
    from tritongen.perf.tune import tune_model
    from tritongen.perf.tune_spec import TuneSpec
    from tritongen.server import ServeSpec, server_from_repository

    started = time.monotonic()
    batch_sizes = tuple(b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b <= args.max_batch)
    with server_from_repository(ServeSpec(repo=repo, model_control="explicit")) as server:
        result = tune_model(
            TuneSpec(
                model_dir=repo / "conv",
                max_p99_ms=args.max_p99_ms,
                url=server.grpc_url,
                max_instances=args.max_instances,
                max_batch_sizes=batch_sizes,
                max_concurrency=args.max_concurrency,
                duration_s=args.tune_duration_s,
                engine=args.tune_engine,
            ),
            progress=lambda m: print(f"  tune: {m}", flush=True),
        )
    return time.monotonic() - started, result


def highest_holding(
    holds: Callable[[int], bool], chosen: int, chosen_holds: bool, max_concurrency: int, max_probes: int = 5
) -> tuple[int | None, list[tuple[int, bool]]]:
    """The highest concurrency at which a config's p99 holds the bound, found with at most ``max_probes`` calls
    of ``holds`` (one short measurement each). From the concurrency its search chose: where that holds, doubling
    until one breaks (at most ``max_concurrency``), else bisecting down towards 1; then bisecting between the
    highest level that held and the lowest that broke. Returns that level (None: not even 1 holds) and the
    probes in order."""
    probes: list[tuple[int, bool]] = []

    def probe(c: int) -> bool:
        ok = holds(c)
        probes.append((c, ok))
        return ok

    lo, hi = (chosen, None) if chosen_holds else (0, chosen)  # lo: highest known to hold (0: none); hi: lowest over
    while hi is None and len(probes) < max_probes:
        up = min(2 * lo, max_concurrency)
        if up <= lo:
            break
        if probe(up):
            lo = up
        else:
            hi = up
    while hi is not None and hi - lo > 1 and len(probes) < max_probes:
        mid = (lo + hi) // 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    if lo == 0 and hi is not None and hi > 1 and len(probes) >= max_probes:
        lo = 1 if probe(1) else 0  # the probes ran out above 1: the lowest load decides whether any holds
    return (lo or None), probes


NAMES = ("conv_tune", "conv_ma")


def final_repo(work: Path, tune_repo: Path, ma_best: dict) -> Path:
    """One repository with both winners, as conv_tune and conv_ma."""
    repo = work / "final"
    repo.mkdir()
    shutil.copytree(tune_repo / "conv", repo / "conv_tune")
    ma_dir = Path(ma_best["config"]) if ma_best["config"] else None
    if ma_dir is None or not (ma_dir / "config.pbtxt").is_file():
        candidates = sorted(p for p in Path(ma_best["output_repo"]).iterdir() if (p / "config.pbtxt").is_file())
        name = ma_best["row"].get("Model Config Path") or ""
        ma_dir = next((p for p in candidates if p.name == name), None)
    if ma_dir is None:
        raise SystemExit(f"cannot find Model Analyzer's winning config {ma_best['row']}")
    shutil.copytree(ma_dir, repo / "conv_ma", symlinks=False)
    for name in NAMES:
        cfg = repo / name / "config.pbtxt"
        cfg.write_text(re.sub(r'^name: "[^"]*"', f'name: "{name}"', cfg.read_text(), flags=re.M))
        if not any((repo / name / "1").glob("model.onnx")):
            shutil.copytree(tune_repo / "conv" / "1", repo / name / "1", dirs_exist_ok=True)
    return repo


def measure_at(server, repo: Path, name: str, concurrency: int, duration_s: float):
    """One perf_analyzer measurement of ``name`` at ``concurrency``: its PerfPoint."""
    from tritongen.errors import TritongenError
    from tritongen.perf import PerfSpec, perf_from_spec

    spec = PerfSpec(
        model=name,
        url=server.grpc_url,
        repo=repo,
        engine="perf_analyzer",
        concurrency=(concurrency,),
        duration_s=duration_s,
        warmup_s=min(1.0, duration_s / 2),
        stability_pct=15,
        max_windows=5,
    )
    try:
        return perf_from_spec(spec).points[0]
    except TritongenError as failed:  # perf_analyzer gives up on a busy machine ("no valid requests"): once more
        print(
            f"    {name} at concurrency {concurrency}: perf_analyzer failed ({failed.problem}); measuring again "
            "with twice the window",
            flush=True,
        )
        return perf_from_spec(replace(spec, duration_s=2 * duration_s)).points[0]


def holds_bound(point, max_p99_ms: float) -> bool:
    return point.latency.p99_ms <= max_p99_ms and not point.errors


def alternate(server, repo: Path, concurrency: dict[str, int], args, phase: str) -> dict[str, list]:
    """``args.rounds`` rounds, each measuring both winners (the order alternating), each at its concurrency."""
    points: dict[str, list] = {name: [] for name in NAMES}
    for r in range(args.rounds):
        for name in NAMES if r % 2 == 0 else NAMES[::-1]:
            p = measure_at(server, repo, name, concurrency[name], args.round_s)
            points[name].append(p)
            over = "" if holds_bound(p, args.max_p99_ms) else "  OVER the bound"
            print(
                f"  {phase} round {r + 1} {name}: concurrency {concurrency[name]}: {p.throughput_rps:.1f} req/s "
                f"p99 {p.latency.p99_ms:.2f} ms{over}",
                flush=True,
            )
    return points


def capacity_levels(chosen: dict[str, int], max_concurrency: int, count: int) -> list[int]:
    """The shared ladder of the capacity rounds: ``count`` concurrencies evenly spaced from half the lower chosen
    concurrency to 1.5x the higher (at most ``max_concurrency``), without repeats."""
    lo = max(1, min(chosen.values()) // 2)
    hi = max(lo, min(max_concurrency, math.ceil(max(chosen.values()) * 1.5)))
    if count <= 1:
        return [hi]
    return sorted({round(lo + (hi - lo) * k / (count - 1)) for k in range(count)})


def capacity_of(points: list, max_p99_ms: float):
    """The point with the highest throughput whose p99 held the bound (a config's capacity in one round), or None
    when no level held it."""
    held = [p for p in points if holds_bound(p, max_p99_ms)]
    return max(held, key=lambda p: p.throughput_rps) if held else None


def capacity_rounds(server, repo: Path, levels: list[int], args) -> dict:
    """``args.capacity_rounds`` rounds; each measures both winners (the order alternating) at every level of
    ``levels``, lowest first; per round and config, the capacity (see capacity_of). Returns the per-round capacity
    points (None: no level held), the per-round ratios tune/ma where both held somewhere, and the medians."""
    caps: dict[str, list] = {name: [] for name in NAMES}
    for r in range(args.capacity_rounds):
        for name in NAMES if r % 2 == 0 else NAMES[::-1]:
            curve = [measure_at(server, repo, name, c, args.capacity_s) for c in levels]
            cap = capacity_of(curve, args.max_p99_ms)
            caps[name].append(cap)
            shown = ", ".join(
                f"{int(p.load)}: {p.throughput_rps:.0f}/{p.latency.p99_ms:.1f}"
                + ("" if holds_bound(p, args.max_p99_ms) else "!")
                for p in curve
            )
            best = "no level held" if cap is None else f"{cap.throughput_rps:.1f} req/s at {int(cap.load)}"
            print(
                f"  capacity round {r + 1} {name}: {best}  (concurrency: req/s / p99 ms, ! over: {shown})", flush=True
            )
    out: dict = {"levels": levels, "tp": {}, "at": {}, "none": {}}
    for name in NAMES:
        held = [p for p in caps[name] if p is not None]
        out["none"][name] = len(caps[name]) - len(held)
        out["tp"][name] = statistics.median(p.throughput_rps for p in held) if held else 0.0
        out["at"][name] = sorted(int(p.load) for p in held)
    out["ratios"] = [
        t.throughput_rps / m.throughput_rps
        for t, m in zip(caps["conv_tune"], caps["conv_ma"])
        if t is not None and m is not None
    ]
    return out


def spread(values: list[float], fmt: str = ".3f") -> str:
    return f"median {statistics.median(values):{fmt}}, min {min(values):{fmt}}, max {max(values):{fmt}}"


def summarize(points: dict[str, list], concurrency: dict[str, int], args, phase: str) -> dict:
    """Per-config medians and spread, per-round throughput ratios tune/ma, and the rounds over the bound."""
    out: dict = {"concurrency": dict(concurrency), "tp": {}, "p99": {}, "over": {}}
    for name in NAMES:
        tps = [p.throughput_rps for p in points[name]]
        p99s = [p.latency.p99_ms for p in points[name]]
        over = sum(not holds_bound(p, args.max_p99_ms) for p in points[name])
        out["tp"][name], out["p99"][name], out["over"][name] = statistics.median(tps), statistics.median(p99s), over
        print(
            f"  {phase}: {name} at concurrency {concurrency[name]}: throughput {spread(tps, '.1f')} req/s; "
            f"p99 {spread(p99s, '.2f')} ms; {over} of {len(p99s)} rounds over the {args.max_p99_ms:g} ms bound",
            flush=True,
        )
    out["ratios"] = [t.throughput_rps / m.throughput_rps for t, m in zip(points["conv_tune"], points["conv_ma"])]
    print(
        f"  {phase}: per-round throughput ratio tune/ma {', '.join(f'{r:.3f}' for r in out['ratios'])} "
        f"({spread(out['ratios'])})",
        flush=True,
    )
    return out


def find_holding(
    server, repo: Path, chosen: dict[str, int], as_chosen: dict, args, why: dict[str, str]
) -> dict[str, int | None]:
    """Per winner, the highest concurrency at which its p99 holds the bound: its chosen concurrency holds when
    its median p99 over the as-chosen rounds does; then a few short probes (see highest_holding)."""
    holding: dict[str, int | None] = {}
    for name in NAMES:
        med = as_chosen["p99"][name]
        chosen_holds = med <= args.max_p99_ms
        print(
            f"  {name}: chosen concurrency {chosen[name]} {'holds' if chosen_holds else 'breaks'} the "
            f"{args.max_p99_ms:g} ms bound (median p99 {med:.2f} ms, {as_chosen['over'][name]} of {args.rounds} "
            f"rounds over); probing {'up' if chosen_holds else 'down'} ({args.probe_s:g} s each)",
            flush=True,
        )

        def holds(c: int, name: str = name) -> bool:
            from tritongen.errors import TritongenError

            try:
                p = measure_at(server, repo, name, c, args.probe_s)
            except TritongenError as failed:
                print(
                    f"    probe {name} concurrency {c}: measurement failed ({failed.problem}): counted as over",
                    flush=True,
                )
                return False
            # A probe holds with a margin: a level whose p99 sits at the bound in a short probe breaks it in
            # half the longer rounds after (seen with 2 s probes). The same margin for both winners.
            ok = holds_bound(p, args.max_p99_ms * args.probe_margin)
            print(
                f"    probe {name} concurrency {c}: {p.throughput_rps:.1f} req/s p99 {p.latency.p99_ms:.2f} ms "
                f"({'holds' if ok else 'over'} {args.probe_margin:g} x the bound)",
                flush=True,
            )
            return ok

        level, probes = highest_holding(holds, chosen[name], chosen_holds, args.max_concurrency, args.max_probes)
        holding[name] = level
        found = (
            "no concurrency held the bound"
            if level is None
            else f"concurrency {level}: the highest that held ({len(probes)} probes, concurrency <= "
            f"{args.max_concurrency})"
        )
        print(f"  {name}: at the load that holds the bound: {found}", flush=True)
        start = f"chosen {chosen[name]} {'held' if chosen_holds else 'broke'} the bound (median p99 {med:.2f} ms)"
        steps = ", ".join(f"{c} {'held' if ok else 'over'}" for c, ok in probes)
        why[name] = f"{start}; probes {steps}" if probes else f"{start}; nothing above it was searched"
    return holding


def remeasure(args, work: Path, tune_repo: Path, ma_best: dict, tune_result) -> dict:
    """Both winners in one server, measured by perf_analyzer in alternating rounds: first at the concurrency
    each search chose, then each at the highest concurrency at which its p99 holds the bound."""
    from tritongen.perf.tune_configs import candidate_from_config
    from tritongen.server import ServeSpec, server_from_repository
    from tritongen.validate import config_from_file

    repo = final_repo(work, tune_repo, ma_best)
    chosen = {"conv_tune": int(tune_result.operating_point.load), "conv_ma": int(ma_best["concurrency"])}
    labels = {name: candidate_from_config(config_from_file(repo / name / "config.pbtxt")).label() for name in NAMES}
    for name in NAMES:
        print(f"  winner {name}: {labels[name]}, chosen concurrency {chosen[name]}", flush=True)
    result: dict = {"labels": labels}
    with server_from_repository(ServeSpec(repo=repo)) as server:
        print(
            f"as chosen: each winner at the concurrency its search chose ({args.rounds} rounds, "
            f"{args.round_s:g} s each)",
            flush=True,
        )
        result["chosen"] = summarize(alternate(server, repo, chosen, args, "as chosen"), chosen, args, "as chosen")
        started = time.monotonic()
        print(f"finding each winner's highest concurrency whose p99 holds {args.max_p99_ms:g} ms ...", flush=True)
        result["why"] = {}
        holding = find_holding(server, repo, chosen, result["chosen"], args, result["why"])
        result["probe_s"] = time.monotonic() - started
        result["holding_levels"] = holding
        if all(level is not None for level in holding.values()):
            levels = {name: int(level) for name, level in holding.items() if level is not None}
            print(
                f"at the load that holds the bound: each winner at its own such concurrency ({args.rounds} rounds)",
                flush=True,
            )
            result["holding"] = summarize(alternate(server, repo, levels, args, "holding"), levels, args, "holding")
        if args.capacity_rounds > 0:
            levels = capacity_levels(chosen, args.max_concurrency, args.capacity_levels)
            print(
                f"capacity at the bound: both winners at concurrency {', '.join(map(str, levels))} in "
                f"{args.capacity_rounds} rounds of {args.capacity_s:g} s per level",
                flush=True,
            )
            result["capacity"] = capacity_rounds(server, repo, levels, args)
        result["extra_s"] = time.monotonic() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-p99-ms", type=float, default=10.0)
    parser.add_argument("--max-instances", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-concurrency", type=int, default=64)
    parser.add_argument("--tune-duration-s", type=float, default=1.5)
    parser.add_argument(
        "--tune-engine",
        choices=("builtin", "perf_analyzer"),
        default="perf_analyzer",
        help="what measures tune's points (Model Analyzer always uses perf_analyzer)",
    )
    parser.add_argument("--rounds", type=int, default=10, help="re-measurement rounds (each measures both winners)")
    parser.add_argument("--round-s", type=float, default=5.0, help="measured time of each re-measurement")
    parser.add_argument(
        "--probe-s",
        type=float,
        default=5.0,
        help="measured time of each probe for the highest concurrency that holds the bound",
    )
    parser.add_argument(
        "--probe-margin",
        type=float,
        default=0.95,
        help="a probe holds when its p99 is within this fraction of the bound (both winners)",
    )
    parser.add_argument("--max-probes", type=int, default=5, help="probes per winner for that concurrency")
    parser.add_argument("--capacity-rounds", type=int, default=5, help="rounds of the capacity comparison (0: skip it)")
    parser.add_argument("--capacity-levels", type=int, default=7, help="concurrencies on the capacity ladder")
    parser.add_argument("--capacity-s", type=float, default=3.0, help="measured time per level in those rounds")
    parser.add_argument("--ma-timeout-s", type=float, default=3600)
    parser.add_argument(
        "--ma-winner",
        help="skip Model Analyzer: the config and concurrency an earlier run chose, "
        "e.g. instances=1,delay_us=500,max_batch=16,concurrency=32 (preferred=8+16 where it had some)",
    )
    parser.add_argument("--ma-search-s", type=float, help="with --ma-winner: that run's search time in seconds")
    args = parser.parse_args()
    if args.ma_winner and args.ma_search_s is None:
        parser.error("--ma-winner needs --ma-search-s (the search time of the run that chose it)")
    work = Path(tempfile.mkdtemp(prefix="tritongen-tune-bench-"))
    print(f"work folder: {work} (removed at the end when all went well)", flush=True)
    if True:
        repo = build_model(work)
        tune_repo = work / "tune_repo"
        shutil.copytree(repo, tune_repo)
        print(f"tritongen tune (points measured by {args.tune_engine}) ...", flush=True)
        tune_s, tune_result = run_tune(args, tune_repo)
        print(tune_result.table(), flush=True)
        if args.ma_winner:
            ma_s, ma_best = given_ma_winner(args, work, repo)
            print(
                f"model analyzer not run: its earlier winner given ({args.ma_winner}), its search time "
                f"{ma_s:.0f} s given",
                flush=True,
            )
        else:
            print("model-analyzer profile ...", flush=True)
            ma_s, ma_best = run_model_analyzer(args, work, repo)
            print(
                f"  model analyzer best: {ma_best['throughput_rps']:.1f} req/s p99 {ma_best['p99_ms']:.2f} ms at "
                f"concurrency {ma_best['concurrency']} ({ma_best['config']}) in {ma_s:.0f} s",
                flush=True,
            )
        if tune_result.operating_point is None:
            raise SystemExit(
                f"tune found no config whose p99 held its target ({tune_result.target_p99_ms:.2f} ms) "
                f"when measured again: nothing to compare (a busy machine?); work folder {work}"
            )
        final = remeasure(args, work, tune_repo, ma_best, tune_result)
    print()
    print(
        f"same model, same server build, p99 <= {args.max_p99_ms:g} ms, instances <= {args.max_instances}, "
        f"max batch <= {args.max_batch}, concurrency <= {args.max_concurrency}:"
    )
    given = " (given, from an earlier run)" if args.ma_winner else ""
    n_points = sum(len(t.points) for t in tune_result.trials)
    print(
        f"  search time   tune {tune_s:.0f} s ({len(tune_result.trials)} configs, {n_points} measurements + "
        f"{len(tune_result.confirmation)} re-measurements)  model analyzer {ma_s:.0f} s{given}  "
        f"ratio {tune_s / ma_s:.3f} (target <= 0.25: {'MET' if tune_s / ma_s <= 0.25 else 'NOT MET'})"
    )
    op = tune_result.operating_point
    print(
        f"  as measured by each search: tune {tune_result.winner.score:.1f} req/s (confirmed {op.throughput_rps:.1f} "
        f"req/s, p99 {op.latency.p99_ms:.2f} ms at concurrency {int(op.load)}), model analyzer "
        f"{ma_best['throughput_rps']:.1f} req/s{given and ' (not run)'}"
    )
    print(f"  winners: tune {final['labels']['conv_tune']}; model analyzer {final['labels']['conv_ma']}")
    for key, title in (
        ("chosen", "as chosen (each at the concurrency its search chose)"),
        (
            "holding",
            "at the load that holds the bound (each at its highest concurrency with p99 "
            f"<= {args.max_p99_ms:g} ms, found by re-measurement)",
        ),
    ):
        if key not in final:
            levels = final["holding_levels"]
            print(
                f"  {title}: not compared: no concurrency held the bound for "
                f"{', '.join(n for n, v in levels.items() if v is None)}"
            )
            continue
        f = final[key]
        print(f"  {title}, {args.rounds} rounds of {args.round_s:g} s, perf_analyzer:")
        for name, who in (("conv_tune", "tune"), ("conv_ma", "model analyzer")):
            print(
                f"    {who:<14} concurrency {f['concurrency'][name]:>3}: {f['tp'][name]:8.1f} req/s median, "
                f"p99 median {f['p99'][name]:.2f} ms, {f['over'][name]} of {args.rounds} rounds over the bound"
            )
            if key == "holding":
                print(f"      ({final['why'][name]})")
        same_config = final["labels"]["conv_tune"] == final["labels"]["conv_ma"]
        if same_config and f["concurrency"]["conv_tune"] == f["concurrency"]["conv_ma"]:
            # Two copies of one config at one load: their ratio is 1.0 by construction, and what the rounds measure
            # is this bench's own noise (an A/A check), not a difference between the tools.
            print(
                f"    the same config at the same concurrency: target >= 1.0: MET (equal by construction); the two "
                f"copies' per-round ratio, an A/A check of the bench's noise: {spread(f['ratios'])}, "
                f"{verdict(f['ratios']).split(': ', 1)[-1]}"
            )
        else:
            print(f"    throughput ratio tune/ma per round {spread(f['ratios'])}; {verdict(f['ratios'])}")
        if key == "holding":
            for name, who in (("conv_tune", "tune"), ("conv_ma", "model analyzer")):
                if f["p99"][name] > args.max_p99_ms:
                    print(
                        f"    note: {who}'s median p99 broke the bound in these rounds although a short probe at "
                        f"concurrency {f['concurrency'][name]} held it: a noisy machine (rerun on a quiet one)"
                    )
    cap = final.get("capacity")
    if cap is not None:
        print(
            f"  capacity at the bound (per round, the most each served at any of concurrency "
            f"{', '.join(map(str, cap['levels']))} with p99 <= {args.max_p99_ms:g} ms), "
            f"{args.capacity_rounds} rounds of {args.capacity_s:g} s per level, perf_analyzer:"
        )
        for name, who in (("conv_tune", "tune"), ("conv_ma", "model analyzer")):
            print(
                f"    {who:<14} {cap['tp'][name]:8.1f} req/s median, at concurrency {cap['at'][name]}"
                + (f"; no level held in {cap['none'][name]} rounds" if cap["none"][name] else "")
            )
        if cap["ratios"] and final["labels"]["conv_tune"] == final["labels"]["conv_ma"]:
            # One config's capacity does not depend on the concurrency either search chose: equal by construction.
            print(
                f"    the same config: target >= 1.0: MET (equal by construction); the two copies' per-round ratio, "
                f"an A/A check of the bench's noise: {spread(cap['ratios'])}, "
                f"{verdict(cap['ratios']).split(': ', 1)[-1]}"
            )
        elif cap["ratios"]:
            print(f"    capacity ratio tune/ma per round {spread(cap['ratios'])}; {verdict(cap['ratios'])}")
        else:
            print("    capacity ratio: no round where both held the bound at some level")
    print(
        f"  finding the loads that hold the bound and measuring there took {final['extra_s']:.0f} s "
        f"(probes {final['probe_s']:.0f} s)"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
