"""tune's selection rules as pure functions over made-up measurements: the p99 target, where a ladder starts,
pruning, which configs are measured again and which re-measurement wins. No server, no timing."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tritongen.errors import TritongenError
from tritongen.perf.results import LatencySummary, PerfPoint
from tritongen.perf.tune_confirm import Remeasure, beats_side_by_side, climb, confirm, paired
from tritongen.perf.tune_select import (
    after_paired,
    best_point,
    climb_loads,
    contenders,
    fallback_contenders,
    pick_confirmed,
    pick_paired,
    pruned,
    rivals,
    start_index,
)
from tritongen.perf.tune_spec import CONCURRENCY_LADDER, Candidate, Trial, TuneResult, TuneSpec


def _p(load: int, rps: float, p99_ms: float, errors=None) -> PerfPoint:
    return PerfPoint(
        "concurrency", load, "perf_analyzer", rps, LatencySummary(1, 1, 1, 1, p99_ms, None), 100, errors=errors or {}
    )


def _trial(cand: Candidate, *points: PerfPoint, target_ms: float = 9.0) -> Trial:
    return Trial(cand, points, best_point(points, target_ms), 0.1)


A, B, C = Candidate(1, 500, 16, ()), Candidate(1, 500, 16, (16,)), Candidate(2, 500, 8, ())


def test_points_count_only_within_the_bound_less_the_margin(tmp_path):
    spec = TuneSpec(model_dir=tmp_path, max_p99_ms=10)
    assert spec.target_p99_ms == pytest.approx(9.0)  # the default margin is 10%
    assert TuneSpec(model_dir=tmp_path, max_p99_ms=10, p99_margin_pct=0).target_p99_ms == 10
    # 9.5 ms is within the bound but not the target: the faster point does not count; an errored point never does.
    points = [_p(8, 5000, 4.0), _p(16, 7000, 8.9), _p(32, 7600, 9.5), _p(24, 9000, 3.0, errors={"unavailable": 1})]
    assert best_point(points, spec.target_p99_ms).load == 16
    assert best_point([_p(32, 7600, 9.5)], spec.target_p99_ms) is None
    for bad in (
        {"p99_margin_pct": 100},
        {"p99_margin_pct": -1},
        {"confirm_top": 0},
        {"confirm_engine": "ma"},
        {"refine_resolution_pct": 100},
        {"refine_resolution_pct": -1},
    ):
        with pytest.raises(TritongenError):
            TuneSpec(model_dir=tmp_path, max_p99_ms=10, **bad)
    assert TuneSpec(model_dir=tmp_path, max_p99_ms=10, client_cpus="0").client_cpus == (0,)
    with pytest.raises(TritongenError, match="--client-cpus"):
        TuneSpec(model_dir=tmp_path, max_p99_ms=10, client_cpus="4096")
    assert TuneSpec(model_dir=tmp_path, max_p99_ms=10, duration_s=1.0).confirm_s == 3.0  # at least 3 s
    assert TuneSpec(model_dir=tmp_path, max_p99_ms=10, duration_s=2.5).confirm_s == 5.0  # else twice as long


def test_the_first_ladder_starts_where_every_instance_fills_its_largest_batch_once():
    ladder = list(CONCURRENCY_LADDER[:7])  # 1 .. 64
    assert ladder[start_index(ladder, Candidate(1, 500, 16, ()))] == 16
    assert ladder[start_index(ladder, Candidate(2, 500, 8, ()))] == 16
    assert ladder[start_index(ladder, Candidate(3, 0, 4, ()))] == 8  # 12: the level just below
    assert ladder[start_index(ladder, Candidate(1, 0, 0, ()))] == 1  # no batching: one request per instance
    assert ladder[start_index(ladder, Candidate(4, 0, 128, ()))] == 64  # capped by the largest level


def test_a_config_far_below_the_best_is_pruned_after_its_first_point():
    best = _trial(A, _p(16, 8000, 4.7), _p(32, 8100, 8.0))  # score 8100
    assert pruned(_p(16, 6000, 5.0), best, 20.0)  # 6000 < 0.8 x 8100
    assert not pruned(_p(16, 6600, 5.0), best, 20.0)  # within 20%: its ladder goes on
    assert not pruned(_p(16, 10, 5.0), best, 0.0)  # 0%: pruning off
    assert not pruned(_p(16, 10, 5.0), None, 20.0)  # nothing to compare with (the starting configs)
    assert not pruned(_p(16, 10, 5.0), _trial(A, _p(16, 9000, 50.0)), 20.0)  # the best has no point in the target


def test_pruning_compares_a_first_point_with_what_the_best_config_served_at_the_same_concurrency():
    # The best config peaked at 14, a bisected level; the next config's ladder starts at 8, where the best served
    # 3237 req/s. Against its best (4958) both first points below would fall 20% short: the faster one must not.
    best = _trial(A, _p(8, 3237, 4.5), _p(12, 4274, 5.3), _p(14, 4958, 5.8), _p(16, 3838, 9.8))
    assert not pruned(_p(8, 3510, 4.4), best, 20.0)  # more than the best served at 8
    assert pruned(_p(8, 2197, 6.9), best, 20.0)  # 2197 < 0.8 x 3237
    assert not pruned(_p(16, 4100, 8.0), best, 20.0)  # at 16: against 4958 (its best at or below 16)
    assert pruned(_p(16, 3900, 8.0), best, 20.0)  # 3900 < 0.8 x 4958
    assert not pruned(_p(4, 10, 2.0), best, 20.0)  # below every point of the best: nothing to compare with


def test_the_climb_tries_a_quarter_more_concurrency_each_step_within_the_largest_level():
    assert climb_loads(14, 1.25, 2, 64) == [18, 23]
    assert climb_loads(1, 1.25, 3, 64) == [2, 3, 4]  # at least one more each step
    assert climb_loads(50, 1.25, 2, 64) == [63]  # 79 is over the largest level
    assert climb_loads(64, 1.25, 2, 64) == [] and climb_loads(14, 1.25, 0, 64) == []


class _Server:
    def __init__(self):
        self.loaded = []

    def load(self, model, config_json):
        self.loaded.append((model, json.loads(config_json)))


def _base_config():
    from tritongen.validate import config_from_text

    return config_from_text(
        'name: "conv"\nbackend: "python"\nmax_batch_size: 8\n'
        "dynamic_batching { max_queue_delay_microseconds: 500 }\n"
        "instance_group [{count: 1 kind: KIND_CPU}]\n"
    )


def _again(spec: TuneSpec, server: _Server | None = None, base=None) -> Remeasure:
    """What re-measuring needs, for a config of "conv": a recording server, the base config, no requests (the
    engines are replaced in these tests), silent progress."""
    from tritongen.perf.spec import PerfSpec

    base = _base_config() if base is None else base
    return Remeasure(server or _Server(), "conv", base, PerfSpec(model="conv"), None, spec, lambda m: None)


def _climb_with(monkeypatch, tmp_path, measured: dict, chosen_at=(14, 4200.0, 6.4)):
    """Run the climb from a confirmed point at ``chosen_at`` with perf_analyzer replaced by a table of
    concurrency -> (req/s, p99 ms); returns (the loads measured, the re-measurements, the server)."""
    from tritongen.perf import perf_analyzer

    asked = []

    def fake(level, requests, *_):
        load = level.concurrency[0]
        asked.append((load, level.duration_s))
        return [_p(load, *measured[load])]

    monkeypatch.setattr(perf_analyzer, "points_from_perf_analyzer", fake)
    base = _base_config()
    spec = TuneSpec(model_dir=tmp_path, max_p99_ms=10, duration_s=2.5, climb_steps=2, load_warmup_s=0)
    chosen = (_trial(A, _p(*chosen_at)), _p(*chosen_at))
    server = _Server()
    climbed = climb(chosen, _again(spec, server, base))
    return asked, climbed, server


def test_the_climb_claims_a_higher_concurrency_only_on_a_re_measurement_within_the_target(monkeypatch, tmp_path):
    # 18 holds the 9 ms target and serves more; 23 breaks it: the winner moves to 18 and no further.
    asked, climbed, server = _climb_with(monkeypatch, tmp_path, {18: (4700.0, 8.1), 23: (5000.0, 9.6)})
    assert asked == [(18, 5.0), (23, 5.0)]  # as long as the confirmation (twice the search's 2.5 s)
    assert server.loaded[0][1]["maxBatchSize"] == 16 and server.loaded[0][1]["instanceGroup"][0]["count"] == 1
    chosen = (_trial(A, _p(14, 4200.0, 6.4)), _p(14, 4200.0, 6.4))
    trial, point = pick_confirmed([chosen, *climbed], 9.0)
    assert trial.candidate == A and point.load == 18
    # Over the target at the first step: nothing else measured, the confirmed point stands.
    asked, climbed, _ = _climb_with(monkeypatch, tmp_path, {18: (4900.0, 9.3)})
    assert asked == [(18, 5.0)] and pick_confirmed([chosen, *climbed], 9.0)[1].load == 14
    # Within the target but serving no more (saturated): the climb stops there and keeps the lower point.
    asked, climbed, _ = _climb_with(monkeypatch, tmp_path, {18: (4100.0, 7.0)})
    assert asked == [(18, 5.0)] and pick_confirmed([chosen, *climbed], 9.0)[1].load == 14


def test_the_two_configs_that_held_are_measured_again_in_the_reverse_order_and_picked_on_both(monkeypatch, tmp_path):
    a, b, c = _trial(A, _p(32, 8100, 8.0)), _trial(B, _p(16, 8049, 4.7)), _trial(C, _p(8, 6000, 4.0))
    remeasured = [(a, _p(32, 7900, 9.6)), (a, _p(16, 7400, 5.1)), (b, _p(16, 7800, 5.0)), (c, _p(8, 6000, 4.0))]
    pair = rivals(remeasured, 9.0)
    assert [(t.candidate, p.throughput_rps) for t, p in pair] == [(A, 7400), (B, 7800)]  # in measured order
    assert len(rivals(remeasured[:3], 9.0)) == 2 and len(rivals(remeasured[:2], 9.0)) == 1
    # B read more once, but measured again after A's drift the other way, A serves more on the mean (7500 vs 7400);
    # its figure is the lower of its two.
    trial, point = pick_paired(pair, [(b, _p(16, 7000, 5.2)), (a, _p(16, 7600, 5.0))], 9.0)
    assert trial is a and point.throughput_rps == 7400
    # A's second measurement breaks the target: B wins, on its lower figure; neither holds twice: no pick.
    trial, point = pick_paired(pair, [(b, _p(16, 7000, 5.2)), (a, _p(16, 7600, 9.5))], 9.0)
    assert trial is b and point.throughput_rps == 7000
    assert pick_paired(pair, [(b, _p(16, 7000, 9.2)), (a, _p(16, 7600, 9.5))], 9.0) is None
    # Neither held twice: the first re-measurement's best stays, and the output says why.
    said: list[str] = []
    chosen = (b, _p(16, 7800, 5.0))
    assert after_paired(chosen, pair, [(b, _p(16, 7000, 9.2)), (a, _p(16, 7600, 9.5))], 9.0, said.append) is chosen
    assert len(said) == 1 and "neither held the target both times" in said[0] and B.label() in said[0]
    said.clear()
    assert after_paired(chosen, pair, [(b, _p(16, 7000, 5.2)), (a, _p(16, 7600, 5.0))], 9.0, said.append)[0] is a
    assert said == []
    # The second measurements run B first (measured last the first time), each with its config loaded, same load.
    from tritongen.perf import perf_analyzer

    asked = []
    monkeypatch.setattr(
        perf_analyzer,
        "points_from_perf_analyzer",
        lambda level, requests, *_: asked.append(level.concurrency[0]) or [_p(level.concurrency[0], 7000, 5)],
    )
    server = _Server()
    again = paired(
        pair,
        _again(TuneSpec(model_dir=tmp_path, max_p99_ms=10, load_warmup_s=0), server),
    )
    assert [t.candidate for t, _ in again] == [B, A] and asked == [16, 16]
    assert [c["dynamicBatching"].get("preferredBatchSize", []) for _, c in server.loaded] == [[16], []]


def test_the_best_configs_within_the_window_are_measured_again_best_first():
    trials = [
        _trial(C, _p(16, 7000, 6.0)),
        _trial(A, _p(32, 7600, 8.5)),
        _trial(B, _p(16, 8049, 4.7)),
        _trial(Candidate(2, 0, 1, ()), _p(2, 900, 20.0)),
    ]  # no point within the target
    assert [t.candidate for t in contenders(trials, 2, 10.0)] == [B, A]
    assert [t.candidate for t in contenders(trials, 3, 10.0)] == [B, A]  # C is 13% below: not a contender
    assert [t.candidate for t in contenders(trials, 3, 15.0)] == [B, A, C]
    assert [t.candidate for t in contenders(trials, 1, 50.0)] == [B]
    assert contenders(trials[3:], 2, 10.0) == []


def test_the_winner_is_the_highest_re_measured_throughput_that_holds_the_target():
    a, b = _trial(A, _p(32, 8100, 8.0)), _trial(B, _p(16, 8049, 4.7))
    # A searched best, but measured again its p99 breaks the target; its lower point holds but B's is faster.
    remeasured = [(a, _p(32, 7900, 9.6)), (a, _p(16, 7400, 5.1)), (b, _p(16, 7800, 5.0))]
    winner, point = pick_confirmed(remeasured, 9.0)
    assert winner is b and point.throughput_rps == 7800
    assert pick_confirmed(remeasured[:2], 9.0)[1].load == 16  # A's lower point
    assert pick_confirmed([(a, _p(32, 7900, 9.6))], 9.0) is None  # nothing holds: no winner
    assert pick_confirmed([(a, _p(16, 9000, 2.0, errors={"timeout": 3}))], 9.0) is None


def test_when_no_re_measurement_holds_the_next_configs_are_measured_again():
    # The search's best (B) was one lucky point; A is within the window; C, robust but 13% below, was not a
    # contender. Neither contender held measured again: C and then D are next, never B or A again, never E.
    D = Candidate(2, 100, 8, (8,))
    b, a = _trial(B, _p(16, 8100, 5.6)), _trial(A, _p(20, 7800, 5.4))
    c, d = _trial(C, _p(8, 5500, 4.5), _p(16, 7000, 8.2)), _trial(D, _p(16, 5800, 7.9))
    e = _trial(Candidate(2, 0, 1, ()), _p(2, 900, 20.0))  # no point within the target
    trials = [b, a, e, d, c]
    top = contenders(trials, 2, 10.0)
    assert [t.candidate for t in top] == [B, A]
    remeasured = [(b, _p(16, 3800, 16.8)), (a, _p(20, 4600, 15.5))]
    assert pick_confirmed(remeasured, 9.0) is None
    assert [t.candidate for t in fallback_contenders(trials, top, 2)] == [C, D]
    assert [t.candidate for t in fallback_contenders(trials, top, 1)] == [C]
    assert fallback_contenders([b, a, e], top, 2) == []  # nothing else has a point within the target
    # the fallback's re-measurement that holds is the winner, and only one that holds
    winner, point = pick_confirmed([*remeasured, (c, _p(16, 6200, 9.4)), (c, _p(8, 5200, 4.9))], 9.0)
    assert winner is c and point.load == 8


def test_the_table_names_each_re_measurement_with_its_config_and_verdict():
    a, b = _trial(A, _p(32, 8100, 8.0)), _trial(B, _p(16, 8049, 4.7))
    remeasured = [_p(32, 7900, 9.6), _p(16, 7800, 5.0)]
    result = TuneResult(
        "conv", b, a, (a, b), (), 100.0, None, Path("x"), True, tuple(remeasured), remeasured[1], (A, B), 9.0
    )
    text = result.table()
    assert "+ 2 re-measurements" in text and "p99 <= 9.00 ms" in text
    lines = [line for line in text.splitlines() if line.startswith("measured again")]
    assert "(over the target)" in lines[0] and A.label() in lines[0]
    assert "(the winner)" in lines[1] and B.label() in lines[1]
    assert result.operating_point is remeasured[1]
    assert TuneResult("conv", b, a, (a, b), (), 1.0, None, None, True).operating_point is b.best  # unconfirmed


def test_the_record_keeps_every_re_measurement_with_its_config(tmp_path):
    import json

    from tritongen.perf.tune_record import write_winner
    from tritongen.validate import config_from_file

    model = tmp_path / "repo" / "m"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    (model / "config.pbtxt").write_text(
        'name: "m"\nbackend: "python"\nmax_batch_size: 8\ninput [{name: "x" data_type: TYPE_FP32 dims: [4]}]\n'
        'output [{name: "y" data_type: TYPE_FP32 dims: [4]}]\ndynamic_batching { max_queue_delay_microseconds: 500 }\n'
        "instance_group [{count: 1 kind: KIND_CPU}]\n"
    )
    spec = TuneSpec(model_dir=model, max_p99_ms=10)
    a, b = _trial(A, _p(32, 8100, 8.0)), _trial(B, _p(16, 8049, 4.7))
    remeasured = [(a, _p(32, 7900, 9.6)), (b, _p(16, 7800, 5.0))]
    config_path, record_path = write_winner(
        spec, config_from_file(model / "config.pbtxt"), b, a, [a, b], [], 12.0, remeasured, remeasured[1][1]
    )
    record = json.loads(record_path.read_text())
    rows = [(r["config"]["preferred"], r["throughput_rps"], r["engine"]) for r in record["confirmation"]]
    assert rows == [([], 7900, "perf_analyzer"), ([16], 7800, "perf_analyzer")]
    assert record["confirmed"]["throughput_rps"] == 7800 and record["target_p99_ms"] == pytest.approx(9.0)
    assert record["winner"]["config"]["preferred"] == [16] and record["search"]["confirm_engine"] == "perf_analyzer"
    assert config_from_file(config_path).dynamic_batching.preferred_batch_size == [16]


def test_the_written_winner_replaces_planted_links_and_refuses_a_linked_record_folder(tmp_path):
    """tune wrote its record and config through links planted in the model folder (a victim file outside the
    repository received them, and config.pbtxt became a link to it)."""
    from tritongen.perf.tune_record import write_winner
    from tritongen.validate import config_from_file

    model = tmp_path / "repo" / "m"
    (model / "1" / "tritongen").mkdir(parents=True)
    (model / "1" / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    (model / "config.pbtxt").write_text(
        'name: "m"\nbackend: "python"\nmax_batch_size: 8\ninput [{name: "x" data_type: TYPE_FP32 dims: [4]}]\n'
        'output [{name: "y" data_type: TYPE_FP32 dims: [4]}]\ninstance_group [{count: 1 kind: KIND_CPU}]\n'
    )
    base = config_from_file(model / "config.pbtxt")
    victim = tmp_path / "victim.txt"
    victim.write_text("victim")
    (model / "1" / "tritongen" / "tune.json").symlink_to(victim)
    original = (model / "config.pbtxt").read_text()
    (model / "config.pbtxt").unlink()
    (tmp_path / "config-elsewhere.pbtxt").write_text(original)
    (model / "config.pbtxt").symlink_to(tmp_path / "config-elsewhere.pbtxt")
    spec = TuneSpec(model_dir=model, max_p99_ms=10)
    a, b = _trial(A, _p(32, 8100, 8.0)), _trial(B, _p(16, 8049, 4.7))
    config_path, record_path = write_winner(spec, base, b, a, [a, b], [], 12.0)
    assert victim.read_text() == "victim" and (tmp_path / "config-elsewhere.pbtxt").read_text() == original
    assert not record_path.is_symlink() and not config_path.is_symlink()
    assert config_from_file(config_path).dynamic_batching.preferred_batch_size == [16]
    # a record folder that is a link: refused before anything is written
    (model / "1" / "tritongen" / "tune.json").unlink()
    (model / "1" / "tritongen").rmdir()
    (tmp_path / "outside").mkdir()
    (model / "1" / "tritongen").symlink_to(tmp_path / "outside", target_is_directory=True)
    before = config_path.read_text()
    with pytest.raises(TritongenError, match=r"tritongen is a link, and tritongen would write through it"):
        write_winner(spec, base, a, b, [a, b], [], 12.0)
    assert list((tmp_path / "outside").iterdir()) == [] and config_path.read_text() == before


def test_the_bench_finds_the_highest_concurrency_that_holds_the_bound_with_few_probes():
    """bench/tune_vs_model_analyzer.py compares both winners at the highest concurrency whose p99 holds the bound:
    from the chosen concurrency, doubling while it holds, else bisecting down, within a probe budget."""
    from bench.tune_vs_model_analyzer import highest_holding

    def up_to(limit: int):
        return lambda c: c <= limit

    # chosen 32 broke the bound: bisect down between 1 and 32
    level, probes = highest_holding(up_to(20), 32, False, 64)
    assert level == 20 and [c for c, _ in probes] == [16, 24, 20, 22, 21]
    # chosen 5 held: double to 10 (over), bisect back
    level, probes = highest_holding(up_to(7), 5, True, 64)
    assert level == 7 and [c for c, _ in probes] == [10, 7, 8]
    # never above the search space's largest concurrency; holding there needs no bisection
    level, probes = highest_holding(up_to(1000), 5, True, 64)
    assert level == 64 and max(c for c, _ in probes) == 64
    assert highest_holding(up_to(1000), 64, True, 64) == (64, [])
    # nothing holds, not even one request at a time
    level, probes = highest_holding(up_to(0), 32, False, 64)
    assert level is None and probes[-1] == (1, False)
    # the budget caps the probes: the answer is the highest level seen to hold
    level, probes = highest_holding(up_to(20), 32, False, 64, max_probes=2)
    assert level == 16 and len(probes) == 2


def test_a_freshly_loaded_config_gets_unmeasured_load_before_its_first_measurement(monkeypatch, tmp_path):
    # The built-in engine (replaced here by a recorder) sends load at the concurrency about to be measured, as long
    # as load_warmup_s, and its figures are thrown away; 0 turns it off.
    from tritongen.perf import loadgen, perf_analyzer

    calls = []
    monkeypatch.setattr(loadgen, "points_from_builtin", lambda level, requests, *_: calls.append(("warm", level)) or [])
    monkeypatch.setattr(
        perf_analyzer,
        "points_from_perf_analyzer",
        lambda level, requests, *_: calls.append(("measure", level)) or [_p(level.concurrency[0], 7000, 5)],
    )
    a, b = _trial(A, _p(16, 7400, 5.1)), _trial(B, _p(8, 7800, 5.0))
    spec = TuneSpec(model_dir=tmp_path, max_p99_ms=10, load_warmup_s=2.0)
    paired(
        [(a, a.points[0]), (b, b.points[0])],
        _again(spec),
    )
    assert [(kind, level.concurrency[0]) for kind, level in calls] == [
        ("warm", 8),
        ("measure", 8),
        ("warm", 16),
        ("measure", 16),
    ]
    warm = calls[0][1]
    assert warm.engine == "builtin" and warm.duration_s == 2.0 and warm.warmup_s == 0.0
    calls.clear()
    paired(
        [(a, a.points[0]), (b, b.points[0])],
        _again(TuneSpec(model_dir=tmp_path, max_p99_ms=10, load_warmup_s=0)),
    )
    assert [kind for kind, _ in calls] == ["measure", "measure"]
    with pytest.raises(TritongenError):
        TuneSpec(model_dir=tmp_path, max_p99_ms=10, load_warmup_s=-1)


def test_the_config_loaded_and_just_measured_is_not_loaded_and_warmed_again(monkeypatch, tmp_path):
    # The paired measurement runs in the reverse order of the first: its first config is the one the confirmation
    # measured last, still loaded and warm; loading it again would cost a load and a warm-up for nothing.
    from tritongen.client import ModelLoadError
    from tritongen.perf import loadgen, perf_analyzer

    calls = []
    monkeypatch.setattr(loadgen, "points_from_builtin", lambda level, requests, *_: calls.append("warm") or [])
    monkeypatch.setattr(
        perf_analyzer,
        "points_from_perf_analyzer",
        lambda level, requests, *_: calls.append("measure") or [_p(level.concurrency[0], 7000, 5)],
    )
    a, b = _trial(A, _p(16, 7400, 5.1)), _trial(B, _p(8, 7800, 5.0))
    server = _Server()
    again = _again(TuneSpec(model_dir=tmp_path, max_p99_ms=10, load_warmup_s=1.0), server)
    confirmed = confirm([a, b], again, "perf_analyzer")  # A, then B: both loaded and warmed
    assert [t.candidate for t, _ in confirmed] == [A, B] and again.loaded == B
    calls.clear()
    paired(confirmed, again)  # B (loaded now: measured as it is), then A (loaded and warmed)
    assert calls == ["measure", "warm", "measure"] and len(server.loaded) == 3 and again.loaded == A

    class _Refusing(_Server):
        def load(self, model, config_json):
            raise ModelLoadError("refused")

    again.server = _Refusing()
    with pytest.raises(ModelLoadError):
        again.load(B, 8)
    assert again.loaded is None  # what the server holds after a failed load is not known: the next one loads


def test_a_later_contender_gets_its_lower_points_tried_only_while_they_could_still_win(monkeypatch, tmp_path):
    # A holds at 7,000 req/s. B's best point (concurrency 24) breaks the target when measured again; its next by
    # search figure is at a higher load (32): not tried; then 16 (8,000, over what A confirmed) is tried and holds;
    # 8 (6,500 in the search, under A's 7,000) is not.
    from tritongen.perf import perf_analyzer

    reads = {(A, 16): (7000, 5.0), (B, 24): (8800, 9.6), (B, 16): (7900, 8.0), (B, 8): (6400, 4.0)}
    asked = []
    again = _again(TuneSpec(model_dir=tmp_path, max_p99_ms=10, load_warmup_s=0))

    def fake(level, requests, *_):
        key = (again.loaded, level.concurrency[0])  # what the config loaded now reads at that load
        asked.append(key)
        rps, p99 = reads[key]
        return [_p(level.concurrency[0], rps, p99)]

    monkeypatch.setattr(perf_analyzer, "points_from_perf_analyzer", fake)
    a = _trial(A, _p(16, 7400, 5.1))
    b = _trial(B, _p(24, 9000, 8.5), _p(32, 8500, 8.9), _p(16, 8000, 7.0), _p(8, 6500, 3.0))
    confirmed = confirm([a, b], again, "perf_analyzer")
    assert asked == [(A, 16), (B, 24), (B, 16)]
    assert pick_confirmed(confirmed, 9.0)[0].candidate == B
    asked.clear()
    reads[(B, 16)] = (7900, 9.5)  # over the target too: the third point, under A's figure, is still not tried
    confirm([a, b], again, "perf_analyzer")
    assert asked == [(A, 16), (B, 24), (B, 16)]


def test_a_newcomer_is_kept_only_if_it_beats_the_best_config_measured_again_beside_it(monkeypatch, tmp_path):
    # The search engine (perf_analyzer here, replaced by a table of what the best config reads now) measures the
    # best config again at its best point's load, as long as a search point, after loading it.
    from tritongen.perf import perf_analyzer

    now = {}
    asked = []

    def fake(level, requests, *_):
        asked.append((level.concurrency[0], level.duration_s, level.engine))
        rps, p99 = now["reads"]
        return [_p(level.concurrency[0], rps, p99)]

    monkeypatch.setattr(perf_analyzer, "points_from_perf_analyzer", fake)
    spec = TuneSpec(model_dir=tmp_path, max_p99_ms=10, engine="perf_analyzer", duration_s=1.5, load_warmup_s=0)
    incumbent = _trial(A, _p(8, 5000, 4.0), _p(16, 6000, 8.0))
    challenger = _trial(C, _p(16, 6600, 7.0))  # 10% over the best's search figure

    def check(reads):
        now["reads"] = reads
        server, checks = _Server(), []
        again = _again(spec, server)
        return beats_side_by_side(challenger, incumbent, again, checks), server, checks

    # the best config reads more now (6,500): 6,600 is not 3% over it; it reads 5,900: the newcomer stays
    kept, server, checks = check((6500, 8.0))
    assert not kept and asked == [(16, 1.5, "perf_analyzer")]
    assert server.loaded[0][1]["instanceGroup"][0]["count"] == 1  # the best config (A) was loaded again to measure
    assert checks[0]["again"]["throughput_rps"] == 6500 and checks[0]["kept"] is False
    assert checks[0]["challenger"]["instances"] == 2 and checks[0]["incumbent_search_rps"] == 6000
    assert check((5900, 8.0))[0]
    # its point breaks the target now (9.5 ms over 9.0): its figure does not stand, the newcomer is kept
    assert check((7000, 9.5))[0]
    # a measurement that fails keeps the newcomer, with nothing measured in the record
    monkeypatch.setattr(
        perf_analyzer, "points_from_perf_analyzer", lambda *_: (_ for _ in ()).throw(TritongenError("busy", "retry"))
    )
    kept, _, checks = check((0, 0))
    assert kept and checks == [{**checks[0], "again": None, "kept": True}]


def test_the_bench_compares_capacity_on_a_shared_ladder_deciding_the_level_per_round():
    """bench/tune_vs_model_analyzer.py's capacity at the bound: both winners on one ladder from half the lower
    chosen concurrency to 1.5x the higher; a round's capacity is the most served at a level whose p99 held."""
    from bench.tune_vs_model_analyzer import capacity_levels, capacity_of

    assert capacity_levels({"conv_tune": 16, "conv_ma": 21}, 64, 7) == [8, 12, 16, 20, 24, 28, 32]
    assert capacity_levels({"conv_tune": 60, "conv_ma": 40}, 64, 5) == [20, 31, 42, 53, 64]  # capped at the max
    assert capacity_levels({"conv_tune": 1, "conv_ma": 1}, 64, 7) == [1, 2]  # no repeats
    curve = [_p(8, 3000, 5.0), _p(12, 4200, 7.0), _p(16, 5100, 9.6), _p(20, 5300, 10.4), _p(24, 5000, 9.9)]
    assert capacity_of(curve, 10.0).load == 16  # 20 served more but broke the bound; 24 held but served less
    assert capacity_of(curve, 9.5).load == 12
    assert capacity_of([_p(8, 3000, 12.0), _p(12, 9000, 3.0, errors={"unavailable": 1})], 10.0) is None


