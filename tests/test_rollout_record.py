"""The rollout record beside config.pbtxt: verify and signatures tolerate it only in the form tritongen writes."""

from __future__ import annotations

import json
import os

import pytest

from tests.keys import write_key_pair
from tritongen.errors import TritongenError

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    import tritongen

    repo = tmp_path_factory.mktemp("record") / "repo"
    torch.manual_seed(0)
    tritongen.build(torch.nn.Linear(4, 3), example_inputs={"x": torch.randn(2, 4)}, name="tiny", repo=repo)
    return repo


def _record(repo, **changes):
    from tritongen.deploy.rollout_record import write_record
    from tritongen.rollout_format import Pending, RolloutRecord

    record = RolloutRecord(model="tiny", live=2, previous=1, pending=Pending("rollout", 1, 2, "switch"))
    write_record(repo, repo / "tiny", record.with_event({"action": "rollout", "from": 1, "to": 2}))
    path = repo / "tiny" / "tritongen-rollout.json"
    if changes:
        data = json.loads(path.read_text())
        data.update(changes)
        path.write_text(json.dumps(data))
    return path


def test_the_record_round_trips_and_verify_accepts_it(repo):
    import tritongen
    from tritongen.deploy.rollout_record import read_record

    path = _record(repo)
    try:
        record = read_record(repo / "tiny")
        assert (record.live, record.previous, record.pending.step) == (2, 1, "switch")
        assert record.history[0]["to"] == 2 and "at" in record.history[0]
        assert not [p for p in repo.iterdir() if p.name.startswith(".tritongen-rollout-")]  # no temporary file left
        report = tritongen.verify(repo)
        assert report.ok
    finally:
        path.unlink()


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"tool": "something-else"}, "not a rollout record"),
        ({"model": "other"}, "not a rollout record"),
        (None, "not a rollout record"),  # not JSON
        ("link", "symbolic link"),
        ("big", "not a rollout record"),
        ("deep", "not a rollout record"),  # deep enough to exhaust the JSON parser's recursion
        # an attack session: verify passed these, which rollout refuses (a writer blocked every rollout unseen)
        ({"history": [{"a": [[[[1]]]]}]}, "history event 0 nests deeper than the 3 levels"),
        ({"live": "1"}, "version '1' is not a version number"),
        ({"pending": {"action": "rollout"}}, "not a rollout record"),
    ],
)
def test_verify_refuses_anything_else_under_the_record_name(repo, change, problem):
    from tritongen.deploy.rollout_record import read_record
    from tritongen.verify import verify_repository

    path = repo / "tiny" / "tritongen-rollout.json"
    if isinstance(change, dict):
        _record(repo, **change)
    elif change is None:
        path.write_bytes(b"\x00ONNX model bytes, not JSON")
    elif change == "link":
        os.symlink(repo / "tiny" / "config.pbtxt", path)
    elif change == "deep":
        path.write_text("[" * 100_000 + "]" * 100_000)
    else:
        path.write_text(json.dumps({"tool": "tritongen-rollout", "model": "tiny", "pad": "x" * (2 << 20)}))
    try:
        report = verify_repository(repo)
        assert not report.ok and any(problem in p for p in report.problems), report.problems
        with pytest.raises(TritongenError):
            read_record(repo / "tiny")
    finally:
        path.unlink()


def test_a_record_whose_versions_are_not_numbers_is_one_error(repo):
    from tritongen.deploy.rollout_record import read_record

    path = _record(repo, pending={"action": "rollout", "from": float("inf"), "to": 2, "step": "switch"})
    try:
        with pytest.raises(TritongenError, match="cannot be read"):
            read_record(repo / "tiny")
    finally:
        path.unlink()


