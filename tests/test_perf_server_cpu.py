"""tritongen.perf.server_cpu: a local server's CPU (its process and its children) and what it costs per request.

The meter is exercised on real processes: a parent that stands for tritonserver and a child that stands for a
Python-backend stub, burning a known amount of CPU time (measured as CPU, not as wall time, so a busy machine
does not change the answer)."""

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest

from tests.test_perf_units import _point
from tritongen.perf.results import PerfRun, csv_from_run, json_from_run, run_from_json, table_from_run
from tritongen.perf.server_cpu import (
    ServerCpuMeter,
    ServerReading,
    ServerUse,
    server_cpu_between,
    server_cpu_from_used,
    server_cpu_meter_at,
    server_pid_at,
    server_use_total,
    thread_wakeups,
)

BURN_S = 0.3

# The "stub": waits for the go file, burns BURN_S of its own CPU time, writes the done file, then idles.
CHILD = f"""
import os, sys, time
go, done = sys.argv[1], sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.01)
start = time.process_time()
while time.process_time() - start < {BURN_S}:
    pass
open(done, "w").close()
time.sleep(60)
"""
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]])
print(child.pid, flush=True)
time.sleep(60)
"""


def _wait_for(path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_the_meter_counts_the_servers_children_and_says_when_the_server_is_gone(tmp_path):
    go, done = tmp_path / "go", tmp_path / "done"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD, str(go), str(done)], stdout=subprocess.PIPE, text=True
    )
    try:
        child_pid = int(parent.stdout.readline())
        meter = ServerCpuMeter(parent.pid)
        assert child_pid in [p.pid for p in meter.processes]  # the stub was found when the meter was made
        before = meter.read()
        go.touch()
        _wait_for(done)
        after = meter.read()
        used = server_cpu_between(before, after)
        # the child's burn counts (the parent only sleeps): at least BURN_S, and not wildly more
        assert used is not None and BURN_S * 0.95 <= used.cpu_s < BURN_S + 1.0, used
    finally:
        parent.kill()
        parent.wait()
    subprocess.run(["kill", "-9", str(child_pid)], check=False)
    assert meter.read() is None  # the server itself is gone: no figure, not a partial one


def test_only_a_tritonserver_on_a_loopback_url_is_metered():
    assert server_pid_at("10.1.2.3:8001") is None and server_cpu_meter_at("10.1.2.3:8001") is None
    assert server_pid_at("localhost:notaport") is None
    with socket.socket() as listener:  # something listens on this port, but it is not tritonserver
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert server_pid_at(f"127.0.0.1:{port}") is None and server_cpu_meter_at(f"127.0.0.1:{port}") is None


# The "server": a second thread (not the main one, whose count is all psutil reads) waits for the go file, then
# sleeps SLEEPS times (each a voluntary context switch) and writes the done file.
SLEEPS = 300
SLEEPER = f"""
import os, sys, threading, time
go, done = sys.argv[1], sys.argv[2]
def work():
    while not os.path.exists(go):
        time.sleep(0.01)
    for _ in range({SLEEPS}):
        time.sleep(0.0005)
    open(done, "w").close()
    time.sleep(60)  # the thread lives on: a thread that ends takes its count with it