def test_the_walk_up_aims_at_the_concurrency_where_p99_would_reach_the_target():
    """From a point within the target, the next concurrency is where p99 would reach the target if it grew in
    proportion to concurrency: at least one more, at most double, never past the largest concurrency searched."""
    from tritongen.perf.tune_select import next_up

    assert next_up(_p(16, 5000, 7.0), 9.0, 128) == 20  # 16 x 9 / 7 = 20.6
    assert next_up(_p(8, 3000, 1.0), 9.0, 128) == 16  # far below the target: a doubling at most
    assert next_up(_p(16, 5000, 8.9), 9.0, 128) == 17  # at the target already: one more
    assert next_up(_p(16, 5000, 2.0), 9.0, 24) == 24  # capped by the search's largest concurrency
    assert next_up(_p(24, 5000, 2.0), 9.0, 24) is None


def test_the_summary_says_which_figures_to_plan_capacity_with():
    a = _trial(A, replace(_p(16, 8100, 4.0), engine="builtin"))
    b = _trial(B, replace(_p(16, 9000, 4.7), engine="builtin"))
    remeasured = [replace(_p(16, 6000, 5.0), measured_s=3.0), replace(_p(16, 6300, 5.0), measured_s=3.0)]
    result = TuneResult(
        "conv", b, a, (a, b), (), 100.0, None, None, True, tuple(remeasured), remeasured[1], (A, B), 9.0
    )
    text = result.table()
    assert "plan capacity with the re-measured figure: 6300.0 req/s at concurrency 16, p99 5.00 ms" in text
    assert "(perf_analyzer, 3 s); the search's figures (builtin, the best of short measurements) are optimistic" in text
    # Winner and starting config were both measured again: they are compared on those figures, not the search's.
    assert f"best: {B.label()}: 9000.0 req/s in the search (1.05x the starting config, both measured again)" in text
    # Unconfirmed: no capacity line, and the ratio says it compares search figures.
    text = TuneResult("conv", b, a, (a, b), (), 1.0, None, None, True).table()
    assert "plan capacity" not in text and "(1.11x the starting config's search figure)" in text
    # The starting config won: said so, with no ratio; and, as B read more in the search, why it is the best (a
    # newcomer read "<- best" beside a row of higher figures as a mistake).
    held = (replace(_p(16, 6300, 5.0), measured_s=3.0), replace(_p(16, 6000, 5.0), measured_s=3.0))
    text = TuneResult("conv", a, a, (a, b), (), 1.0, None, None, True, held, held[0], (A, B), 9.0).table()
    assert f"best: {A.label()}: 8100.0 req/s in the search (the starting config); chosen over {B.label()}," in text
    assert "read more in the search (9000.0 req/s) but read less when measured again (6000.0 req/s)" in text
    assert [line for line in text.splitlines() if "<- best" in line][0].endswith("<- best (chosen when measured again)")
    over = (held[0], replace(_p(16, 9500, 30.0), measured_s=3.0))  # B read more again, but over the p99 target
    text = TuneResult("conv", a, a, (a, b), (), 1.0, None, None, True, over, over[0], (A, B), 9.0).table()
    assert "read more in the search (9000.0 req/s) but went over the p99 target when measured again" in text
    text = TuneResult("conv", a, a, (a, b), (), 1.0, None, None, True).table()  # B never measured again: no reason
    assert "chosen " not in text
    text = TuneResult("conv", a, a, (a,), (), 1.0, None, None, True).table()
    assert f"best: {A.label()}: 8100.0 req/s in the search (the starting config)" in text and "chosen " not in text


