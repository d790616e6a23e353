"""bench/ratios.py: the verdict on a ratio that should lie in a band (the harness agreement's targets) or reach a
target (tune against Model Analyzer)."""

from __future__ import annotations

import statistics

from bench.ratios import band_verdict, median_interval, verdict


def test_a_band_is_met_clear_of_the_noise_only_when_the_whole_interval_lies_inside_it():
    steady = [0.99, 1.01, 1.00, 1.02, 0.98, 1.00, 1.01]
    low, high = median_interval(steady)
    assert 0.95 <= low <= 1.00 <= high <= 1.05
    word, text = band_verdict(steady, 0.95, 1.05)
    assert word == "met" and text.startswith("met clear of the noise: 1.000 ")
    # the median inside, the interval reaching out of the band
    word, text = band_verdict([1.00, 1.04, 0.90, 1.03, 0.86, 1.02, 1.12], 0.95, 1.05)
    assert word == "met on the median" and "1.020" in text
    # the median outside, the interval reaching into the band
    word, _ = band_verdict([1.08, 1.04, 1.12, 1.06, 1.02, 1.15, 1.07], 0.95, 1.05)
    assert word == "within the noise"
    # a ratio below the band is missed as surely as one above it
    assert band_verdict([0.80, 0.82, 0.81, 0.79, 0.83], 0.95, 1.05)[0] == "MISSED"
    assert band_verdict([1.30, 1.31, 1.29, 1.35, 1.33], 0.90, 1.10)[0] == "MISSED"


def test_a_target_to_reach_is_met_only_when_the_interval_clears_it():
    """The verdict on tune/Model Analyzer throughput: the 95% bootstrap interval of the median of per-round ratios
    decides whether a median above 1.0 is clear of the noise; no upper end."""
    steady = [1.04, 1.05, 1.06, 1.05, 1.07, 1.04, 1.05, 1.06]
    low, high = median_interval(steady)
    assert low >= 1.04 and high <= 1.07 and low <= 1.05 <= high
    assert verdict(steady).startswith("met clear of the noise: 1.050 ") and "target >= 1" in verdict(steady)
    assert verdict([1.9, 2.0, 2.1]).startswith("met clear of the noise")  # far above is still met
    noisy = [1.03, 1.04, 1.02, 0.95, 0.99, 0.86, 1.05, 1.01]
    assert median_interval(noisy)[0] < 1.0 <= statistics.median(noisy)
    assert verdict(noisy).startswith("met on the median, not clear")
    assert verdict([0.97, 0.98, 1.01, 0.96, 0.99]).startswith("missed on the median, within the noise")
    assert verdict([0.90, 0.92, 0.91]).startswith("MISSED: ")