def test_a_history_event_nested_deeper_than_tritongen_writes_is_one_error(repo):
    """A 2 KB record whose event nested 960 lists deep passed verify; rollback --force wrote it back indented, 1.8 MB,
    which verify and rollback then refused as no record of tritongen's."""
    from tritongen.deploy.rollout_record import read_record

    gate = {"passed": False, "reasons": ["cosine 0.3 < 0.99"], "latency_ratio": 1.0}
    path = _record(repo, history=[{"action": "rollout", "from": 1, "to": 2, "gate": gate}])
    try:
        assert read_record(repo / "tiny").history[0]["gate"] == gate  # as tritongen writes it
        path.unlink()
        path = _record(repo, history=[{"action": "rollout", "gate": {"reasons": [json.loads("[" * 50 + "]" * 50)]}}])
        with pytest.raises(TritongenError, match="history event 0 nests deeper than the 3 levels tritongen writes"):
            read_record(repo / "tiny")
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.parametrize(
    "pending",
    [
        {"action": "deploy", "from": 1, "to": 2, "step": "switch"},
        {"action": "rollout", "from": 1, "to": 2, "step": "load"},
        {"action": "rollout", "from": None, "to": 2, "step": "switch"},
        {"action": "rollout", "from": 1, "to": True, "step": "gate"},
        ["rollout", 1, 2, "switch"],
    ],
)
def test_a_pending_step_is_read_only_in_the_form_tritongen_writes(repo, pending):
    """A resumed step acts on the server: an action, step or version tritongen never writes is refused."""
    from tritongen.deploy.rollout_record import read_record

    path = _record(repo, pending=pending)
    try:
        with pytest.raises(TritongenError, match="cannot be read"):
            read_record(repo / "tiny")
    finally:
        path.unlink()


def test_a_recorded_switch_from_a_version_the_server_no_longer_serves_is_dropped_not_done(repo):
    """A switch 1 -> 2 recorded as unfinished while the server serves version 3: the record is stale (or written
    by hand to force a version in without its gate), so the run changes nothing on the server and drops it."""
    from types import SimpleNamespace

    from tritongen.deploy.rollout import RolloutSpec, _resume
    from tritongen.deploy.rollout_record import read_record
    from tritongen.rollout_format import Pending, RolloutRecord

    record = RolloutRecord(model="tiny", live=3, previous=2, pending=Pending("rollout", 1, 2, "switch"))
    spec = RolloutSpec(repo=repo, name="tiny", to_version=1, action="rollback")
    lines: list[str] = []
    try:
        index = [{"name": "tiny", "version": "3", "state": "READY"}]  # version 2 is not loading either
        server = SimpleNamespace(repository_index=lambda: index)
        after, done = _resume(server, spec, repo / "tiny", record, [3], lines.append, None)  # type: ignore[arg-type]
        assert after.pending is None and after.live == 3 and after.history[-1]["result"] == "stale step dropped"
        assert "dropped the recorded unfinished rollout 1 -> 2: the server serves version 3" == done
        assert read_record(repo / "tiny").pending is None
    finally:
        (repo / "tiny" / "tritongen-rollout.json").unlink(missing_ok=True)


def test_a_signed_repository_stays_signed_when_the_record_changes(repo, tmp_path):
    from tritongen.signing import check_signature, sign_repository

    private, public = write_key_pair(tmp_path)
    signature = tmp_path / "repo.sig"
    sign_repository(repo, private, signature)
    path = _record(repo)
    stray = repo / "tiny" / "notes.json"
    try:
        check_signature(repo, public, signature)  # the record is not part of what was signed
        stray.write_text("{}")
        with pytest.raises(TritongenError, match="differs from what was signed"):
            check_signature(repo, public, signature)  # any other new file still breaks the signature
    finally:
        path.unlink()
        stray.unlink(missing_ok=True)