def test_the_summary_says_when_the_search_stopped_at_max_concurrency_far_under_the_target():
    a = _trial(A, _p(8, 7000, 1.5), _p(16, 8000, 2.15))
    capped = TuneResult("conv", a, a, (a,), (), 1.0, None, None, True, target_p99_ms=9.0, max_concurrency=16)
    assert "note: the search stopped at --max-concurrency 16, where the winner's p99 is 2.15 ms against a target" in (
        capped.table()
    )
    assert "raise --max-concurrency (e.g. 32)" in capped.table()
    # never a value TuneSpec refuses: 3000 suggests 4096, and at 4096 the note says it is the limit
    top = _trial(A, _p(3000, 8000, 2.15))
    assert "(e.g. 4096)" in replace(capped, winner=top, baseline=top, trials=(top,), max_concurrency=3000).table()
    top = _trial(A, _p(4096, 8000, 2.15))
    at_limit = replace(capped, winner=top, baseline=top, trials=(top,), max_concurrency=4096).table()
    assert "raise" not in at_limit and "4096 is the most one client keeps in flight" in at_limit
    # Under the cap, or at the cap with p99 near the target: the figures are the bound's, no note.
    assert "--max-concurrency" not in replace(capped, max_concurrency=32).table()
    near = _trial(A, _p(16, 8000, 8.5))
    assert "--max-concurrency" not in replace(capped, winner=near, baseline=near, trials=(near,)).table()


