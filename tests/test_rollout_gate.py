"""The rollout gate's latency verdict, rollback to a refused version, the record against what a restarted server
serves, and SIGTERM during a rollout.

The latency verdict (tritongen/deploy/gate.py's module doc) is checked twice: on synthetic latencies (seeded, no
clock involved) where an identical model with hiccups must never be refused and a 1.5x or 3x slower one always;
and on a real server with a Python-backend model whose latency is a fixed sleep (20 ms, and 60 ms for the slow
version), so the margins are wide: the slow version is refused and the identical one passes run after run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SLEEPY_UNBATCHED_CONFIG, free_ports, sleepy_model, write_model
from tests.test_bad_input import _run
from tritongen.errors import TritongenError

NAME = "sleepy"
CONFIG = SLEEPY_UNBATCHED_CONFIG
SLEEP_S = {1: 0.02, 2: 0.06, 3: 0.02}  # 2: three times slower; 3: the same model as 1


# --- the verdict on synthetic latencies (no server, no clock) ---------------------------------------------------


def _noisy(rng: np.random.Generator, base_ms: float, n: int) -> np.ndarray:
    """A ~1 ms model on a busy 2-core machine: jitter, and now and then a scheduler hiccup of a few ms."""
    times = base_ms * rng.lognormal(0.0, 0.08, n)
    hiccups = rng.random(n) < 0.03
    return times + hiccups * rng.uniform(2.0, 8.0, n)


def _rounds(seed: int, slowdown: float, rounds: int = 10, per_round: int = 20) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    live = [list(_noisy(rng, 1.0, per_round)) for _ in range(rounds)]
    cand = [list(_noisy(rng, 1.0 * slowdown, per_round)) for _ in range(rounds)]
    return live, cand


def test_an_identical_model_is_never_refused_for_noise_that_flipped_the_p99_rule():
    from tritongen.deploy.gate import compare_latency

    flipped = 0
    for seed in range(200):
        live, cand = _rounds(seed, 1.0)
        verdict = compare_latency(live, cand)
        assert not verdict.consistently_above(1.2), (seed, verdict)
        pooled = np.percentile(np.concatenate(cand), 99) / np.percentile(np.concatenate(live), 99)
        flipped += pooled > 1.2  # the earlier rule: pooled p99 ratio over the threshold
    assert flipped >= 20, flipped  # the same noise refused the identical model often under the p99 rule


@pytest.mark.parametrize("slowdown, share", [(3.0, 1.0), (1.5, 0.9)])
def test_a_consistently_slower_model_is_refused(slowdown, share):
    """3x slower: refused whatever the noise; 1.5x (25% above the threshold) in at least 90% of these noisy
    machines' draws (a round's p90 takes the hiccups that land in it: the price of not refusing on them)."""
    from tritongen.deploy.gate import compare_latency

    refused = 0
    for seed in range(200):
        verdict = compare_latency(*_rounds(seed, slowdown))
        refused += verdict.consistently_above(1.2)
        assert verdict.low <= verdict.ratio <= verdict.high
    assert refused >= share * 200, refused


def test_the_verdict_is_the_same_for_the_same_latencies_and_one_bad_round_is_outvoted():
    from tritongen.deploy.gate import compare_latency

    live, cand = _rounds(7, 1.0)
    assert compare_latency(live, cand) == compare_latency(live, cand)  # a fixed seed: no flapping on a rerun
    cand[3] = [t * 10 for t in cand[3]]  # one round where everything the candidate did was slow
    cand[8] = [t * 10 for t in cand[8]]  # and a second one
    assert not compare_latency(live, cand).consistently_above(1.2)
    with pytest.raises(ValueError):
        compare_latency(live, cand[:-1])


def test_the_api_takes_the_earlier_threshold_name_but_not_both(tmp_path):
    import tritongen
    from tritongen.deploy.gate import GateThresholds

    with pytest.raises(TritongenError, match="both max_latency_ratio and max_p99_ratio"):
        tritongen.rollout(tmp_path, NAME, to_version=2, max_p99_ratio=2.0, max_latency_ratio=2.0)
    with pytest.raises(TritongenError, match="has no model"):  # accepted, then the repository is looked at
        tritongen.rollout(tmp_path, NAME, to_version=2, max_p99_ratio=2.0)
    assert GateThresholds().max_latency_ratio == 1.2 and GateThresholds().latency_requests == 200
    with pytest.raises(TritongenError, match="takes no force=True"):
        tritongen.rollout(tmp_path, NAME, to_version=2, force=True)


# --- the record: refused versions, and what a restarted server serves -------------------------------------------


def _record_repo(tmp_path: Path, history: list[dict], live: int | None = 1, previous: int | None = 3) -> Path:
    repo = tmp_path / "repo"
    for version in (1, 2, 3):
        (repo / NAME / str(version)).mkdir(parents=True)
    record = {"tool": "tritongen-rollout", "model": NAME, "live": live, "previous": previous, "pending": None}
    (repo / NAME / "tritongen-rollout.json").write_text(json.dumps({**record, "history": history}))
    return repo


HISTORY = [
    {"at": "2026-12-06T07:20:00Z", "action": "rollout", "from": 1, "to": 2, "result": "refused"},
    {"at": "2026-12-06T07:21:00Z", "action": "rollout", "from": 1, "to": 3, "result": "promoted"},
    {"at": "2026-12-06T07:22:00Z", "action": "rollback", "from": 3, "to": 1, "result": "promoted"},
]


def test_the_record_knows_which_versions_the_gate_refused(tmp_path):
    from tritongen.deploy.rollout_record import read_record

    record = read_record(_record_repo(tmp_path, HISTORY) / NAME)
    assert record.gate_refusal(2) == HISTORY[0] and record.gate_refusal(3) is None and record.gate_refusal(1) is None
    assert record.last_change() == "rollback 3 -> 1 at 2026-12-06T07:22:00Z"
    later = [*HISTORY, {"action": "rollback", "from": 1, "to": 2, "result": "promoted", "forced": True}]
    assert read_record(_record_repo(tmp_path / "b", later) / NAME).gate_refusal(2) is not None  # forced: still refused
    passed = [*HISTORY, {"action": "rollout", "from": 1, "to": 2, "result": "promoted"}]
    assert read_record(_record_repo(tmp_path / "c", passed) / NAME).gate_refusal(2) is None  # gated again, passed


def test_the_command_back_to_a_forced_live_version_works_as_typed(tmp_path):
    # a forced rollback made the refused version 2 live; after a restart the warning's command (rollback
    # --to-version 2, no --force) must not be refused: returning to the live version brings nothing past the gate
    from tritongen.deploy.rollout import ROLLBACK, RolloutSpec, _check_not_refused
    from tritongen.deploy.rollout_record import read_record, served_warnings
    from tritongen.errors import TritongenError

    forced = [
        *HISTORY,
        {"at": "2026-12-06T07:23:00Z", "action": "rollback", "from": 1, "to": 2, "result": "promoted", "forced": True},
    ]
    repo = _record_repo(tmp_path, forced, live=2, previous=1)
    (line,) = served_warnings(repo, {NAME: [3]})
    assert "--to-version 2" in line and "--force" not in line
    record = read_record(repo / NAME)
    _check_not_refused(RolloutSpec(repo=repo, name=NAME, to_version=2, action=ROLLBACK), record, 2)  # no error
    other = _record_repo(tmp_path / "b", forced, live=1, previous=3)
    with pytest.raises(TritongenError, match="the gate refused version 2"):  # not live: still refused
        _check_not_refused(
            RolloutSpec(repo=other, name=NAME, to_version=2, action=ROLLBACK), read_record(other / NAME), 2
        )


def test_a_served_version_other_than_the_recorded_one_gets_a_warning_with_the_command(tmp_path):
    from tritongen.deploy.rollout_record import served_warnings

    repo = _record_repo(tmp_path, HISTORY)
    lines = served_warnings(repo, {NAME: [3], "other": [1]})
    assert len(lines) == 1 and lines[0].startswith(f"warning: '{NAME}' serves version 3, but its rollout record says")
    assert f"run tritongen rollback {repo} {NAME} --to-version 1" in lines[0]
    assert "rollback 3 -> 1 at 2026-12-06T07:22:00Z" in lines[0] and "restart" in lines[0]
    assert served_warnings(repo, {NAME: [1]}) == []  # the record's version serves: nothing to say
    (none_mode,) = served_warnings(repo, {NAME: [3]}, model_control="none")
    assert f"tritongen serve {repo} --model-control explicit" in none_mode
    (repo / NAME / "1").rename(repo / NAME / "gone")
    assert served_warnings(repo, {NAME: [3]}) == []  # the recorded version's folder was removed: no command to give
    (repo / NAME / "tritongen-rollout.json").write_text("not json")
    assert served_warnings(repo, {NAME: [3]}) == []  # unreadable: verify says so, not the banner


def _servable_record_repo(tmp_path: Path, history: list[dict], live: int = 1) -> Path:
    repo = _record_repo(tmp_path, history, live=live)
    (repo / NAME / "config.pbtxt").write_text(CONFIG)
    for version in (1, 2, 3):
        (repo / NAME / str(version) / "model.py").write_text(sleepy_model(SLEEP_S[version]))
    return repo


def test_the_recorded_live_version_is_pinned_in_the_served_copy_unless_an_ensemble_calls_another(tmp_path):
    from tritongen.deploy.rollout_record import pin_recorded_versions
    from tritongen.validate import config_from_file

    repo = _servable_record_repo(tmp_path, HISTORY)
    (note,) = pin_recorded_versions(repo)
    assert note.startswith(f"'{NAME}': serving version 1, as its rollout record says (rollback 3 -> 1 at")
    assert "would serve 3" in note
    config = config_from_file(repo / NAME / "config.pbtxt")
    assert list(config.version_policy.specific.versions) == [1] and config.name == NAME  # the rest kept
    assert pin_recorded_versions(repo) == []  # pinned already: the policy serves the live version

    again = _servable_record_repo(tmp_path / "b", HISTORY)
    ensemble = again / "ens"
    (ensemble / "1").mkdir(parents=True)
    (ensemble / "config.pbtxt").write_text(
        'name: "ens"\nplatform: "ensemble"\nmax_batch_size: 0\n'
        'input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        f'ensemble_scheduling {{ step [ {{ model_name: "{NAME}" model_version: 3 '
        'input_map { key: "X" value: "X" } output_map { key: "Y" value: "Y" } } ] }\n'
    )
    (warning,) = pin_recorded_versions(again)
    assert warning.startswith(f"warning: '{NAME}': its rollout record says version 1 is live, but ensemble 'ens'")
    assert "calls version 3: serving config.pbtxt's versions (3)" in warning
    assert not config_from_file(again / NAME / "config.pbtxt").HasField("version_policy")


def test_an_unsigned_record_is_followed_only_where_it_is_consistent_and_never_on_a_signed_repository(tmp_path):
    """The record is not signed: a hand-written one could otherwise pick any older version to serve."""
    from tritongen.deploy.rollout_record import pin_recorded_versions

    def pinned(repo: Path, signed: bool = False) -> str:
        before = (repo / NAME / "config.pbtxt").read_text()
        (line,) = pin_recorded_versions(repo, signed=signed)
        changed = (repo / NAME / "config.pbtxt").read_text() != before
        assert changed == (not line.startswith("warning:")), line
        return line

    line = pinned(_servable_record_repo(tmp_path / "a", HISTORY), True)
    assert "the record is not signed and the repository is" in line and "REFUSED" not in line
    assert "restart serve with --model-control explicit (a rollback loads and unloads models)" in line
    assert f"then run tritongen rollback REPO {NAME} --to-version 1 (with --url" in line  # what to do
    # the newest version, which a signed repository serves, is one the gate refused: said loudly, and the command
    # names the repository (editing config.pbtxt and signing again, the fix it gave, fails: the manifest holds it)
    gate = {"passed": False, "reasons": ["cosine 0.3705 < 0.99"], "latency_ratio": 1.0, "p99_ratio": 1.0}
    bad = [{"at": "2026-12-06T07:20:00Z", "action": "rollout", "from": 1, "to": 3, "result": "refused", "gate": gate}]
    repo = _servable_record_repo(tmp_path / "s", bad)
    (line,) = pin_recorded_versions(repo, signed=True, repo=Path("my repo"), explicit=True)
    assert "VERSION 3 NOW SERVED IS ONE THE ROLLOUT GATE REFUSED (cosine 0.3705 < 0.99)" in line, line
    assert f"run tritongen rollback 'my repo' {NAME} --to-version 1 now that the server is up" in line
    assert "sign again" not in line
    forged = [{"at": "x", "action": "rollout", "from": 3, "to": 1, "result": "refused"}]
    assert "that is not where its last finished change led" in pinned(_servable_record_repo(tmp_path / "b", forged))
    refused = [*HISTORY, {"action": "rollback", "from": 1, "to": 2, "result": "promoted"}]
    line = pinned(_servable_record_repo(tmp_path / "c", refused, live=2))
    assert "the gate refused that version and no forced rollback chose it" in line
    forced = [*HISTORY, {"action": "rollback", "from": 1, "to": 2, "result": "promoted", "forced": True}]
    assert pinned(_servable_record_repo(tmp_path / "d", forced, live=2)).startswith(f"'{NAME}': serving version 2")
    broken = _servable_record_repo(tmp_path / "e", HISTORY)
    (broken / NAME / "1" / "model.py").unlink()  # the live version does not validate: put back, said so
    line = pinned(broken)
    assert (
        "that version does not validate with today's config.pbtxt" in line
        and "serving config.pbtxt's versions (3)" in line
    )


# --- on a real server --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory, server_install):
    from tritongen.server import ServeSpec, server_from_repository

    root = tmp_path_factory.mktemp("rollout_gate")
    repo = root / "repo"
    write_model(repo, NAME, CONFIG, sleepy_model(SLEEP_S[1]))
    np.savez(root / "golden.npz", X=np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32))
    http, grpc, metrics = free_ports(3)
    spec = ServeSpec(repo=repo, http_port=http, grpc_port=grpc, metrics_port=metrics, model_control="explicit")
    state = {"repo": repo, "root": root, "spec": spec, "server": server_from_repository(spec)}
    try:
        for version in (2, 3):  # built into the live repository after the server started, as a user would
            (repo / NAME / str(version)).mkdir()
            (repo / NAME / str(version) / "model.py").write_text(sleepy_model(SLEEP_S[version]))
        yield state
    finally:
        state["server"].stop(timeout_s=30)


def _ready(world, name: str = NAME) -> list[int]:
    from tritongen.client import Triton

    with Triton(world["server"].grpc_url, "grpc", headers=world["server"].admin_headers("grpc")) as triton:
        return triton.ready_versions(name)


def _candidate_answers(world) -> int | None:
    """How many requests the gate's candidate has answered; None while none is loaded. (A candidate is loaded
    from the request's content, not the repository: the repository index does not list it.)"""
    from tritongen.client import Triton

    candidate = NAME + "__tritongen_candidate"
    with Triton(world["server"].grpc_url, "grpc", headers=world["server"].admin_headers("grpc")) as triton:
        if not triton.client.is_model_ready(candidate, headers=triton.headers):
            return None
        return sum(v["success_count"] for v in triton.version_statistics(candidate).values())