def test_a_held_rollout_lock_keeps_the_repository_verified_and_signed(repo, tmp_path):
    import tritongen
    from tritongen.deploy.rollout_lock import rollout_lock
    from tritongen.signing import check_signature, sign_repository

    private, public = write_key_pair(tmp_path)
    signature = tmp_path / "repo.sig"
    sign_repository(repo, private, signature)
    lock = repo / "tiny" / "tritongen-rollout.lock"
    with rollout_lock(repo / "tiny", "rollout") as holder:
        assert json.loads(lock.read_text()) == holder and holder["pid"] == os.getpid()
        with pytest.raises(TritongenError, match="being changed by another run \\(rollout by pid"):
            with rollout_lock(repo / "tiny", "rollback"):  # another open file description: flock refuses it too
                pass
        check_signature(repo, public, signature)  # the lock is not part of what was signed
        tritongen.verify(repo)
    assert not lock.exists()  # removed by its holder
    lock.write_text("")  # as a run killed between creating and filling it leaves it
    try:
        tritongen.verify(repo)
        with rollout_lock(repo / "tiny", "rollout"):  # taken over
            pass
        assert not lock.exists()
    finally:
        lock.unlink(missing_ok=True)


@pytest.mark.parametrize(
    "content",
    [
        b'{"tool": "something-else", "model": "tiny"}',
        b"\x00not json",
        b'{"tool": "tritongen-rollout-lock", "model": "tiny", "pad": "' + b"x" * (2 << 20) + b'"}',
        b"[" * 4000 + b"]" * 4000,
    ],
    ids=["foreign", "not-json", "too-big", "deep"],
)
def test_verify_refuses_anything_else_under_the_lock_name(repo, content):
    from tritongen.layout import ROLLOUT_LOCK_NAME, ROLLOUT_LOCK_TOOL
    from tritongen.verify import verify_repository

    assert ROLLOUT_LOCK_TOOL == "tritongen-rollout-lock"  # the form the too-big case imitates
    path = repo / "tiny" / ROLLOUT_LOCK_NAME
    path.write_bytes(content)
    try:
        report = verify_repository(repo)
        assert not report.ok and any("not a rollout lock" in p for p in report.problems), report.problems
    finally:
        path.unlink()


def test_a_later_gate_of_the_same_versions_keeps_the_earlier_report(tmp_path):
    from tritongen.deploy.rollout import unused_report_dir

    first = unused_report_dir(tmp_path, "m", 1, 2)
    assert first == tmp_path / "m-v1-to-v2"
    first.mkdir()
    assert unused_report_dir(tmp_path, "m", 1, 2) == first  # a folder without a report is reused
    (first / "comparison.json").write_text("{}")
    second = unused_report_dir(tmp_path, "m", 1, 2)
    assert second == tmp_path / "m-v1-to-v2-2"
    second.mkdir()
    (second / "comparison.json").write_text("{}")
    assert unused_report_dir(tmp_path, "m", 1, 2) == tmp_path / "m-v1-to-v2-3"
    assert unused_report_dir(tmp_path, "m", 2, 1) == tmp_path / "m-v2-to-v1"


def test_the_last_change_read_from_a_record_is_printed_escaped():
    """The record is a file anyone may have written; its history reached serve's and rollout's lines raw."""
    from tritongen.rollout_format import RolloutRecord

    event = {"at": "\x1b]0;TITLE\x07", "action": "rollback", "from": 2, "to": 1, "result": "promoted"}
    record = RolloutRecord(model="m", live=1, previous=2, pending=None, history=(event,))
    assert record.last_change() == "rollback 2 -> 1 at \\x1b]0;TITLE\\x07"