def _cli_tune(monkeypatch, capsys, tmp_path, result: TuneResult, *args: str):
    from tritongen import api
    from tritongen.cli import main

    monkeypatch.setattr(api, "tune", lambda *a, **k: result)
    main(["tune", str(tmp_path / "conv"), "--max-p99-ms", "10", *args])
    return capsys.readouterr().out


def test_the_cli_says_the_starting_config_won_and_what_the_server_serves(monkeypatch, capsys, tmp_path):
    a = _trial(A, _p(16, 8100, 4.0))
    served = "the server now serves conv with config.pbtxt's config (instances=1 ...)"
    same = TuneResult("conv", a, a, (a,), (), 1.0, None, None, True, unchanged=True, served=served)
    out = _cli_tune(monkeypatch, capsys, tmp_path, same)
    assert f"the starting config is best: {tmp_path / 'conv' / 'config.pbtxt'} left as it was; {served}" in out
    assert "wrote" not in out and "reloaded" not in out
    b = _trial(B, _p(16, 9000, 4.0))
    dry = TuneResult("conv", b, a, (a, b), (), 1.0, None, None, True, served=served)
    out = _cli_tune(monkeypatch, capsys, tmp_path, dry, "--dry-run")
    assert f"dry run: {tmp_path / 'conv' / 'config.pbtxt'} left as it was; {served}; drop --dry-run" in out
    written = replace(dry, config_path=tmp_path / "c", record_path=tmp_path / "r", served="the server now serves X")
    out = _cli_tune(monkeypatch, capsys, tmp_path, written)
    assert f"wrote {tmp_path / 'c'} (validated); the server now serves X; measurements in {tmp_path / 'r'}" in out


