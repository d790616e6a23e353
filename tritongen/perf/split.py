"""A/B load on one server: ``--version-split 1:90,2:10`` sends version-pinned requests in those proportions.

The versions follow a fixed, deterministic interleave (smooth weighted round robin over the percentages reduced
by their greatest common divisor: 90:10 is ``1 1 1 1 1 2 1 1 1 1`` repeated), taken in send order, so any stretch
of the run holds the split to within one cycle. Each version's figures come from the requests pinned to it, and
from Triton's per-version statistics (the ``model_stats`` entries of the statistics API carry a ``version``), which
cross-check the client's counts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import TritongenError
from ..layout import MAX_VERSION
from ..names import shown
from .results import (
    MAX_POINT_VERSIONS,
    ServerBreakdown,
    VersionFigures,
    latency_summary_from_ms,
    server_breakdown_from_stats,
)

MAX_VERSIONS = MAX_POINT_VERSIONS  # what a results.json may hold per level
SPLIT_EXAMPLE = "--version-split 1:90,2:10"
_PART = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def version_split_from_text(
    text: str | Mapping[Any, Any] | Sequence[Any] | None,
) -> tuple[tuple[str, int], ...]:
    """``"1:90,2:10"`` (or pairs already, or ``{"1": 90, "2": 10}``) -> ``(("1", 90), ("2", 10))``; one-line
    errors for anything else."""
    if text is None or text == "" or text == () or text == {} or text == []:
        return ()
    if isinstance(text, str):
        parts = [p for p in text.split(",") if p.strip()]
    elif isinstance(text, Mapping):
        parts = [f"{_whole(v)}:{_whole(p)}" for v, p in text.items()]
    elif isinstance(text, Sequence):
        parts = [_pair_text(pair) for pair in text]
    else:
        raise TritongenError(
            f"--version-split {shown(repr(text))} is a {type(text).__name__}",
            f"pass text like {SPLIT_EXAMPLE}, (version, percent) pairs or {{version: percent}}",
        )
    pairs = []
    for part in parts:
        match = _PART.match(part)
        if not match:
            raise TritongenError(
                f"--version-split part '{shown(part.strip())}' is not VERSION:PERCENT",
                f"write whole numbers like {SPLIT_EXAMPLE}",
            )
        pairs.append((match.group(1), int(match.group(2))))
    too_long = next((v for v, _ in pairs if len(v.lstrip("0")) > len(str(MAX_VERSION))), None)
    if too_long is not None:  # int() of thousands of digits is slow, and refused past 4300
        raise TritongenError(
            f"--version-split names version {shown(too_long, 24)}", f"Triton versions are 1 to {MAX_VERSION}"
        )
    versions = [str(int(v)) for v, _ in pairs]
    if len(pairs) < 2:
        raise TritongenError(
            f"--version-split names {len(pairs)} version", f"name two or more versions, like {SPLIT_EXAMPLE}"
        )
    if len(pairs) > MAX_VERSIONS:
        raise TritongenError(
            f"--version-split names {len(pairs)} versions", f"compare at most {MAX_VERSIONS} versions in one run"
        )
    if any(int(v) < 1 for v in versions):
        raise TritongenError("--version-split names version 0", "Triton versions are folder numbers from 1")
    if any(int(v) > MAX_VERSION for v in versions):  # a results.json holds none (its reader refuses them)
        big = next(v for v in versions if int(v) > MAX_VERSION)
        raise TritongenError(f"--version-split names version {big}", f"Triton versions are 1 to {MAX_VERSION}")
    repeated = sorted({v for v in versions if versions.count(v) > 1}, key=int)
    if repeated:
        raise TritongenError(
            f"--version-split names version {repeated[0]} twice", "give each version once with its whole share"
        )
    if any(p < 1 for _, p in pairs):
        zero = next(v for v, p in zip(versions, (p for _, p in pairs)) if p < 1)
        raise TritongenError(
            f"--version-split gives version {zero} 0%", "leave that version out, or give it 1% or more"
        )
    total = sum(p for _, p in pairs)
    if total != 100:
        raise TritongenError(
            f"--version-split percentages add up to {total}, not 100", f"make them sum to 100, like {SPLIT_EXAMPLE}"
        )
    return tuple(zip(versions, (p for _, p in pairs)))


def _whole(value: Any) -> str:
    """A version or a percentage of a pair as text for :data:`_PART` (a bool or a float is no whole number)."""
    return str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else repr(value)


def _pair_text(pair: Any) -> str:
    if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
        return repr(pair)
    return f"{_whole(pair[0])}:{_whole(pair[1])}"


def schedule_from_split(split: Sequence[tuple[str, int]]) -> tuple[str, ...]:
    """One cycle of the interleave: each version ``share / gcd`` times, spread evenly (smooth weighted round robin)."""
    if not split:
        return ()
    divisor = math.gcd(*(p for _, p in split))
    weights = {v: p // divisor for v, p in split}
    current = dict.fromkeys(weights, 0)
    total = sum(weights.values())
    cycle = []
    for _ in range(total):
        for version, weight in weights.items():
            current[version] += weight
        chosen = max(current, key=lambda v: current[v])  # ties: the first listed
        current[chosen] -= total
        cycle.append(chosen)
    return tuple(cycle)


def check_split_against_model(split: Sequence[tuple[str, int]], model: str, loaded: Sequence[str]) -> None:
    """Refuse a split naming a version the server has not loaded (``loaded``: the model metadata's versions)."""
    ready = sorted({str(v) for v in loaded}, key=lambda v: int(v) if v.isdigit() else 0)
    for version, _ in split:
        if version not in ready:
            raise TritongenError(
                f"version {version} of '{model}' is not loaded (loaded: {', '.join(ready) or 'none'})",
                "split between loaded versions, or serve both: version_policy { all {} } or "
                "{ specific { versions: [...] } } in a hand-written config.pbtxt; a tritongen build's config.pbtxt "
                "is held to its manifest, so for one compare the versions with tritongen rollout's gate (it serves "
                "the new version beside the live one and measures both)",
            )


def stats_by_version(stats: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Per-version counters from a :func:`tritongen.client.model_statistics` snapshot (its ``raw`` answer)."""
    out: dict[str, dict[str, int]] = {}
    for entry in (stats.get("raw") or {}).get("model_stats", []):
        inference = entry.get("inference_stats", {})
        counters = {
            "success_count": int(inference.get("success", {}).get("count", 0)),
            "failure_count": int(inference.get("fail", {}).get("count", 0)),
            "execution_count": int(entry.get("execution_count", 0)),
            "inference_count": int(entry.get("inference_count", 0)),
        }
        for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
            counters[f"{key}_ns"] = int(inference.get(key, {}).get("ns", 0))
        out[str(entry.get("version", ""))] = counters
    return out


def version_figures_from_records(
    split: Sequence[tuple[str, int]],
    versions: Sequence[str],
    latencies_s: Sequence[float],
    errors: Sequence[str | None],
    seconds: float,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
) -> dict[str, VersionFigures]:
    """Each version's figures from the measured requests (``versions[i]`` served request ``i``) and the server's
    statistics at the measured windows' edges."""
    server_before = stats_by_version(before) if before else {}
    server_after = stats_by_version(after) if after else {}
    out = {}
    for version, share in split:
        mine = [i for i, v in enumerate(versions) if v == version]
        ok_ms = [latencies_s[i] * 1000.0 for i in mine if errors[i] is None]
        kinds: dict[str, int] = {}
        for i in mine:
            kind = errors[i]
            if kind is not None:
                kinds[kind] = kinds.get(kind, 0) + 1
        server = ServerBreakdown()
        if version in server_before and version in server_after:
            server = server_breakdown_from_stats(server_before[version], server_after[version])
        out[version] = VersionFigures(
            version=version,
            share_pct=share,
            requests=len(mine),
            throughput_rps=len(ok_ms) / seconds if seconds else 0.0,
            latency=latency_summary_from_ms(ok_ms),
            errors=kinds,
            server=server,
        )
    return out