def _argv(world, action: str, *extra: str) -> list[str]:
    base = [action, str(world["repo"]), NAME, "--url", world["server"].grpc_url, "--allow-unverified", NAME]
    if action == "rollout":
        base += ["--golden", str(world["root"] / "golden.npz")]
    return [*base, *extra]


def _one_error(code: int, out: str, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, (code, out, err)
    return lines[0]


@pytest.mark.server
@pytest.mark.slow
def test_an_identical_version_passes_the_gate_on_every_run(world):
    import tritongen

    options = {"url": world["server"].grpc_url, "allow_unverified": [NAME]}
    for run in range(3):
        assert _ready(world) == [1]
        result = tritongen.rollout(
            world["repo"], NAME, to_version=3, golden=world["root"] / "golden.npz", gate_requests=100,
            out=world["root"] / f"same-{run}", **options,
        )  # fmt: skip
        assert result.gate is not None and result.gate.passed and result.promoted, result.summary()
        assert result.gate.latency is not None and len(result.gate.latency.round_ratios) == 10
        assert result.gate.latency.ratio < 2.0  # a fixed 20 ms sleep each: near 1, whatever the machine does
        back = tritongen.rollback(world["repo"], NAME, **options)
        assert back.promoted and back.to_version == 1 and _ready(world) == [1]
        report = json.loads((world["root"] / f"same-{run}" / "comparison.json").read_text())
        assert report["passed"] and report["latency"]["round_ratios"] and "latency_ratio" in report


@pytest.mark.server
@pytest.mark.slow
def test_a_three_times_slower_version_is_refused_and_a_rollback_to_it_needs_force(world):
    from tritongen.deploy.rollout_record import read_record

    out_dir = world["root"] / "slow"
    argv = _argv(world, "rollout", "--to-version", "2", "--gate-requests", "60", "--out", str(out_dir))
    line = _one_error(*_run(argv))
    assert "failed the gate (latency ratio" in line and "slower in most of 6 rounds" in line, line
    assert "every answer agreed" in line and "--max-latency-ratio" in line and "version 1 keeps serving" in line
    report = json.loads((out_dir / "comparison.json").read_text())
    assert report["latency"]["low"] > 2.0  # 60 ms against 20 ms of sleep: ~3x, far from the 1.2 threshold
    assert 'id="verdict">refused: latency ratio' in (out_dir / "comparison.html").read_text()
    assert _ready(world) == [1] and _candidate_answers(world) is None
    # an attack session: after a first rollout's refusal the record named no live version, and a restart served
    # config.pbtxt's newest, the refused one, unpinned and unwarned
    assert read_record(world["repo"] / NAME).live == 1

    # finding 8: a rollback to the refused version is refused, with the reason, unless --force
    record = world["repo"] / NAME / "tritongen-rollout.json"
    before = record.read_bytes()
    line = _one_error(*_run(_argv(world, "rollback", "--to-version", "2")))
    assert "the gate refused version 2 of 'sleepy' (rollout 1 -> 2 at" in line and "latency ratio" in line, line
    assert "a rollback skips the gate" in line and "--force" in line and "tritongen rollout" in line
    assert _ready(world) == [1] and record.read_bytes() == before
    code, out, err = _run(_argv(world, "rollback", "--to-version", "2", "--force"))
    assert code == 0 and "version 2 now answers every request" in out, (out, err)
    assert _ready(world) == [2] and read_record(world["repo"] / NAME).history[-1].get("forced") is True
    code, out, err = _run(_argv(world, "rollback", "--to-version", "1"))
    assert code == 0 and _ready(world) == [1], (out, err)
    # judged again (perhaps under other load): the earlier refusal is said first
    again = _argv(world, "rollout", "--to-version", "2", "--gate-requests", "60", "--out", str(out_dir) + "-again")
    code, out, err = _run(again)
    assert code != 0 and "note: the gate refused version 2 before (rollout 1 -> 2 at" in out + err, (out, err)
    assert _ready(world) == [1]


@pytest.mark.server
@pytest.mark.slow
def test_sigterm_during_the_gate_unloads_the_candidate_and_frees_the_lock(world):
    from tritongen.deploy.rollout_record import read_record

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    argv = _argv(world, "rollout", "--to-version", "2", "--gate-requests", "5000", "--out", str(world["root"] / "t"))
    record = world["repo"] / NAME / "tritongen-rollout.json"
    record_before = record.read_bytes() if record.exists() else None
    run = subprocess.Popen(
        [sys.executable, "-m", "tritongen", *argv], stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=root
    )
    try:
        deadline = time.monotonic() + 120
        while (_candidate_answers(world) or 0) < 20:  # the gate's timed requests are under way (minutes of them)
            if run.poll() is not None or time.monotonic() > deadline:
                run.kill()
                raise AssertionError(f"the gate never got going: {run.communicate()}")
            time.sleep(0.2)
        run.send_signal(signal.SIGTERM)
        out, err = (b.decode() for b in run.communicate(timeout=60))
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 143 and "aborted" in err and "Traceback" not in err, (run.returncode, out, err)
    assert "stopped during the gate: candidate unloaded; version 1 keeps serving" in err
    assert _candidate_answers(world) is None and _ready(world) == [1]
    assert not (world["repo"] / NAME / "tritongen-rollout.lock").exists()
    assert read_record(world["repo"] / NAME).pending is None
    assert (record.read_bytes() if record.exists() else None) == record_before  # put back as it was


@pytest.mark.server
@pytest.mark.slow
def test_after_a_rollback_and_a_restart_serve_rollout_and_rollback_say_what_serves(world, capsys):
    import tritongen
    from tritongen.cli import _print_ready
    from tritongen.deploy.rollout_record import server_warnings
    from tritongen.server import server_from_repository

    options = {"url": world["server"].grpc_url, "allow_unverified": [NAME]}
    gate = {"golden": world["root"] / "golden.npz", "gate_requests": 20, "max_latency_ratio": 20.0}  # not the point
    assert tritongen.rollout(world["repo"], NAME, to_version=3, out=world["root"] / "r", **gate, **options).promoted
    assert tritongen.rollback(world["repo"], NAME, to_version=1, **options).promoted
    world["server"].stop(timeout_s=30)
    world["server"] = server_from_repository(world["spec"])  # a restart: Triton loads the newest version, 3
    assert _ready(world) == [3]

    (warning,) = server_warnings(world["server"], world["repo"])
    assert f"warning: '{NAME}' serves version 3, but its rollout record says version 1 is live" in warning
    assert f"run tritongen rollback {world['repo']} {NAME} --to-version 1" in warning
    _print_ready(world["server"], world["repo"])  # serve's banner
    assert warning in capsys.readouterr().err

    line = _one_error(*_run(_argv(world, "rollback")))
    assert f"the server serves '{NAME}' version 3, but the rollout record says version 1 is live" in line, line
    assert "(rollback 3 -> 1 at" in line and "--to-version 1" in line and "no rollout" not in line
    code, out, err = _run(_argv(world, "rollout", "--to-version", "3"))  # nothing to do, but the record differs
    assert code == 0 and "version 3 is already the one serving" in out and warning in err, (out, err)
    code, out, err = _run(_argv(world, "rollback", "--to-version", "1"))
    assert code == 0 and _ready(world) == [1] and "warning:" not in err, (out, err)  # returns to it: nothing to say


@pytest.mark.server
@pytest.mark.slow
def test_serve_pins_the_recorded_version_after_a_restart(world):
    """A rollback outlives a restart: serve pins the record's live version in its checked copy where config.pbtxt
    would serve the newest, so the newest never loads; --ignore-rollout-record (rollout_record=False) serves
    config.pbtxt's versions, with the warning. The repository's config.pbtxt is not touched."""
    import tritongen
    from tritongen.client import Triton
    from tritongen.deploy.rollout_record import read_record, server_warnings

    options = {"url": world["server"].grpc_url, "allow_unverified": [NAME]}
    if read_record(world["repo"] / NAME).live != 1:
        gate = {"golden": world["root"] / "golden.npz", "gate_requests": 20, "max_latency_ratio": 20.0}
        assert tritongen.rollout(
            world["repo"], NAME, to_version=3, out=world["root"] / "r2", **gate, **options
        ).promoted
        assert tritongen.rollback(world["repo"], NAME, to_version=1, **options).promoted
    world["server"].stop(timeout_s=30)
    http, grpc, metrics = free_ports(3)
    ports = {"http_port": http, "grpc_port": grpc, "metrics_port": metrics}
    serve = {"model_control": "explicit", "allow_unverified": [NAME], **ports}
    try:
        with tritongen.serve(world["repo"], **serve) as server:
            with Triton(server.grpc_url, "grpc", headers=server.admin_headers("grpc")) as triton:
                assert triton.ready_versions(NAME) == [1]
                assert {e["version"] for e in triton.repository_index() if e["name"] == NAME} == {"1"}  # 3 never loaded
            assert (world["repo"] / NAME / "config.pbtxt").read_text() == CONFIG
            (note,) = server.rollout_notes
            assert f"'{NAME}': serving version 1, as its rollout record says (rollback 3 -> 1 at" in note
            assert "would serve 3" in note and server_warnings(server, world["repo"]) == []
        with tritongen.serve(world["repo"], rollout_record=False, **serve) as server:
            with Triton(server.grpc_url, "grpc", headers=server.admin_headers("grpc")) as triton:
                assert triton.ready_versions(NAME) == [3]
            assert server.rollout_notes == ()
            (warning,) = server_warnings(server, world["repo"])
            assert "serves version 3, but its rollout record says version 1 is live" in warning
    finally:
        world["server"] = _restarted(world)


def _restarted(world):
    from tritongen.server import server_from_repository

    return server_from_repository(world["spec"])


def test_the_golden_set_sends_a_scalar_per_item_as_the_server_takes_it(tmp_path):
    """The build saves a scalar-per-item input as the model reads it ([batch]); the served metadata says [-1, 1]:
    the gate refused its own build's samples ("shape [8], model wants [-1, 1]")."""
    from tritongen.deploy.gate import golden_from_file

    samples = tmp_path / "samples.npz"
    np.savez(samples, x=np.zeros((8, 4), np.float32), t=np.arange(8))
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}, {"name": "t", "datatype": "INT64", "shape": [-1, 1]}]
    golden = golden_from_file(None, samples, inputs, batched=True)
    assert {(r["t"].shape, r["x"].shape) for r in golden.requests} == {((1, 1), (1, 4))}