def test_sigterm_during_the_tune_command_is_taken_as_ctrl_c(monkeypatch, capsys, tmp_path):
    import os
    import signal
    import time

    from tritongen import api
    from tritongen.cli import main

    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip("SIGTERM already has a handler here: the command leaves it alone")

    def tune(*args, **kwargs):
        # Without a handler SIGTERM would end pytest itself: fail instead.
        assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL, "tune runs with SIGTERM's default (exit at once)"
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        raise AssertionError("SIGTERM did not interrupt tune")

    monkeypatch.setattr(api, "tune", tune)
    with pytest.raises(SystemExit) as exited:
        main(["tune", str(tmp_path / "conv"), "--max-p99-ms", "10"])
    assert exited.value.code == 143 and "aborted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # given back after the command


def test_a_server_that_refused_every_load_is_not_given_config_pbtxt_back(tmp_path):
    # No explicit model control: the first load is refused before anything changed, so tune has nothing to undo
    # (and must not claim to have put the server back); a config Triton itself refused did reach it.
    from tritongen.client import ModelLoadError

    class _NoControl(_Server):
        def load(self, model, config_json):
            raise TritongenError("the server does not allow to load models", "start it with explicit control")

    class _Rejecting(_Server):
        def load(self, model, config_json):
            raise ModelLoadError("bad config")

    again = _again(TuneSpec(model_dir=tmp_path, max_p99_ms=10), _NoControl())
    with pytest.raises(TritongenError):
        again.swap(A)
    assert not again.changed
    again.server = _Rejecting()
    with pytest.raises(ModelLoadError):
        again.swap(A)
    assert again.changed
    again = _again(TuneSpec(model_dir=tmp_path, max_p99_ms=10))
    again.swap(A)
    assert again.changed


