"""tritongen perf and tune against a real tritonserver: built-in engine, perf_analyzer, report, tune, bad use."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from tests import factories
from tests.conftest import SLEEPY_CONFIG, SLEEPY_MODEL, write_model
from tritongen.build import build
from tritongen.errors import TritongenError
from tritongen.perf import PerfSpec, perf_from_spec, run_from_json
from tritongen.perf.report import report_from_runs
from tritongen.perf.results import json_from_run
from tritongen.server import ServeSpec, server_from_repository
from tritongen.spec import build_spec_from_options

pytestmark = pytest.mark.server

QUICK = {"duration_s": 1.2, "warmup_s": 0.3, "max_windows": 4, "stability_pct": 25.0}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("perf")
    repo = work / "repo"
    seq = factories.save_model(
        factories.make_dynamic_seq(), work / "seq.pt", "torchscript-trace", factories.dynamic_seq_inputs()
    )
    build(build_spec_from_options(seq, name="seq", inputs=["x:FP32:-1,8"], max_batch_size=8, repo=repo))
    # A copy for tune, which rewrites its config.
    shutil.copytree(repo / "seq", repo / "seq_tune")
    config = repo / "seq_tune" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "seq"', 'name: "seq_tune"'))
    write_model(repo, "sleepy", SLEEPY_CONFIG, SLEEPY_MODEL)
    with server_from_repository(ServeSpec(repo=repo, model_control="explicit")) as server:
        yield server, repo


def spec_for(served, **options):
    server, repo = served
    settings = {**QUICK, **options}
    return PerfSpec(
        model=settings.pop("model", "seq"),
        url=settings.pop("url", server.grpc_url),
        repo=repo,
        metrics_url=server.metrics_url,
        **settings,
    )


@pytest.fixture(scope="module")
def closed_loop_run(served):
    return perf_from_spec(spec_for(served, concurrency=(1, 4)))


def test_closed_loop_numbers_are_sane_and_self_consistent(closed_loop_run):
    run = closed_loop_run
    assert not run.partial and [p.load for p in run.points] == [1, 4]
    for p in run.points:
        assert p.error_count == 0 and p.requests > 50
        lat = p.latency
        assert 0 < lat.p50_ms <= lat.p90_ms <= lat.p95_ms <= lat.p99_ms <= lat.max_ms
        # Little's law: requests in flight = throughput x time each spends in flight (less the client's gap).
        in_flight = p.throughput_rps * lat.mean_ms / 1000
        assert 0.6 * p.load <= in_flight <= 1.05 * p.load, (p.load, in_flight)
        assert p.server.requests > 0 and p.server.compute_infer_us > 0 and p.server.queue_us >= 0
        assert p.server.total_us <= lat.mean_ms * 1000 * 1.1
        assert p.client_cpu_cores is not None and p.client_cpu_cores > 0 and p.client_cpu_us_per_request > 0
        # the server runs here: its CPU per answered request (its process and the model's stub) is measured
        assert p.server_cpu_us_per_request is not None and p.server_cpu_us_per_request > 0
        # ... and how often its threads woke per request (at least the thread that read it, once per arrival burst)
        assert p.server_wakeups_per_request is not None and p.server_wakeups_per_request > 0
        assert 0 < p.server_cpu_cores <= len(run.server_cpus) + 0.1, (p.server_cpu_cores, run.server_cpus)
    assert run.points[1].throughput_rps > run.points[0].throughput_rps
    assert run.served is not None and run.served == _settings_in_file(run.settings["repo"], "seq"), run.served
    # the server's gauges, read from its own metrics port (a local server on ports of its own: no 8002 to guess)
    assert "nv_cpu_utilization" in run.metrics, run.metrics


def test_open_loop_request_rate_is_held(served):
    # Poisson arrivals: 80/s over the 1.2 s measured were about 96 requests, +-10 by chance alone (a run read 100.6/s,
    # 2.5 sigma, against a 25% band); at 200/s the band below is over 4 sigma of that count, and 200/s is still
    # little for the trivial model on a machine twice as slow
    run = perf_from_spec(spec_for(served, request_rates=(200,), arrival="poisson", seed=7))
    (p,) = run.points
    assert p.mode == "request_rate" and p.error_count == 0
    assert p.throughput_rps == pytest.approx(200, rel=0.3)
    assert p.send_rate_rps == pytest.approx(200, rel=0.3)
    assert p.latency.p50_ms > 0 and p.max_send_lag_ms is not None


def test_http_protocol(served):
    server, _ = served
    run = perf_from_spec(spec_for(served, url=server.http_url, protocol="http", concurrency=(2,), request_rates=(80,)))
    closed, opened = run.points
    assert closed.error_count == 0 and closed.throughput_rps > 0 and closed.client_cpu_us_per_request > 0
    assert opened.mode == "request_rate" and opened.error_count == 0
    assert opened.throughput_rps == pytest.approx(80, rel=0.25)
    assert run.served == _settings_in_file(run.settings["repo"], "seq")  # as the HTTP answer writes it


def _settings_in_file(repo, name: str):
    """The batching and instances the model's config.pbtxt asks for, as perf records those it measured under."""
    from pathlib import Path

    from tritongen.served_settings import served_settings_from_model_config
    from tritongen.validate import config_from_file

    return served_settings_from_model_config(config_from_file(Path(repo) / name / "config.pbtxt"))