def test_an_answer_of_inf_or_nan_from_one_version_is_no_agreement():
    """A candidate answering +inf where the live version answered numbers gave a NaN cosine, which passed the
    threshold (NaN < 0.99 is False): the gate promoted it. The same non-finite values in both are compared on the
    rest."""
    from tritongen.deploy.gate import _agreement

    live = [{"y": np.array([[1.0, 2.0]])}, {"y": np.array([[3.0, 4.0]])}]
    worse = [{"y": np.array([[np.inf, -5.0]])}, {"y": np.array([[3.0, 4.0]])}]
    nan = [{"y": np.array([[np.nan, 2.0]])}, {"y": np.array([[3.0, 4.0]])}]
    for candidate in (worse, nan):
        outputs, _ = _agreement({"live": live, "candidate": candidate}, None)
        assert outputs["y"].min_cosine == 0.0 and outputs["y"].max_abs_error == float("inf")
    both = [{"y": np.array([[np.inf, 2.0]])}, {"y": np.array([[3.0, 4.0]])}]
    outputs, _ = _agreement({"live": both, "candidate": both}, None)
    assert outputs["y"].min_cosine == 1.0 and outputs["y"].max_abs_error == 0.0


TEXT_INPUT = [{"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]}]


def test_a_golden_set_of_more_rows_than_the_gate_sends_is_refused_before_its_requests_exist(tmp_path):
    """A 256-byte .npz of shape (10**7, 0) became ten million requests, each sent to both versions: GBs of memory
    and a gate that never ended. A text file was read whole, one request per line. Both are bounded now."""
    from tritongen.deploy.gate import MAX_GOLDEN_ROWS, golden_from_file

    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}]
    for rows in (MAX_GOLDEN_ROWS + 1, 10**7):
        np.savez(tmp_path / "empty.npz", x=np.zeros((rows, 0), np.float32))
        with pytest.raises(TritongenError, match=f"holds {rows} rows .*more than the {MAX_GOLDEN_ROWS} the gate"):
            golden_from_file(tmp_path / "empty.npz", tmp_path / "none.npz", inputs, batched=True)
    np.savez(tmp_path / "full.npz", x=np.zeros((MAX_GOLDEN_ROWS, 2), np.float32))
    assert len(golden_from_file(tmp_path / "full.npz", tmp_path / "none.npz", inputs, True).requests) == MAX_GOLDEN_ROWS
    np.savez(tmp_path / "none_rows.npz", x=np.zeros((0, 2), np.float32))  # was a ZeroDivisionError in the gate
    with pytest.raises(TritongenError, match="golden set none_rows.npz holds no rows"):
        golden_from_file(tmp_path / "none_rows.npz", tmp_path / "none.npz", inputs, batched=True)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(TritongenError, match="fifo is not a regular file"):
        golden_from_file(tmp_path / "fifo", tmp_path / "none.npz", inputs, batched=True)
    # the default, the build's own samples (max batch size rows: 5000 for --max-batch-size 5000), is not refused:
    # its first MAX_GOLDEN_ROWS rows judge
    np.savez(tmp_path / "samples.npz", x=np.arange(5000 * 2, dtype=np.float32).reshape(5000, 2))
    default = golden_from_file(None, tmp_path / "samples.npz", inputs, True)
    assert len(default.requests) == MAX_GOLDEN_ROWS and default.requests[-1]["x"][0, 0] == 2 * (MAX_GOLDEN_ROWS - 1)

    texts = tmp_path / "texts.txt"
    texts.write_text("a\n\n" * (MAX_GOLDEN_ROWS + 1))  # blank lines are not requests
    with pytest.raises(TritongenError, match=f"holds {MAX_GOLDEN_ROWS + 1} rows"):
        golden_from_file(texts, tmp_path / "none.npz", TEXT_INPUT, batched=True)
    texts.write_text("a\r\n\n" * MAX_GOLDEN_ROWS)
    assert len(golden_from_file(texts, tmp_path / "none.npz", TEXT_INPUT, True).requests) == MAX_GOLDEN_ROWS


