"""CPU isolation: serve --cpus pins tritonserver and its stubs, perf --client-cpus pins the load generator, and
the run says whether client and server share CPUs. No timing is asserted anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest

from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, free_ports, write_model
from tritongen.cpus import available_cpus, cpus_from_text, cpus_text, pinned
from tritongen.errors import TritongenError
from tritongen.perf import PerfSpec, perf_from_spec, run_from_json
from tritongen.perf.placement import placement_note, server_cpus_at
from tritongen.perf.results import json_from_run, table_from_run
from tritongen.server import ServeSpec, docker_command, server_from_repository

CPUS = available_cpus()
QUICK = {"duration_s": 0.9, "warmup_s": 0.2, "max_windows": 3, "stability_pct": 1000.0, "concurrency": (2,)}


def affinity(pid: int) -> set[int]:
    return set(os.sched_getaffinity(pid))


# --------------------------------------------------------------------------------------------- parsing


def test_cpu_lists_parse_to_sorted_sets_and_print_back_compactly():
    top = max(CPUS)
    assert cpus_from_text(str(top)) == (top,)
    assert cpus_from_text(f"{top},{min(CPUS)},{top}") == tuple(sorted({top, min(CPUS)}))
    assert cpus_from_text(cpus_text(CPUS)) == CPUS
    assert cpus_from_text("") == () and cpus_from_text(None) == () and cpus_from_text(()) == ()
    assert cpus_from_text([top]) == (top,) and cpus_from_text(top) == (top,) and cpus_from_text(iter([top])) == (top,)
    assert cpus_text((1, 2, 3, 5, 7, 8)) == "1-3,5,7-8"
    assert cpus_text((4,)) == "4" and cpus_text(()) == ""


@pytest.mark.parametrize(
    "text, problem",
    [
        ("a", "is not a list of CPU ids"),
        ("1-", "is not a list of CPU ids"),
        ("-1", "is not a list of CPU ids"),
        ("1,,2", "is not a list of CPU ids"),
        ("3-1", "runs backwards"),
        ("100000", "is not available here"),
        ("0-99999999999999", "beyond any machine's"),  # refused before a range that size is built
        ("1" * 5000, "beyond any machine's"),
        ("\u00b2", "is not a list of CPU ids"),  # str.isdigit takes it, int() does not: was a traceback
        ("0-\u00b2", "is not a list of CPU ids"),
    ],
)
def test_bad_cpu_lists_are_one_clear_error(text, problem):
    with pytest.raises(TritongenError) as caught:
        cpus_from_text(text, "--cpus")
    assert problem in caught.value.problem and "--cpus" in caught.value.problem and caught.value.fix


def test_the_specs_check_their_cpus():
    with pytest.raises(TritongenError, match="not available here"):
        ServeSpec(repo=Path("."), cpus=(100000,))
    with pytest.raises(TritongenError, match="--client-cpus"):
        PerfSpec(model="m", client_cpus="x")
    for bad in ((-1,), (True,), ("1",), (1.5,)):
        with pytest.raises(TritongenError, match="not a list of CPU ids"):
            ServeSpec(repo=Path("."), cpus=bad)
    assert ServeSpec(repo=Path("."), cpus=str(max(CPUS))).cpus == (max(CPUS),)
    assert PerfSpec(model="m", client_cpus=[min(CPUS)]).client_cpus == (min(CPUS),)


@pytest.mark.parametrize("command", [["serve", "--cpus", "3-1"], ["perf", "m", "--client-cpus", "x"]])
def test_the_cli_gives_one_line_for_a_bad_cpu_list(tmp_path, command):
    if command[0] == "serve":
        write_model(tmp_path, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
        command = [command[0], str(tmp_path), *command[1:], "--allow-unverified", "double"]
    done = subprocess.run([sys.executable, "-m", "tritongen", *command], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "CPU" in lines[-1] and ": " in lines[-1][7:], done.stderr


def test_docker_pins_the_container_to_the_same_cpus():
    cpus = (max(CPUS),)
    assert f"--cpuset-cpus={max(CPUS)}" in docker_command(ServeSpec(repo=Path("."), cpus=cpus))
    assert "--cpuset-cpus" not in docker_command(ServeSpec(repo=Path(".")))


def test_serve_docker_takes_the_docker_hosts_cpus_not_this_machines(tmp_path, capsys):
    """serve --docker prints a docker run for a GPU host: its --cpus were refused where this machine has fewer."""
    from tests.test_deploy_docker import run_cli

    beyond = max(CPUS) + 8
    write_model(tmp_path, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    code, out, err = run_cli(
        ["serve", str(tmp_path), "--docker", "--cpus", f"{beyond}-{beyond + 1}", "--allow-unverified", "double"], capsys
    )
    assert code == 0, err
    assert f"--cpuset-cpus={beyond}-{beyond + 1}" in out
    with pytest.raises(TritongenError, match="is not available here"):  # a local server still cannot use them
        ServeSpec(repo=Path("."), cpus=(beyond,))
    with pytest.raises(TritongenError, match="not a list of CPU ids"):  # the form is checked for Docker too
        ServeSpec(repo=Path("."), cpus="x", docker_host=True)


# --------------------------------------------------------------------------------------------- pinning


def test_pinned_moves_every_thread_and_gives_each_its_set_back():
    if len(CPUS) < 2:
        pytest.skip("needs 2 CPUs")
    started, stop = threading.Event(), threading.Event()
    tid: list[int] = []

    def worker():
        tid.append(threading.get_native_id())
        started.set()
        stop.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    started.wait(5)
    before = affinity(0)
    try:
        with pinned((CPUS[0],)):
            assert affinity(0) == {CPUS[0]} and affinity(tid[0]) == {CPUS[0]}  # a thread that was already there
        assert affinity(0) == before and affinity(tid[0]) == before
        with pytest.raises(RuntimeError), pinned((CPUS[-1],)):
            raise RuntimeError("the set comes back after an error too")
        assert affinity(0) == before
        with pinned(()):
            assert affinity(0) == before
    finally:
        stop.set()
        thread.join()


def test_the_placement_note_says_whether_the_sets_overlap():
    assert placement_note((0,), (1, 2)).startswith("client and server on separate CPUs (client CPUs 0, server CPUs 1-2")
    note = placement_note((0, 1), (1, 2))
    assert note.startswith("client shares CPUs with the server") and "shared: 1" in note and "--cpus" in note
    assert placement_note((0,), None) == "" and placement_note((), (1,)) == ""
    assert server_cpus_at("example.com:8001") is None  # not local: nothing to say
    assert server_cpus_at("127.0.0.1:1") is None  # nothing listens there


# --------------------------------------------------------------------------------------------- real server


@pytest.fixture(scope="module")
def pinned_server(tmp_path_factory):
    if len(CPUS) < 2:
        pytest.skip("needs 2 CPUs to keep the client apart")
    from tritongen.server import find_server_binary

    try:
        find_server_binary()
    except TritongenError as e:
        pytest.skip(f"no tritonserver: {e}")
    work = tmp_path_factory.mktemp("cpus")
    repo = work / "repo"
    write_model(repo, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    data = work / "x.npz"
    np.savez(data, X=np.ones((1, 4), np.float32))
    http, grpc, metrics = free_ports(3)
    spec = ServeSpec(repo=repo, http_port=http, grpc_port=grpc, metrics_port=metrics, cpus=CPUS[1:])
    with server_from_repository(spec) as server:
        yield server, data


@pytest.mark.server
def test_the_server_and_its_stubs_run_on_the_cpus_given(pinned_server):
    server, _ = pinned_server
    stubs = psutil.Process(server.pid).children(recursive=True)
    assert stubs, "the Python-backend model has no stub process"
    assert affinity(server.pid) == set(CPUS[1:])
    for stub in stubs:
        assert affinity(stub.pid) == set(CPUS[1:]), stub.cmdline()
    status = Path(f"/proc/{server.pid}/status").read_text()
    assert f"Cpus_allowed_list:\t{cpus_text(CPUS[1:])}" in status
    assert f"taskset -c {cpus_text(CPUS[1:])} " in server.log_path.read_text().splitlines()[0]
    assert server_cpus_at(server.grpc_url) == CPUS[1:]


def _spec(pinned_server, **options) -> PerfSpec:
    server, data = pinned_server
    return PerfSpec(
        model="double", url=server.grpc_url, input_data=data, repo=None, metrics_url=None, **{**QUICK, **options}
    )


@pytest.mark.server
def test_perf_pins_its_client_records_it_and_says_the_sets_are_apart(pinned_server):
    before = affinity(0)
    seen: list[set[int]] = []
    run = perf_from_spec(_spec(pinned_server, client_cpus=(CPUS[0],)), progress=lambda m: seen.append(affinity(0)))
    assert affinity(0) == before  # given back
    assert {CPUS[0]} in seen  # the progress lines of the measurement came from the pinned process
    assert run.points and not run.partial
    assert run.client_cpus == (CPUS[0],) and run.server_cpus == CPUS[1:]
    assert run.placement.startswith("client and server on separate CPUs")
    assert all(p.client_machine_share is None for p in run.points)  # pinned apart: it takes none of the server's
    back = run_from_json(json_from_run(run))
    assert (back.client_cpus, back.server_cpus, back.placement) == (run.client_cpus, run.server_cpus, run.placement)
    assert json.loads(json_from_run(run))["client_cpus"] == [CPUS[0]]
    assert run.placement in table_from_run(run)


@pytest.mark.server
def test_perf_says_when_the_client_shares_the_server_cpus(pinned_server):
    run = perf_from_spec(_spec(pinned_server))  # not pinned: the client may run on every CPU, the server's too
    assert run.client_cpus == CPUS and run.server_cpus == CPUS[1:]
    assert run.placement.startswith("client shares CPUs with the server")
    assert all(p.client_machine_share is not None for p in run.points)


@pytest.mark.server
def test_perf_analyzer_is_started_on_the_client_cpus(pinned_server, monkeypatch):
    from tritongen.perf import perf_analyzer

    try:
        perf_analyzer.find_perf_analyzer()
    except TritongenError as err:
        pytest.skip(f"perf_analyzer not installed ({err.problem})")
    real, forked_from = perf_analyzer._run, []

    def spy(*args, **kwargs):
        forked_from.append(affinity(0))  # a child starts with the set of the thread that starts it
        return real(*args, **kwargs)

    monkeypatch.setattr(perf_analyzer, "_run", spy)
    run = perf_from_spec(_spec(pinned_server, engine="perf_analyzer", client_cpus=(CPUS[0],)))
    assert forked_from and all(s == {CPUS[0]} for s in forked_from)
    assert run.points and run.client_cpus == (CPUS[0],)


def test_a_space_inside_a_cpu_list_is_refused_not_dropped():
    """--cpus "0 1" pinned to CPU 1 (every space was dropped before the split: "01")."""
    from tritongen.cpus import cpus_from_text

    assert cpus_from_text(" 0 , 0 ") == (0,)
    with pytest.raises(TritongenError, match="'0 0' is not a list of CPU ids"):
        cpus_from_text("0 0")