def test_perf_analyzer_engine_agrees_with_builtin(served):
    from tritongen.perf.perf_analyzer import find_perf_analyzer

    try:
        find_perf_analyzer()
    except TritongenError as err:
        pytest.skip(f"perf_analyzer not installed ({err.problem}); run scripts/install_perf_analyzer.sh")
    # perf_analyzer's own asynchronous client, one thread (its leanest on gRPC): passed through, and recorded.
    pa = perf_from_spec(
        spec_for(
            served,
            engine="perf_analyzer",
            concurrency=(4,),
            request_rates=(80,),
            stability_pct=30,
            perf_analyzer_args="--async --max-threads 1",
        )
    )
    ours = perf_from_spec(spec_for(served, concurrency=(4,), request_rates=(80,), stability_pct=30))
    assert not pa.partial, pa.partial_reason
    assert tuple(pa.settings["perf_analyzer_args"]) == ("--async", "--max-threads", "1")
    assert [p.engine for p in pa.points] == ["perf_analyzer"] * 2
    for a, b in zip(pa.points, ours.points):
        assert a.mode == b.mode and a.load == b.load
        # Same server, same inputs, a noisy shared machine: the figures agree in size, not to the percent
        # (bench/harness_agreement.py measures the agreement properly).
        assert 3.0 > b.throughput_rps / a.throughput_rps > 1 / 3, (a.throughput_rps, b.throughput_rps)
        assert 0.2 < b.latency.p50_ms / a.latency.p50_ms < 5.0, (a.latency.p50_ms, b.latency.p50_ms)
        assert a.server.compute_infer_us > 0
        # the costs of each client, read around the perf_analyzer process: its own CPU and the server's
        assert a.client_cpu_us_per_request is not None and a.client_cpu_us_per_request > 0
        assert a.server.executions > 0 and a.server.avg_batch >= 1.0  # the server's batching, which its CSV lacks
        assert a.server_cpu_us_per_request is not None and a.server_cpu_us_per_request > 0
        assert b.server_cpu_us_per_request is not None and b.server_cpu_us_per_request > 0
        assert a.server_wakeups_per_request and b.server_wakeups_per_request  # read around either engine


def test_report_renders_in_headless_chromium(closed_loop_run, tmp_path):
    other = run_from_json(json_from_run(closed_loop_run).replace('"label": ""', '"label": "second run"'))
    report = report_from_runs([closed_loop_run, other], tmp_path / "report")
    text = report.read_text()
    assert text.count("data:image/png;base64,") >= 3 and "second run" in text
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no headless Chromium: apt-get install -y chromium")
    shot = tmp_path / "shot.png"
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,1400",
        f"--screenshot={shot}",
        report.as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=90)
    assert shot.is_file(), "chromium wrote no screenshot"
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    assert pixels[..., :3].std() > 0.05, "the screenshot is blank"
    assert (pixels[..., :3].mean(axis=2) < 0.5).mean() > 0.005, "no dark pixels: text and plots did not render"


def test_cli_writes_json_csv_and_report(served, tmp_path):
    server, repo = served
    out = tmp_path / "cli"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tritongen",
            "perf",
            "seq",
            "--url",
            server.grpc_url,
            "--repo",
            str(repo),
            "--concurrency",
            "2",
            "--duration-s",
            "1.2",
            "--warmup-s",
            "0.3",
            "--report",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "window" in done.stderr  # live progress
    assert {"report.html", "results.json", "results.csv"} <= {p.name for p in out.iterdir()}
    assert run_from_json(out / "results.json").points[0].load == 2