def test_a_text_golden_file_is_read_bounded_and_its_labels_are_class_indexes(tmp_path, monkeypatch):
    from tritongen.deploy import gate

    texts = tmp_path / "texts.txt"
    texts.write_text("3\tone text\n0\tanother\n")
    golden = gate.golden_from_file(texts, tmp_path / "none.npz", TEXT_INPUT, batched=True)
    assert golden.labels == (3, 0) and [r["TEXT"].tolist() for r in golden.requests] == [
        [[b"one text"]],
        [[b"another"]],
    ]
    monkeypatch.setattr(gate, "MAX_GOLDEN_TEXT_BYTES", 16)
    with pytest.raises(TritongenError, match=r"texts.txt cannot be read \(it is over 16 bytes\): .*at most 16 bytes"):
        gate.golden_from_file(texts, tmp_path / "none.npz", TEXT_INPUT, batched=True)
    monkeypatch.undo()
    # each passes isdigit() (int() raised ValueError: a traceback), or int() reads it as a number no argmax equals
    # (both versions scored 0 and the gate compared them), or as a digit of another script
    for label in ("--3", "\u00b2", "9" * 5000, "-1", "+2", str(2**64 - 1), "\u0663"):
        texts.write_text(f"{label}\tone text\n")
        with pytest.raises(TritongenError, match="is not a class index"):
            gate.golden_from_file(texts, tmp_path / "none.npz", TEXT_INPUT, batched=True)