def test_a_ladder_point_without_answers_says_so_rather_than_p99_nan():
    from tritongen.perf.results import latency_summary_from_ms
    from tritongen.perf.tune_select import ladder_line

    empty = replace(_p(8, 0.0, 1.0, errors={"timeout": 3}), latency=latency_summary_from_ms([]))
    assert ladder_line(empty, False) == "  concurrency   8:      0.0 req/s  no answers  errors {'timeout': 3}"
    assert "nan" not in ladder_line(empty, False)
    assert ladder_line(_p(4, 900.0, 7.5), True) == "  concurrency   4:    900.0 req/s  p99    7.50 ms"
    assert ladder_line(_p(4, 900.0, 12.5), False).endswith("p99   12.50 ms  (over the target)")


def test_a_tuned_max_batch_above_the_batch_the_build_checked_is_noted(tmp_path):
    """The build gated batches 1 and 16; tune wrote max batch 32 with nothing said about batch 32 never being
    compared with PyTorch."""
    import tritongen
    from tests import factories
    from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, write_model
    from tritongen.perf.tune_configs import checked_max_batch

    a, b = _trial(A, _p(16, 8100, 4.0)), _trial(B, _p(16, 9000, 4.7))
    checked = B.max_batch_size // 2
    text = TuneResult("conv", b, a, (a, b), (), 1.0, None, None, True, checked_max_batch=checked).table()
    assert (
        f"note: the tuned max batch {B.max_batch_size} is above the largest batch the build compared with PyTorch "
        f"({checked})" in text
    )
    assert (
        "above the largest batch"
        not in TuneResult("conv", b, a, (a, b), (), 1.0, None, None, True, checked_max_batch=B.max_batch_size).table()
    )
    write_model(tmp_path, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    assert checked_max_batch(tmp_path / "double") is None  # no build: no manifest says
    seq = factories.save_model(
        factories.make_dynamic_seq(), tmp_path / "seq.pt", "torchscript-trace", factories.dynamic_seq_inputs()
    )
    built = tritongen.build(seq, inputs=["x:FP32:-1,8"], max_batch_size=4, repo=tmp_path / "repo", name="seq")
    assert checked_max_batch(built.model_dir) == 4