threading.Thread(target=work, daemon=True).start()
print("ready", flush=True)
time.sleep(60)
"""


def test_the_meter_counts_the_wakeups_of_every_thread_of_the_server(tmp_path):
    go, done = tmp_path / "go", tmp_path / "done"
    server = subprocess.Popen([sys.executable, "-c", SLEEPER, str(go), str(done)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        meter = ServerCpuMeter(server.pid)
        before = meter.read()
        go.touch()
        _wait_for(done)
        used = server_cpu_between(before, meter.read())
        # every sleep of the second thread woke it once; the main thread sleeps throughout (one wakeup at most)
        assert used is not None and used.wakeups is not None and SLEEPS <= used.wakeups < SLEEPS * 3, used
        import psutil

        assert psutil.Process(server.pid).num_ctx_switches().voluntary < SLEEPS  # the main thread's alone
    finally:
        server.kill()
        server.wait()
    assert thread_wakeups(server.pid) is None  # gone: nothing to read
    assert thread_wakeups(os.getpid()) and threading.get_native_id() in thread_wakeups(os.getpid())


def test_cpu_per_request_needs_both_readings_a_span_and_answers():
    figures = server_cpu_from_used(ServerUse(1.5, 20_000), 2.0, 10_000)
    assert figures is not None and figures.cores == pytest.approx(0.75) and figures.us_per_request == pytest.approx(150)
    assert figures.wakeups_per_request == pytest.approx(2.0)
    unread = server_cpu_from_used(ServerUse(1.5), 2.0, 10_000)
    assert unread is not None and unread.wakeups_per_request is None and unread.us_per_request == pytest.approx(150)
    assert server_cpu_from_used(None, 2.0, 10_000) is None
    assert server_cpu_from_used(ServerUse(1.5, 1), 0.0, 10_000) is None
    assert server_cpu_from_used(ServerUse(1.5, 1), 2.0, 0) is None
    R = ServerReading
    used = server_cpu_between(R(3.0, {1: 100, 2: 5}), R(4.5, {1: 150, 2: 15}))
    assert used is not None and used.cpu_s == pytest.approx(1.5) and used.wakeups == 60
    assert server_cpu_between(None, R(4.5)) is None and server_cpu_between(R(3.0), None) is None
    # a reading that went backwards (another process behind the pid)
    assert server_cpu_between(R(4.5, {1: 1}), R(3.0, {1: 2})) is None
    # a thread that ended takes its count with it, one that started counts whole, the others count their own rise
    assert server_cpu_between(R(3.0, {1: 100, 2: 50}), R(4.5, {1: 130, 3: 7})).wakeups == 37
    # a count lower than before under the same id: another thread that got the id, counted whole
    assert server_cpu_between(R(3.0, {1: 100}), R(4.5, {1: 4})).wakeups == 4
    assert server_cpu_between(R(3.0, {1: 100}), R(4.5, None)).wakeups is None  # /proc not readable
    assert server_use_total([ServerUse(1.0, 10), ServerUse(2.0, 5)]) == ServerUse(3.0, 15)
    assert server_use_total([ServerUse(1.0, 10), ServerUse(2.0)]) == ServerUse(3.0, None)
    assert server_use_total([ServerUse(1.0, 10), None]) is None and server_use_total([]) is None


def test_the_server_cpu_is_saved_and_shown_where_it_was_measured():
    from tritongen.perf.report import html_from_runs

    measured = replace(
        _point(4.0), server_cpu_cores=0.98, server_cpu_us_per_request=172.4, server_wakeups_per_request=1.25
    )
    run = PerfRun(model="m", url="127.0.0.1:8001", protocol="grpc", engine="builtin", points=(_point(1.0), measured))
    back = run_from_json(json_from_run(run))
    assert back.points[1].server_cpu_us_per_request == 172.4 and back.points[0].server_cpu_cores is None
    assert back.points[1].server_wakeups_per_request == 1.25 and back.points[0].server_wakeups_per_request is None
    header, *rows = csv_from_run(run).splitlines()
    assert header.endswith(",server_cpu_cores,server_cpu_us_per_request,server_wakeups_per_request,resent")
    assert rows[1].endswith(",0.9800,172.4000,1.2500,0")
    table = table_from_run(run).splitlines()
    assert "srv CPU us" in table[1] and table[3].rstrip().endswith(" 172") and table[2].rstrip().endswith(" -")
    assert any(line.startswith("srv CPU us: ") for line in table)
    page = html_from_runs([run])
    assert "0.98, 172 &micro;s/req, 1.2 wakeups/req" in page and "<b>server CPU</b>" in page
    # nothing measured (a remote server): no column text to explain
    remote = replace(run, points=(_point(1.0),))
    assert "<b>server CPU</b>" not in html_from_runs([remote])
    assert not any(line.startswith("srv CPU us: ") for line in table_from_run(remote).splitlines())


def _cost(point, rps: float, us: float, cores: float):
    return replace(point, throughput_rps=rps, server_cpu_us_per_request=us, server_cpu_cores=cores)


def _run(name: str, *points, server_cpus=(1,)):
    return PerfRun(
        model="m",
        url="127.0.0.1:8001",
        protocol="grpc",
        engine=name,
        points=points,
        label=name,
        server_cpus=server_cpus,
    )


def test_a_comparison_says_whether_the_servers_cpu_per_request_accounts_for_a_difference():
    from tritongen.perf.report import html_from_runs
    from tritongen.perf.results import comparison_lines

    ours = _run("builtin", _cost(_point(4.0), 5000.0, 180.0, 0.95), _cost(_point(16.0), 5600.0, 170.0, 0.97))
    # concurrency 4 within 5%: nothing to explain; at 16, 0.88x with 1.14x the CPU per request on a saturated core
    pa = _run("perf_analyzer", _cost(_point(4.0), 4900.0, 185.0, 0.93), _cost(_point(16.0), 4928.0, 194.0, 0.96))
    (line,) = comparison_lines([ours, pa])
    assert line.startswith("concurrency 16: perf_analyzer reads 0.88x the throughput of builtin")
    assert "1.14x the CPU per request" in line and "accounts for the difference" in line
    # the same gap with the same CPU per request: the server's cost does not explain it
    (line,) = comparison_lines([ours, _run("pa", _cost(_point(16.0), 4928.0, 172.0, 0.96))])
    assert "not all of it" in line and "accounts for the difference" not in line
    # a server with spare CPU: the clients' pace sets the figures, whatever the cost per request
    (line,) = comparison_lines([ours, _run("pa", _cost(_point(16.0), 3000.0, 194.0, 0.55))])
    assert "not saturated" in line and "0.55" in line
    # a remote server: no CPU figures to compare, and the line says so
    (line,) = comparison_lines([ours, _run("pa", replace(_point(16.0), throughput_rps=3000.0))])
    assert "not measured" in line
    assert comparison_lines([ours]) == [] and comparison_lines([ours, ours]) == []
    assert "woke" not in line  # no wakeups read: no words on them
    # wakeups read in both: the line says how often the server's threads woke, and names the pace where they differ
    woke = [
        _run(r.engine, *(replace(p, server_wakeups_per_request=w) for p in r.points))
        for r, w in ((ours, 0.8), (pa, 2.0))
    ]
    (line,) = comparison_lines(woke)
    assert "its threads woke 2.00 times per request against 0.80" in line and "one at a time" in line
    assert line.index("woke") < line.index("accounts for the difference")
    near = [
        _run(r.engine, *(replace(p, server_wakeups_per_request=w) for p in r.points))
        for r, w in ((ours, 1.0), (pa, 1.1))
    ]
    (line,) = comparison_lines(near)
    assert "woke 1.10 times per request against 1.00" in line and "one at a time" not in line
    page = html_from_runs([ours, pa])
    assert 'id="comparison"' in page and "perf_analyzer reads 0.88x" in page
    assert 'id="comparison"' not in html_from_runs([ours])


def test_perf_compare_prints_the_comparison_and_writes_it_into_the_report(tmp_path):
    from click.testing import CliRunner

    from tritongen.cli import cli

    ours = _run("builtin", _cost(_point(16.0), 5600.0, 170.0, 0.97))
    pa = _run("perf_analyzer", _cost(_point(16.0), 4928.0, 194.0, 0.96))
    (tmp_path / "a.json").write_text(json_from_run(ours))
    (tmp_path / "b.json").write_text(json_from_run(pa))
    out = CliRunner().invoke(
        cli,
        ["perf", "--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--report", str(tmp_path / "cmp")],
    )
    assert out.exit_code == 0, out.output
    assert "concurrency 16: perf_analyzer reads 0.88x the throughput of builtin" in out.output
    assert "accounts for the difference" in (tmp_path / "cmp" / "report.html").read_text()


def test_a_result_file_whose_figures_are_not_numbers_is_refused_before_anything_formats_them():
    import json

    from tritongen.errors import TritongenError

    measured = replace(_point(4.0), server_cpu_cores=0.98, server_cpu_us_per_request=172.4)
    good = json.loads(json_from_run(_run("builtin", measured)))
    assert run_from_json(json.dumps(good)).points[0].server_cpu_us_per_request == 172.4
    for where, value, named in (
        (("server_cpu_us_per_request",), "x", "points[0].server_cpu_us_per_request"),
        (("latency", "p99_ms"), [1], "points[0].latency.p99_ms"),
        (("server", "requests"), 1.5, "points[0].server.requests"),  # a count is a whole number
        (("errors",), {"unavailable": "2"}, "points[0].errors"),
        (("window_history",), [[1.0]], "points[0].window_history[0]"),
    ):
        bad = json.loads(json.dumps(good))
        target = bad["points"][0]
        for key in where[:-1]:
            target = target[key]
        target[where[-1]] = value
        with pytest.raises(TritongenError, match="malformed") as caught:
            run_from_json(json.dumps(bad))
        assert named in caught.value.problem, (named, caught.value.problem)
    bad = json.loads(json.dumps(good))
    bad["server_cpus"] = ["one"]
    with pytest.raises(TritongenError, match="malformed"):
        run_from_json(json.dumps(bad))
    del bad["points"][0]["latency"]
    with pytest.raises(TritongenError, match="lacks 'latency'"):
        run_from_json(json.dumps(bad))


def test_a_result_file_is_read_within_a_bound_and_a_folder_or_binary_is_one_error(tmp_path, monkeypatch):
    from tritongen.errors import TritongenError
    from tritongen.perf import results

    good = tmp_path / "good.json"
    good.write_text(json_from_run(_run("builtin", _point(4.0))))
    assert run_from_json(good).points[0].load == 4.0
    monkeypatch.setattr(results, "MAX_RESULT_BYTES", good.stat().st_size - 1)
    with pytest.raises(TritongenError, match="is over"):
        run_from_json(good)
    monkeypatch.undo()
    with pytest.raises(TritongenError, match="holds no results.json"):
        run_from_json(tmp_path)
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00{")
    with pytest.raises(TritongenError, match="not UTF-8|not JSON"):
        run_from_json(tmp_path / "bin.json")


def test_a_listener_on_another_loopback_address_is_not_the_server_behind_the_url():
    import os

    from tritongen.server.ports import _proc_address, pids_listening_on

    assert str(_proc_address("0100007F")) == "127.0.0.1"
    assert _proc_address("0000000000000000FFFF00000100007F").ipv4_mapped.exploded == "127.0.0.1"
    # the same addresses as a big-endian host prints them (each 32-bit word in host order)
    assert str(_proc_address("7F000001", "big")) == "127.0.0.1"
    assert _proc_address("00000000000000000000FFFF7F000001", "big").ipv4_mapped.exploded == "127.0.0.1"
    with socket.socket() as other:
        other.bind(("127.0.0.2", 0))  # a decoy: same port, another address; the URL's server is not it
        other.listen()
        port = other.getsockname()[1]
        assert os.getpid() in pids_listening_on(port, "127.0.0.2")
        assert os.getpid() not in pids_listening_on(port, "127.0.0.1")
        assert os.getpid() in pids_listening_on(port)  # no host: any address, as before
    with socket.socket() as every:
        every.bind(("0.0.0.0", 0))  # the wildcard takes connections to every address
        every.listen()
        assert os.getpid() in pids_listening_on(every.getsockname()[1], "127.0.0.1")


def test_a_wildcard_listener_takes_its_own_familys_connections():
    import ipaddress

    from tritongen.server.ports import _reaches

    v4, v6 = frozenset({ipaddress.ip_address("127.0.0.1")}), frozenset({ipaddress.ip_address("::1")})
    assert _reaches(ipaddress.ip_address("0.0.0.0"), v4) and not _reaches(ipaddress.ip_address("0.0.0.0"), v6)
    assert _reaches(ipaddress.ip_address("::"), v4) and _reaches(ipaddress.ip_address("::"), v6)  # dual stack


def test_a_url_that_stays_on_this_machine_finds_its_server_by_any_local_address():
    """A server is this machine's whatever the URL calls it: loopback, 0.0.0.0 (Linux connects it to loopback) or
    an address of one of its interfaces; an address elsewhere is not looked up (its /proc is not ours)."""
    import os

    from tritongen.server.ports import (
        _interface_addresses,
        connects_to_loopback,
        host_addresses,
        is_loopback,
        is_this_machine,
        pids_listening_on,
    )

    assert is_this_machine("127.0.0.1") and is_this_machine("localhost") and is_this_machine("0.0.0.0")
    assert is_loopback("::ffff:127.0.0.1") and is_this_machine("::ffff:127.0.0.1")  # IPv4-mapped, as IPv4
    assert connects_to_loopback("0.0.0.0") and connects_to_loopback("::") and not connects_to_loopback("192.0.2.9")
    assert host_addresses("a..b") == frozenset() and host_addresses("x" * 64 + ".example") == frozenset()
    own = sorted(str(a) for a in _interface_addresses() if a.version == 4 and not a.is_loopback)
    elsewhere = next(a for a in ("192.0.2.7", "198.51.100.7", "203.0.113.7") if a not in own)  # documentation nets
    assert not is_this_machine(elsewhere) and not is_this_machine("no-such-host.invalid")
    for address in own:
        assert is_this_machine(address)
    with socket.socket() as loop:
        loop.bind(("127.0.0.1", 0))
        loop.listen()
        assert os.getpid() in pids_listening_on(loop.getsockname()[1], "0.0.0.0")  # reaches loopback
    with socket.socket() as every:
        every.bind(("0.0.0.0", 0))
        every.listen()
        for address in own:
            assert os.getpid() in pids_listening_on(every.getsockname()[1], address)