def test_golden_labels_in_an_npz_are_one_class_index_per_row(tmp_path):
    from tritongen.deploy.gate import golden_from_file

    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]
    x = np.zeros((4, 2), np.float32)
    for labels in (np.array([0, 1, 2, 3]), np.array([[0], [1], [2], [3]], np.uint8)):
        np.savez(tmp_path / "g.npz", x=x, labels=labels)
        assert golden_from_file(tmp_path / "g.npz", tmp_path / "none.npz", inputs, True).labels == (0, 1, 2, 3)
    bad = {
        "one integer class per row .*int64\\[2, 2\\]": np.array([[0, 1], [2, 3]]),  # flattened to 4 rows before
        "one integer class per row": np.array([0.0, 1.0, 2.0, 3.0]),
        "holds -1, not a class index": np.array([0, -1, 2, 3]),
        "holds 18446744073709551615, not a class index": np.array([0, 2**64 - 1, 2, 3], np.uint64),
    }
    for message, labels in bad.items():
        np.savez(tmp_path / "g.npz", x=x, labels=labels)
        with pytest.raises(TritongenError, match=message):
            golden_from_file(tmp_path / "g.npz", tmp_path / "none.npz", inputs, True)


def test_golden_labels_past_the_models_classes_are_refused(tmp_path):
    from tritongen.deploy.gate import check_labels_within, golden_from_file

    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]
    np.savez(tmp_path / "g.npz", x=np.zeros((3, 2), np.float32), labels=np.array([0, 2, 5]))
    golden = golden_from_file(tmp_path / "g.npz", tmp_path / "none.npz", inputs, True)
    outputs = [{"name": "probs", "datatype": "FP32", "shape": [-1, 3]}]
    with pytest.raises(TritongenError, match="label 5 is past the 3 classes of output 'probs': store class indices"):
        check_labels_within(golden, outputs)
    check_labels_within(golden, [{"name": "probs", "datatype": "FP32", "shape": [-1, 6]}])
    check_labels_within(golden, [{"name": "probs", "datatype": "FP32", "shape": [-1, -1]}])  # unknown: not judged


