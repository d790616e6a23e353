"""tune's written winner: config.pbtxt (validated first) and the record of how it was chosen (``tune.json``)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import TritongenError
from ..files import refuse_linked_folders, replace_file
from ..layout import CONFIG_NAME
from .results import PerfPoint
from .tune_configs import Serving, config_from_candidate
from .tune_spec import TUNE_RECORD, Trial, TuneSpec


def write_winner(
    spec: TuneSpec,
    base_config,
    winner: Trial,
    baseline: Trial,
    trials: list[Trial],
    frontier,
    search_s: float,
    confirmation: Sequence[tuple[Trial, PerfPoint]] = (),
    confirmed: PerfPoint | None = None,
    checks: Sequence[dict[str, Any]] = (),
    serving: Serving | None = None,
) -> tuple[Path, Path]:
    """Write the winner's config into config.pbtxt (validated first) and the record of how it was chosen;
    ``serving`` (what the server must serve when tune ends) becomes the written config once it is on disk."""
    from google.protobuf import text_format

    from ..layout import ARTIFACT_DIR, TUNED_CONFIG_HEADER, config_text, version_numbers
    from ..manifest import rehash_files
    from ..validate import config_from_text, problems_in_config

    config = config_from_candidate(base_config, winner.candidate)
    text = TUNED_CONFIG_HEADER + text_format.MessageToString(config)
    problems = problems_in_config(config_from_text(text), spec.model_dir)
    if problems:
        raise TritongenError(
            "the tuned config does not validate",
            "report this as a bug; the repository was left unchanged",
            details="\n".join(problems),
        )
    config_path = spec.model_dir / "config.pbtxt"
    previous = config_text(config_path)  # bounded, one open
    versions = version_numbers(spec.model_dir)
    record_dir = spec.model_dir / str(versions[-1] if versions else 1) / ARTIFACT_DIR
    refuse_linked_folders(record_dir, spec.model_dir)  # before anything is written: nothing is left half-done
    record_dir.mkdir(parents=True, exist_ok=True)
    record_path = record_dir / TUNE_RECORD
    record = {
        "created_unix_s": round(time.time(), 3),
        "constraint": {"max_p99_ms": spec.max_p99_ms, "min_throughput_rps": spec.min_throughput_rps},
        "target_p99_ms": spec.target_p99_ms,  # what every counted point met: the bound less p99_margin_pct
        "search": {
            "p99_margin_pct": spec.p99_margin_pct,
            "prune_pct": spec.prune_pct,
            "duration_s": spec.duration_s,
            "engine": spec.engine,
            "confirm_s": spec.confirm_s,
            "confirm_engine": confirmation[0][1].engine if confirmation else None,
            "confirm_paired": spec.confirm_paired,
            "client_cpus": list(spec.client_cpus),
            "climb_steps": spec.climb_steps,
            "climb_factor": spec.climb_factor,
            "paired_descent": spec.paired_descent,
        },
        "search_s": round(search_s, 2),
        "winner": trial_dict(winner),
        # Every re-measurement of the best configs, in order; the winner is the highest whose p99 held the target.
        "confirmation": [{"config": asdict(t.candidate), **point_dict(p)} for t, p in confirmation],
        "confirmed": None if confirmed is None else point_dict(confirmed),
        # Each time a config's search figure beat the best one's: the best measured again beside it, and the verdict.
        "descent_checks": list(checks),
        "baseline": trial_dict(baseline),
        "trials": [trial_dict(t) for t in trials],
        "frontier": [
            {"config": asdict(c), "concurrency": p.load, "throughput_rps": p.throughput_rps, "p99_ms": p.latency.p99_ms}
            for c, p in frontier
        ],
        "previous_config": previous,
    }
    replace_file(record_path, json.dumps(record, indent=2) + "\n")  # a link planted at either is replaced
    replace_file(config_path, text)
    if serving is not None:
        serving.config, serving.name = config, f"the tuned config written to {CONFIG_NAME}"
    if versions:  # the build's manifest now vouches for the tuned config (and the record of how it was chosen)
        rehash_files(spec.model_dir, versions[-1], [config_path, record_path])
    return config_path, record_path


def trial_dict(t: Trial) -> dict[str, Any]:
    return {
        "config": asdict(t.candidate),
        "load_s": round(t.load_s, 3),
        "error": t.error,
        "pruned": t.pruned,
        "best": None
        if t.best is None
        else {
            "concurrency": t.best.load,
            "throughput_rps": t.best.throughput_rps,
            "p99_ms": t.best.latency.p99_ms,
            "mean_ms": t.best.latency.mean_ms,
        },
        "points": [point_dict(p) for p in t.points],
    }


def point_dict(p: PerfPoint) -> dict[str, Any]:
    return {
        "concurrency": p.load,
        "throughput_rps": p.throughput_rps,
        "p99_ms": p.latency.p99_ms,
        "measured_s": p.measured_s,
        "engine": p.engine,
        "errors": dict(p.errors),
    }
