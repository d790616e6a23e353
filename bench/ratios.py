"""Per-round ratios between two measurements taken side by side, and whether a target holds clear of the noise.

This machine's speed drifts by tens of percent from minute to minute, so the benches alternate the two things
compared, take the ratio within each round (both halves see the same spell) and judge the median of those ratios
by a 95% bootstrap interval (rounds resampled with replacement)."""

from __future__ import annotations

import math
import random
import statistics


def median_interval(ratios: list[float], draws: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """A 95% bootstrap interval of the median of the per-round ratios (rounds resampled with replacement)."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws) - 1]


def band_verdict(ratios: list[float], low_ok: float, high_ok: float = math.inf) -> tuple[str, str]:
    """(word, text) for a ratio that should lie in [low_ok, high_ok] (no upper end by default: a target to reach):
    "met" when the interval of the median lies inside the band, "met on the median" when only the median does,
    "within the noise" when the band overlaps the interval, "MISSED" when it does not."""
    med = statistics.median(ratios)
    low, high = median_interval(ratios)
    target = f">= {low_ok:g}" if math.isinf(high_ok) else f"{low_ok:g}-{high_ok:g}"
    interval = f"{med:.3f} (95% interval of the median {low:.3f}-{high:.3f}; target {target})"
    if low_ok <= low and high <= high_ok:
        return "met", f"met clear of the noise: {interval}"
    if low_ok <= med <= high_ok:
        return "met on the median", f"met on the median, not clear of the noise: {interval}"
    if low <= high_ok and high >= low_ok:
        return "within the noise", f"missed on the median, within the noise: {interval}"
    return "MISSED", f"MISSED: {interval}"


def verdict(ratios: list[float], target: float = 1.0) -> str:
    """The text of :func:`band_verdict` for a ratio that should reach ``target`` (tune against Model Analyzer)."""
    return band_verdict(ratios, target)[1]