def test_a_text_golden_file_splits_on_newlines_only_as_calibration_text_does(tmp_path):
    """A \\r, \\x85 or U+2028 inside a text split it into two requests (splitlines); a \\r\\n ending is one line."""
    from tritongen.deploy.gate import golden_from_file

    texts = tmp_path / "texts.txt"
    texts.write_bytes("one\rtext\r\ntwo\x85with\u2028breaks\n\n  \nthree".encode())
    golden = golden_from_file(texts, tmp_path / "none.npz", TEXT_INPUT, batched=True)
    assert [r["TEXT"][0, 0].decode() for r in golden.requests] == ["one\rtext", "two\x85with\u2028breaks", "three"]


def test_a_golden_set_holding_nan_is_refused_and_the_comparison_json_is_json(tmp_path):
    """A NaN golden set got a healthy candidate refused ("cosine 0.0000") and recorded as refused; the comparison
    file held `Infinity`, which no JSON reader takes."""
    import json as json_module

    from tritongen.deploy.gate import _finite, golden_from_file

    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]
    np.savez(tmp_path / "g.npz", x=np.array([[1.0, np.nan], [0.0, 1.0]], np.float32))
    with pytest.raises(TritongenError, match="input 'x' holds NaN or infinite values"):
        golden_from_file(tmp_path / "g.npz", tmp_path / "none.npz", inputs, True)
    text = json_module.dumps(_finite({"a": [float("inf"), 1.0], "b": {"c": float("nan")}}), allow_nan=False)
    assert json_module.loads(text) == {"a": ["inf", 1.0], "b": {"c": "nan"}}