@pytest.mark.parametrize("field", ["live", "previous"])
def test_a_version_no_folder_can_name_makes_the_record_unreadable_in_one_short_line(repo, field):
    """``"live": 10**300`` was read as a version: serve and deploy looked for a folder of 301 digits ("File name too
    long") and stopped. A version is 0 to 2**63 - 1, as Triton reads a folder name."""
    from tritongen.deploy.rollout_record import read_record

    for bad in (10**300, 2**63, -1):
        path = _record(repo, **{field: bad})
        try:
            with pytest.raises(TritongenError, match="cannot be read .*is not a version number") as caught:
                read_record(repo / "tiny")
            assert len(str(caught.value)) < 400  # the number is cut, not printed whole
        finally:
            path.unlink()
    path = _record(repo, **{field: 2**63 - 1})
    try:
        assert getattr(read_record(repo / "tiny"), field) == 2**63 - 1
    finally:
        path.unlink()


def test_serve_pins_nothing_and_warns_nothing_for_a_record_with_a_version_no_folder_can_name(tmp_path):
    """serve read the record before its server started (signed repositories too, where it is ignored) and raised
    OSError on it: such a record is skipped as every unreadable one is (verify's job)."""
    from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, write_model
    from tritongen.deploy.rollout_record import pin_recorded_versions, served_warnings, unfollowed_records

    repo = write_model(tmp_path / "repo", "double", DOUBLE_CONFIG, DOUBLE_MODEL).parent
    (repo / "double" / "2").mkdir()
    record = {"tool": "tritongen-rollout", "model": "double", "live": 10**300, "previous": None, "pending": None}
    event = {"at": "x", "action": "rollback", "from": 2, "to": 10**300, "result": "promoted"}
    (repo / "double" / "tritongen-rollout.json").write_text(json.dumps({**record, "history": [event]}))
    before = (repo / "double" / "config.pbtxt").read_text()
    for signed in (True, False):
        assert pin_recorded_versions(repo, signed=signed) == []
    assert (repo / "double" / "config.pbtxt").read_text() == before
    assert unfollowed_records(repo) == () and served_warnings(repo, {"double": [2]}) == []


def test_a_second_plain_rollback_does_not_re_promote_what_the_first_rolled_back_from(tmp_path):
    """rollout 6 -> 10, rollback (to 6), rollback again: the second put 10 back, past no gate (a CI retry or a
    nervous second rollback served the bad version)."""
    from types import SimpleNamespace

    from tritongen.deploy.rollout import _target
    from tritongen.rollout_format import RolloutRecord

    record = RolloutRecord("cnn", live=10, previous=6).with_event(
        {"action": "rollout", "from": 6, "to": 10, "result": "promoted"}
    )
    spec = SimpleNamespace(to_version=None, repo=tmp_path, name="cnn")
    (tmp_path / "cnn" / "6").mkdir(parents=True)
    assert _target(spec, record, tmp_path / "cnn", 10) == 6  # the first: back to the version before the rollout
    after = RolloutRecord("cnn", live=6, previous=10, history=record.history).with_event(
        {"action": "rollback", "from": 10, "to": 6, "result": "promoted"}
    )
    with pytest.raises(TritongenError, match="'cnn' version 6 already serves: the last change was a rollback to it"):
        _target(spec, after, tmp_path / "cnn", 6)
    try:
        _target(spec, after, tmp_path / "cnn", 6)
    except TritongenError as err:
        assert err.fix.endswith(f"--to-version 10 (or tritongen rollback {tmp_path} cnn --to-version 10)"), err.fix
    # a version the gate refused: a rollback to it is refused without --force, so only the gated way is offered
    refused = RolloutRecord("cnn", live=6, previous=10).with_event(
        {"action": "rollout", "from": 6, "to": 10, "result": "refused"}
    )
    refused = refused.with_event({"action": "rollback", "from": 10, "to": 6, "result": "promoted"})
    with pytest.raises(TritongenError) as err:
        _target(spec, refused, tmp_path / "cnn", 6)
    assert err.value.fix.endswith("--to-version 10") and "tritongen rollback" not in err.value.fix