def test_bad_use_is_a_clear_error_not_a_hang(served, tmp_path):
    server, repo = served
    with pytest.raises(TritongenError, match="no model 'nope'"):
        perf_from_spec(spec_for(served, model="nope"))
    np.savez(tmp_path / "wrong.npz", y=np.zeros((2, 3, 8), np.float32))
    with pytest.raises(TritongenError, match="do not match model 'seq'"):
        perf_from_spec(spec_for(served, input_data=tmp_path / "wrong.npz"))
    np.savez(tmp_path / "shape.npz", x=np.zeros((2, 3, 7), np.float32))
    with pytest.raises(TritongenError, match="shape"):
        perf_from_spec(spec_for(served, input_data=tmp_path / "shape.npz"))
    started = time.monotonic()
    with pytest.raises(TritongenError, match="no Triton server answers"):
        perf_from_spec(spec_for(served, url="127.0.0.1:1"))
    assert time.monotonic() - started < 30
    done = subprocess.run(
        [sys.executable, "-m", "tritongen", "perf", "nope", "--url", server.grpc_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_server_dying_mid_run_gives_a_partial_result(served, tmp_path):
    _, repo = served
    server = server_from_repository(ServeSpec(repo=repo))
    try:
        killer = threading.Timer(2.2, lambda: server.process.kill())
        killer.start()
        started = time.monotonic()
        try:
            run = perf_from_spec(
                PerfSpec(model="seq", url=server.grpc_url, repo=repo, concurrency=(1, 2, 4), timeout_s=5, **QUICK)
            )
            assert run.partial and run.points and "server" in run.partial_reason
            report = report_from_runs([run], tmp_path / "partial")
            assert "PARTIAL RESULT" in report.read_text()
        except TritongenError as err:  # died before the first level was measured
            assert "server" in err.message
        assert time.monotonic() - started < 60
    finally:
        killer.cancel()
        server.stop(timeout_s=10)


def test_tune_writes_a_config_that_validates_and_loads(served):
    from tritongen.client import infer_from_arrays, model_metadata
    from tritongen.perf.tune import TuneSpec, tune_model
    from tritongen.validate import config_from_file, validate_repository

    server, repo = served
    before = os.sched_getaffinity(0)
    config_before = (repo / "seq_tune" / "config.pbtxt").read_bytes()
    said: list[str] = []
    result = tune_model(
        TuneSpec(
            model_dir=repo / "seq_tune",
            max_p99_ms=200,
            url=server.grpc_url,
            max_instances=2,
            queue_delays_us=(0, 500),
            max_batch_sizes=(4, 8),
            max_concurrency=8,
            duration_s=0.9,
            warmup_s=0.2,
            budget_s=120,
            client_cpus="0",
        ),
        progress=said.append,
    )
    assert result.winner is not None and result.meets_constraints and len(result.trials) >= 3
    # how long it searches, and that the re-measurements come after, said up front (--budget-s 30 took 54 s)
    up_front = "searching for up to 120 s (--budget-s); then the best configs are measured again, 3 s each"
    assert any(up_front in line for line in said[:3]), said[:3]
    if result.unchanged:  # the starting config won: config.pbtxt is left as it was, and served as it is
        assert result.config_path is None and result.record_path is None
        assert (repo / "seq_tune" / "config.pbtxt").read_bytes() == config_before
        assert result.winner.candidate == result.baseline.candidate and "(the starting config)" in result.table()
        assert model_metadata(server.grpc_url, "seq_tune")["max_batch_size"] == result.winner.candidate.max_batch_size
        return
    assert result.config_path == repo / "seq_tune" / "config.pbtxt" and result.record_path.is_file()
    # The winner was measured again (twice as long) before it was written, and the record says so.
    record = json.loads(result.record_path.read_text())
    assert result.confirmed is not None and result.confirmed.latency.p99_ms <= 200
    assert record["confirmed"]["p99_ms"] == result.confirmed.latency.p99_ms and record["confirmation"]
    assert record["search"]["client_cpus"] == [0] and os.sched_getaffinity(0) == before  # pinned, then given back
    # Each time a config's figure beat the best one's, the best was measured again beside it (paired descent), and
    # the newcomer was kept only when it beat that figure by the margin too (or the best's point broke the target).
    assert record["search"]["paired_descent"] is True and record["descent_checks"] == json.loads(
        json.dumps(list(result.descent_checks))
    )
    for check in record["descent_checks"]:
        again = check["again"]
        assert check["kept"] == (
            again is None
            or again["p99_ms"] > result.target_p99_ms
            or check["challenger_rps"] > again["throughput_rps"] * 1.03
        )
    assert validate_repository(repo).ok
    from tritongen.verify import check_verified

    assert check_verified(
        repo, allow_unverified=["sleepy"]
    ).ok  # the manifest vouches for the tuned config: `serve` accepts it
    written = config_from_file(result.config_path)
    assert written.name == "seq_tune" and written.instance_group[0].count == result.winner.candidate.instances
    assert written.max_batch_size == result.winner.candidate.max_batch_size
    assert model_metadata(server.grpc_url, "seq_tune")["max_batch_size"] == written.max_batch_size  # loaded at the end
    x = np.ones((1, 3, 8), np.float32)
    np.testing.assert_allclose(infer_from_arrays(server.grpc_url, "seq_tune", {"x": x})["output"], x.mean(axis=1))
    assert "frontier" in result.table()


def test_tune_bisects_the_concurrency_between_the_last_level_within_the_bound_and_the_first_over_it(served, tmp_path):
    from tritongen.perf.tune import TuneSpec, tune_model

    server, repo = served
    np.savez(tmp_path / "x.npz", X=np.ones((4, 4), np.float32))
    spec = TuneSpec(
        model_dir=repo / "sleepy",
        max_p99_ms=95,
        url=server.grpc_url,
        max_instances=1,
        queue_delays_us=(20000,),
        max_batch_sizes=(8,),
        max_concurrency=16,
        duration_s=0.6,
        warmup_s=0.2,
        budget_s=120,
        write=False,
        input_data=tmp_path / "x.npz",
        p99_margin_pct=0,
        climb_steps=2,
        load_warmup_s=0.5,
    )  # 8 in flight ~75 ms, 16 ~125
    # The premise is the machine's: 8 in flight make one batch of 8 within the 20 ms queue delay. A fresh-clone CI
    # run once measured 146.7 ms at 8 (a straggler missed the batch: p99 of 0.6 s windows is their worst request),
    # so the search is run again, up to three times, until the model behaves as designed; the assertions after
    # it are the code's.
    for _ in range(3):
        result = tune_model(spec)
        print(result.table())
        baseline = {int(p.load): p for p in result.baseline.points}
        above = sorted(c for c in baseline if c > 8)
        if above and 8 in baseline and baseline[8].latency.p99_ms <= 95:
            break
    assert above and 8 in baseline and baseline[8].latency.p99_ms <= 95, "the latency did not behave as designed"
    # From 8 (p99 ~75 ms) the walk steps to where p99 would reach 95 ms if it grew in proportion (9-12), not to 16;
    # every level above 8 is over (a second execution waits), and bisection narrows the gap to 8.
    assert 16 not in baseline and above[0] <= 12 and len(above) <= 3, sorted(baseline)
    assert all(baseline[c].latency.p99_ms > 95 for c in above), sorted(baseline)
    assert int(result.baseline.best.load) == 8 and result.config_path is None
    assert result.confirmed is not None and int(result.confirmed.load) == 8 and result.confirmed.latency.p99_ms <= 95
    # The climb from the confirmed 8 re-measured 10 (a quarter more, rounded up), where two executions queue: over
    # the bound, so the confirmed point stayed at 8.
    climbed = [p for p in result.confirmation if int(p.load) > 8]
    assert [int(p.load) for p in climbed] == [10] and climbed[0].latency.p99_ms > 95
    # Every re-measurement is named with its config; the confirmed figure is one of the winner's own.
    assert len(result.confirmation_configs) == len(result.confirmation)
    (owner,) = [c for c, p in zip(result.confirmation_configs, result.confirmation) if p is result.confirmed]
    assert owner == result.winner.candidate
    assert [c for c, p in zip(result.confirmation_configs, result.confirmation) if int(p.load) == 10] == [owner]


def test_perf_warns_where_the_config_on_disk_differs_from_what_the_server_serves(served, tmp_path):
    """A build --force with other instances while serve runs: perf measured the old config and said nothing; deploy
    then asked to measure again, which measured the old config again."""
    import shutil

    from tritongen.perf.run import served_differs_from_disk

    server, repo = served
    run = perf_from_spec(spec_for(served, concurrency=(1,), max_windows=3))
    assert served_differs_from_disk(run.served, spec_for(served)) is None  # as built and served
    copy = tmp_path / "repo"
    shutil.copytree(repo / "seq", copy / "seq")
    config = copy / "seq" / "config.pbtxt"
    config.write_text(config.read_text().replace("count: 1", "count: 3"))
    warning = served_differs_from_disk(run.served, replace(spec_for(served), repo=copy))
    assert warning is not None and warning.startswith(f"the server serves seq otherwise than {config} now says")
    assert "(instances 1 -> 3)" in warning and "restart tritongen serve" in warning