@pytest.mark.parametrize("traffic", [0, 500])
def test_a_gate_under_traffic_says_the_latency_ratio_overstates_the_idle_candidate(traffic):
    """Under load the default queue delay made an identical candidate read 1.47x the live latency and be refused:
    the live version's batches filled from the traffic while each candidate request waited for a batch alone."""
    import time

    import numpy as np

    from tritongen.deploy.gate import GateThresholds, GoldenSet, run_gate

    counts = {"live": 0, "candidate": 0}

    def infer(target, request):
        role = target[0]
        counts[role] += 1 + (traffic // 20 if role == "live" else 0)  # other clients' requests, as Triton counts
        time.sleep(0.003 if role == "candidate" else 0.0)
        return {"y": request["x"] * 2}

    def stats(target):
        return counts[target[0]], counts[target[0]] * 1_000_000

    golden = GoldenSet(tuple({"x": np.full((1, 4), float(i), np.float32)} for i in range(20)), None, "test")
    report = run_gate(
        infer, stats, ("live", 1), ("candidate", 2), golden, GateThresholds(latency_requests=20), "m", (1, 2)
    )
    assert report.live_traffic == traffic and report.latency.ratio > 1
    note = "the live version answered 500 requests of other clients during the comparison"
    from dataclasses import replace

    batching = replace(report, queue_delay_us=500)  # as the rollout sets it from the served config
    assert (note in batching.summary()) is bool(traffic)
    assert not traffic or "up to its queue delay (500 us)" in batching.traffic_note
    assert note not in report.summary()  # no batcher's delay (max batch 0, a delay of 0, sequences): nothing to wait


def test_the_queue_delay_the_gate_notes_is_the_dynamic_batchers_alone():
    from tritongen.deploy.rollout import _queue_delay_us

    batching = {"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": "500"}}
    assert _queue_delay_us(batching) == 500
    assert _queue_delay_us({**batching, "max_batch_size": 0}) == 0
    assert _queue_delay_us({**batching, "sequence_batching": {"max_sequence_idle_microseconds": 1}}) == 0
    assert _queue_delay_us({"max_batch_size": 8, "dynamic_batching": {}}) == 0
    assert _queue_delay_us({"max_batch_size": 8}) == 0
    assert _queue_delay_us({"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": "x"}}) == 0
    assert _queue_delay_us({**batching, "platform": "ensemble"}) == 0