def test_a_stop_during_the_switch_says_triton_may_finish_it_and_how_to_go_on(tmp_path):
    """SIGTERM during the switch printed "aborted" only, and Triton finished the switch after the command ended."""
    from types import SimpleNamespace

    from tritongen.deploy.rollout import ROLLOUT, _Step
    from tritongen.deploy.rollout_record import read_record
    from tritongen.rollout_format import RolloutRecord

    class StoppedDuringLoad:
        def load(self, *args, **kwargs):
            raise KeyboardInterrupt

    (tmp_path / "cnn").mkdir()
    spec = SimpleNamespace(repo=tmp_path, name="cnn", action=ROLLOUT, timeout_s=5.0, url="")
    step = _Step(StoppedDuringLoad(), spec, tmp_path / "cnn", RolloutRecord("cnn", live=6), True, [6])
    said: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        step.switch({}, 10, {}, said.append)
    assert "stopped during the switch: Triton may still finish loading version 10 (version 6 answers" in said[-1]
    assert "tritongen rollout" in said[-1] and "--to-version 10 finishes it" in said[-1]
    assert read_record(tmp_path / "cnn").pending.to_version == 10  # kept for the next run to finish or undo


def test_a_server_that_died_during_the_switch_leaves_the_switch_error_and_the_pending_step(tmp_path):
    """A failed switch puts the record back only where the server still serves what it did; asking a server that
    had died raised "connection refused", in place of the error that said what failed."""
    from types import SimpleNamespace

    from tritongen.deploy.rollout import ROLLOUT, _Step
    from tritongen.deploy.rollout_record import read_record
    from tritongen.rollout_format import RolloutRecord

    class DiedDuringLoad:
        def load(self, *args, **kwargs):
            raise TritongenError("loading version 10 failed: the server closed the connection", "see its log")

        def ready_versions(self, name):
            raise TritongenError("the server at 127.0.0.1:8001 is not reachable", "start it")

    (tmp_path / "cnn").mkdir()
    spec = SimpleNamespace(repo=tmp_path, name="cnn", action=ROLLOUT, timeout_s=5.0, url="127.0.0.1:8001")
    step = _Step(DiedDuringLoad(), spec, tmp_path / "cnn", RolloutRecord("cnn", live=6), True, [6])
    with pytest.raises(TritongenError, match="loading version 10 failed"):
        step.switch({}, 10, {}, lambda _: None)
    assert read_record(tmp_path / "cnn").pending.to_version == 10  # the next run settles it


def test_a_refusal_outlives_the_history_kept_and_so_does_a_forced_rollback_to_it():
    """The record keeps the last 50 events: after 25 rollout/rollback cycles of other versions the gate's refusal
    of version 3 was gone, and `rollback --to-version 3` needed no --force (serve's pin trusted it too)."""
    from tritongen.rollout_format import HISTORY_KEPT, RolloutRecord

    record = RolloutRecord("cnn", live=2).with_event({"action": "rollout", "from": 2, "to": 3, "result": "refused"})
    record = record.with_event({"action": "rollout", "from": 2, "to": 4, "result": "refused"})
    record = record.with_event({"action": "rollout", "from": 2, "to": 4, "result": "promoted"})  # 4 passed later
    record = record.with_event({"action": "rollout", "from": 2, "to": 5, "result": "refused"})
    forced = {"action": "rollback", "from": 2, "to": 5, "result": "promoted", "forced": True}
    record = record.with_event(forced)
    for i in range(HISTORY_KEPT):
        record = record.with_event({"action": "rollout", "from": 6 + i, "to": 7 + i, "result": "promoted"})
    assert record.gate_refusal(3) is not None and record.gate_refusal(3)["to"] == 3
    assert record.gate_refusal(4) is None  # its later passed gate decides, and neither event is kept
    assert record.gate_refusal(5) is not None and record.forced_to(5)
    assert len(record.history) == HISTORY_KEPT + 3  # 3's refusal, 5's refusal and its forced rollback
    assert not any(e.get("to") == 4 for e in record.history)