@pytest.mark.parametrize("rounds", [1, 2, 3])
def test_latency_is_judged_on_three_rounds_or_more(rounds):
    """--gate-requests 5 makes one round: its one ratio was the whole interval, and one hiccup refused an identical
    model ("latency ratio 14.37 > 1.2: slower in most of 1 rounds")."""
    from tritongen.deploy.gate import MIN_JUDGED_ROUNDS, compare_latency

    live = [[1.0, 1.1, 0.9, 1.0, 1.0]] * rounds
    cand = [[3.0, 3.3, 2.7, 3.0, 3.0]] * rounds  # 3x slower in every round
    verdict = compare_latency(live, cand)
    assert verdict.low > 1.2 and verdict.judged is (rounds >= MIN_JUDGED_ROUNDS)
    assert verdict.consistently_above(1.2) is (rounds >= MIN_JUDGED_ROUNDS)


@pytest.mark.parametrize("action", ["rollout", "rollback"])
def test_version_0_is_no_version_to_go_to(tmp_path, action):
    """Triton loads no version 0 (tritongen's folders start at 1): it passed the check that said "1 or more"."""
    import tritongen

    with pytest.raises(TritongenError, match="version 0 is not a version number") as err:
        getattr(tritongen, action)(tmp_path, NAME, to_version=0)
    assert "(1 or more)" in err.value.fix
