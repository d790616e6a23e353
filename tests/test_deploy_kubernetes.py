"""tritongen's Kubernetes/KServe bundle: thresholds from measurements, the files checked by the tools their users
run (kubectl kustomize, kubernetes-validate, CRD schemas, promtool), bad input, and a live proof against a real
Prometheus scraping a real tritonserver."""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, SLEEPY_UNBATCHED_CONFIG, run_cli, sleepy_model, write_model
from tritongen.cli import main
from tritongen.deploy.checks import check_bundle, core_problems, custom_resource_problems, rendered_overlay
from tritongen.deploy.k8s_bundle import kubernetes_bundle_from_repository
from tritongen.deploy.thresholds import desired_replicas, thresholds_from_run
from tritongen.errors import TritongenError
from tritongen.perf.results import LatencySummary, PerfPoint, PerfRun, ServerBreakdown, json_from_run
from tritongen.served_settings import ServedSettings

SLO_MS = 95.0


def point(load: int, rps: float, p99_ms: float, queue_us: float, errors: int = 0) -> PerfPoint:
    lat = LatencySummary(p99_ms / 2, p99_ms / 2, p99_ms * 0.8, p99_ms * 0.9, p99_ms, p99_ms * 1.2)
    return PerfPoint(
        "concurrency",
        load,
        "builtin",
        rps,
        lat,
        1000,
        errors={"BACKEND": errors} if errors else {},
        server=ServerBreakdown(1000, 200, queue_us, 10.0, 50_000.0, 10.0),
    )


# A batching model's shape: queue time falls from c4 to c8 as batches fill (queue delay), then rises past the knee.
RUN = PerfRun(
    "double",
    "127.0.0.1:8001",
    "grpc",
    "builtin",
    (
        point(1, 15.0, 70.0, 20_000),
        point(2, 28.0, 71.0, 20_000),
        point(4, 55.0, 72.0, 20_000),
        point(8, 110.0, 75.0, 3_000),
        point(16, 120.0, 140.0, 60_000),
    ),
)


def vouch(model_dir: Path, **fields) -> Path:
    """Write the manifest a build would for version 1 of the hand-written ``model_dir``, listing every file in it
    (a test's edits too), so the repository verifies as a built one does; ``fields``: Manifest fields (engines)."""
    from tritongen.manifest import file_hashes, manifest_path, new_manifest, write_manifest

    path = manifest_path(model_dir, 1)
    files = [p for p in model_dir.rglob("*") if p.is_file() and p != path]
    return write_manifest(model_dir, 1, replace(new_manifest(1, file_hashes(model_dir, files)), **fields))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("deploy")
    vouch(write_model(root / "repo", "double", DOUBLE_CONFIG, DOUBLE_MODEL))
    (root / "results.json").write_text(json_from_run(RUN))
    return root


@pytest.fixture(scope="module")
def measured(work):
    return kubernetes_bundle_from_repository(
        work / "repo", work / "k8s", perf_results=work / "results.json", slo_p99_ms=SLO_MS, peak_rps=1000
    )


# ------------------------------------------------------------------------------------------ thresholds


def test_thresholds_from_measurement():
    t = thresholds_from_run(RUN, slo_p99_ms=SLO_MS, peak_rps=1000)
    assert t.measured and t.knee_load == 8 and t.capacity_rps == 110.0 and t.knee_p99_ms == 75.0
    # Little's law at the knee: 110 req/s x (3000 + 50030) us per request
    assert t.target_in_flight == pytest.approx(110 * 53_030e-6, rel=1e-3)
    assert t.max_replicas_prod == 11  # ceil(1000 / 110) + 1 spare
    assert t.min_replicas_prod == 2 and t.above_knee_in_flight == pytest.approx(1.5 * t.target_in_flight, rel=1e-3)
    assert [r.meets_slo for r in t.levels] == [True, True, True, True, False]


def test_knee_is_the_last_level_of_the_unbroken_run_meeting_the_objective():
    """A level that meets the objective above one that failed is no knee (the load that failed may fail again
    in production): the knee is the last level below the first failure, and a caution names both levels."""
    run = PerfRun(
        "m",
        "u",
        "grpc",
        "builtin",
        (point(1, 10, 50, 0), point(2, 19, 99, 0), point(4, 35, 90, 0), point(8, 60, 92, 0, errors=3)),
    )
    t = thresholds_from_run(run, slo_p99_ms=95)
    assert t.knee_load == 1 and t.capacity_rps == 10  # 2 broke the objective: 4 meeting it again is no knee
    assert [r.meets_slo for r in t.levels] == [True, False, True, False]
    assert t.cautions == (
        "concurrency 4 met p99 <= 95 ms above concurrency 2, which did not (p99 99.0 ms): the knee is concurrency 1, "
        "the last level below the first that failed, since a load that failed once may fail again; if concurrency 2 "
        "was noise, measure the levels again for longer (tritongen perf m --concurrency 1,2,4,8 --duration-s 12 "
        "--url u --report perf-m/ --force, then --from-perf perf-m/)",
    )
    errors = replace(run, points=(point(1, 10, 50, 0), point(2, 19, 60, 0, errors=3), point(4, 35, 70, 0)))
    t = thresholds_from_run(replace(errors, settings={"duration_s": 10.0}), slo_p99_ms=95)
    assert t.knee_load == 1
    (caution,) = t.cautions
    assert caution.startswith("concurrency 4 met p99 <= 95 ms above concurrency 2, which did not (3 errors)")
    assert "--duration-s 20 " in caution  # twice the run's own
    failing_top = replace(run, points=(point(1, 10, 50, 0), point(2, 19, 60, 0), point(4, 35, 99, 0)))
    t = thresholds_from_run(failing_top, slo_p99_ms=95)
    assert t.knee_load == 2 and t.cautions == ()  # nothing met the objective above the failure


def test_an_unstable_knee_level_is_a_caution(work, tmp_path, capsys):
    """perf marks a level "not stable" when its windows kept disagreeing: a knee there is uncertain, and the
    bundle says so where the thresholds are read (printed, thresholds.json, README)."""
    shaky = replace(RUN, points=tuple(replace(p, stable=p.load != 8) for p in RUN.points))
    (caution,) = thresholds_from_run(shaky, slo_p99_ms=SLO_MS).cautions
    assert caution == (
        "the knee level, concurrency 8, was not stable (its last windows differed in throughput or latency by more "
        "than the perf run's --stability-pct), so its capacity and p99 are uncertain; measure the levels again for "
        "longer (tritongen perf double --concurrency 1,2,4,8,16 --duration-s 12 --report perf-double/ --force, then "
        "--from-perf perf-double/)"
    )
    below = replace(RUN, points=tuple(replace(p, stable=p.load != 4) for p in RUN.points))
    assert thresholds_from_run(below, slo_p99_ms=SLO_MS).cautions == ()  # not the knee: no number rests on it
    results = tmp_path / "shaky.json"
    results.write_text(json_from_run(shaky))
    out = tmp_path / "k8s"
    code, printed, err = _deploy_from(Path(str(work / "repo")), results, out, capsys)
    assert code == 0 and not err, err
    assert f"\ncaution: {caution}\n" in printed + "\n"
    assert json.loads((out / "thresholds.json").read_text())["cautions"] == [caution]
    assert f"- **Caution**: {caution}." in (out / "README.md").read_text()


def _deploy_from(repo: Path, results: Path, out: Path, capsys) -> tuple[int, str, str]:
    """``tritongen deploy REPO --to kubernetes --from-perf RESULTS`` (objective 95 ms) into ``out``."""
    argv = ["deploy", str(repo), "--to", "kubernetes", "--from-perf", str(results), "--slo-p99-ms", "95"]
    return run_cli([*argv, "--image", "r/x:1", "--out", str(out)], capsys)


def test_a_run_mixing_concurrency_and_request_rates_notes_the_levels_left_out(work, tmp_path, capsys):
    """A knee is a level of one kind of load: the request-rate levels of a run that measured both are left out,
    and the bundle says so (printed, in thresholds.json and in every file's source line)."""
    rate = replace(point(100, 99.0, 60.0, 1_000), mode="request_rate")
    mixed = replace(RUN, points=RUN.points + (rate,))
    t = thresholds_from_run(mixed, slo_p99_ms=SLO_MS)
    assert (t.mode, t.knee_load, len(t.levels)) == ("concurrency", 8, 5)  # as without the rate level
    note = (
        "the perf run also measured 100 req/s, left out: the thresholds come from its concurrency levels "
        "alone (a knee is a level of one kind of load); to deploy from the request rate levels, measure them alone "
        "(tritongen perf double --request-rate 100 --report perf-double/ --force)"
    )
    assert t.notes == (note,) and thresholds_from_run(RUN, slo_p99_ms=SLO_MS).notes == ()
    results = tmp_path / "mixed.json"
    results.write_text(json_from_run(mixed))
    out = tmp_path / "k8s"
    code, printed, err = _deploy_from(Path(str(work / "repo")), results, out, capsys)
    assert code == 0 and not err, err
    assert f"\nnote: {note}" in printed
    assert json.loads((out / "thresholds.json").read_text())["notes"] == [note]
    readme = (out / "README.md").read_text()
    assert "mixed.json of double: 5 concurrency levels (1 request-rate level left out: see thresholds.json)" in readme
    assert check_bundle(out).ok


def test_a_knee_at_the_highest_measured_level_is_a_caution_saying_to_measure_higher():
    """Every level within the objective: the knee is somewhere above the measurement, and capacity understated."""
    t = thresholds_from_run(RUN, slo_p99_ms=150, peak_rps=1000)
    assert t.knee_load == 16
    assert t.cautions == (
        "every measured level met p99 <= 150 ms (p99 140.0 ms at concurrency 16): the knee is above concurrency 16, "
        "so capacity per replica is understated (and replicas overcounted); measure higher loads (tritongen perf "
        "double --concurrency 32,64,128,256 --report perf-double/ --force, then --from-perf perf-double/)",
    )
    assert thresholds_from_run(RUN, slo_p99_ms=SLO_MS).cautions == ()  # c16 broke it: the knee was measured
    errors_below = PerfRun("m", "u", "grpc", "builtin", (point(1, 10, 50, 0, errors=2), point(2, 19, 60, 0)))
    with pytest.raises(TritongenError, match=r"record 2 errors at the lowest load \(concurrency 1\): no measured"):
        thresholds_from_run(errors_below, slo_p99_ms=95)  # no unbroken run of levels meeting it: no knee


def test_a_client_bound_or_cpu_sharing_perf_run_is_a_caution():
    from dataclasses import replace

    bound = replace(RUN, points=tuple(replace(p, client_cpu_cores=0.9) if p.load == 4 else p for p in RUN.points))
    (caution,) = thresholds_from_run(bound, slo_p99_ms=SLO_MS).cautions
    assert caution.startswith("the perf run was client-bound at concurrency 4 (")
    assert "measure again with --engine perf_analyzer" in caution
    shared = replace(RUN, client_cpus=(0, 1), server_cpus=(1, 2))
    (caution,) = thresholds_from_run(shared, slo_p99_ms=SLO_MS).cautions
    assert caution.startswith("the perf run's client shared CPUs 1 with the server") and "perf --client-cpus" in caution
    apart = replace(RUN, client_cpus=(0,), server_cpus=(1, 2))
    assert thresholds_from_run(apart, slo_p99_ms=SLO_MS).cautions == ()


def test_deploy_prints_its_cautions_and_writes_them_into_the_readme_and_thresholds(work, tmp_path, capsys):
    main(
        [
            "deploy",
            str(work / "repo"),
            "--to",
            "kubernetes",
            "--image",
            "r/x:1",
            "--from-perf",
            str(work / "results.json"),
            "--slo-p99-ms",
            "150",
            "--out",
            str(tmp_path / "k8s"),
        ]
    )
    out = capsys.readouterr().out
    assert "\ncaution: every measured level met p99 <= 150 ms (p99 140.0 ms at concurrency 16)" in out
    readme = (tmp_path / "k8s" / "README.md").read_text()
    assert "- **Caution**: every measured level met p99 <= 150 ms" in readme
    record = json.loads((tmp_path / "k8s" / "thresholds.json").read_text())
    assert record["cautions"][0].startswith("every measured level met p99 <= 150 ms")


@pytest.mark.parametrize("tuned_s", [None, 500.0, 2000.0])
def test_a_config_tune_rewrote_after_the_perf_run_is_a_caution(work, tmp_path, capsys, tuned_s):
    """A results.json written before perf recorded the config it measured: tune.json records when tune rewrote
    config.pbtxt and with what: a rewrite after the run began (2000 > 1000) makes the figures those of the config
    before."""
    repo = tmp_path / "repo"
    shutil.copytree(work / "repo", repo)
    if tuned_s is not None:
        record = repo / "double" / "1" / "tritongen" / "tune.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        config = {"instances": 2, "max_queue_delay_us": 100, "max_batch_size": 8, "preferred": [4, 8]}
        record.write_text(json.dumps({"created_unix_s": tuned_s, "winner": {"config": config, "load_s": 1.0}}))
        vouch(repo / "double")  # tune rehashes what it writes
    results = tmp_path / "results.json"
    results.write_text(json_from_run(replace(RUN, started_unix_s=1000.0)))
    out = tmp_path / "k8s"
    code, printed, err = _deploy_from(Path(str(repo)), results, out, capsys)
    assert code == 0 and not err, err
    cautions = json.loads((out / "thresholds.json").read_text())["cautions"]
    if tuned_s != 2000.0:
        assert cautions == [] and "caution" not in printed
        return
    caution = (
        "tritongen tune rewrote double's config.pbtxt (double/1/tritongen/tune.json: instances 2, max_queue_delay_us "
        "100, max_batch_size 8, preferred 4,8) after this perf run measured it, so the thresholds are of the config "
        "before; restart tritongen serve on the repository (a running server keeps the config it loaded) and measure "
        f"the model again (tritongen perf double --concurrency 1,2,4,8,16 --repo {repo} "
        "--report perf-double/ --force, then --from-perf perf-double/)"
    )
    assert cautions == [caution] and f"\ncaution: {caution}" in printed
    assert f"- **Caution**: {caution}." in (out / "README.md").read_text()


def test_figures_no_server_reaches_are_refused_not_made_a_scaling_target():
    """1e15 req/s at a server time of 1e12 us made an HPA target of 1e27 requests in flight (past what a Kubernetes
    quantity holds: the autoscaler would never scale); promtool and kubernetes-validate accepted it."""
    huge = replace(RUN, points=tuple(replace(p, throughput_rps=1e15) for p in RUN.points))
    with pytest.raises(TritongenError, match=r"requests in flight per replica .*more than one server holds"):
        thresholds_from_run(huge, slo_p99_ms=SLO_MS)


def test_the_api_takes_the_run_perf_returned_as_the_cli_takes_its_file(work, tmp_path):
    """tritongen.deploy(perf_results=run) was refused ("is a PerfRun, not a path"): a notebook had to write a
    report folder to hand the run back. The run is held to a file's checks."""
    import tritongen

    given = tritongen.deploy(work / "repo", to="kubernetes", out=tmp_path / "a", perf_results=RUN, slo_p99_ms=SLO_MS)
    from_file = tritongen.deploy(
        work / "repo", to="kubernetes", out=tmp_path / "b", perf_results=work / "results.json", slo_p99_ms=SLO_MS
    )
    assert given.thresholds.target_in_flight == from_file.thresholds.target_in_flight
    assert "results (given in Python)" in given.thresholds.source
    crafted = replace(RUN, model="m\u202e")
    with pytest.raises(TritongenError, match="model holds the character U\\+202E"):
        tritongen.deploy(work / "repo", to="kubernetes", out=tmp_path / "c", perf_results=crafted, slo_p99_ms=SLO_MS)
    assert not (tmp_path / "c").exists()


def test_a_tune_record_listing_many_sizes_names_a_few(tmp_path):
    """A crafted tune.json with 700,000 preferred sizes made a 4.8 MB caution line (printed, and in the README)."""
    from tritongen.deploy.thresholds import tuned_after_caution

    record = tmp_path / "repo" / "double" / "1" / "tritongen" / "tune.json"
    record.parent.mkdir(parents=True)
    config = {"instances": 2, "max_queue_delay_us": 2**40, "max_batch_size": 8, "preferred": list(range(700_000))}
    record.write_text(json.dumps({"created_unix_s": 2000.0, "winner": {"config": config}}))
    caution = tuned_after_caution(tmp_path / "repo" / "double", replace(RUN, started_unix_s=1000.0))
    assert caution is not None and len(caution) < 1000
    assert "instances 2, max_batch_size 8, preferred 0,1,2,3,4,5,6,7,... (700000 values))" in caution


@pytest.mark.parametrize(
    "served, changed",
    [
        # double's config.pbtxt: max batch 8, 1 CPU instance, dynamic batching, delay 20000 us, no preferred sizes
        (ServedSettings(8, 1, True, (8,), 20000), None),  # as Triton serves it: an empty preferred list is [8]
        (ServedSettings(8, 2, True, (4, 8), 100), "instances 2 -> 1; preferred batch sizes [4,8] -> [8]; queue delay"),
        (
            ServedSettings(16, 1, False),
            "max batch 16 -> 8; dynamic batching off -> on; preferred batch sizes [] -> [8]",
        ),
    ],
)
def test_a_config_changed_since_the_perf_run_measured_it_is_a_caution(work, tmp_path, capsys, served, changed):
    """perf records the batching and instances the server served the model with; deploy compares them with the
    config.pbtxt it deploys (a hand edit or a tune since): the thresholds are of the config measured. A newer
    tune.json is no caution where the recorded settings match (tune may have written the same config)."""
    repo = tmp_path / "repo"
    shutil.copytree(work / "repo", repo)
    record = repo / "double" / "1" / "tritongen" / "tune.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"created_unix_s": 2000.0, "winner": {"config": {"instances": 1}, "load_s": 1.0}}))
    vouch(repo / "double")
    results = tmp_path / "results.json"
    results.write_text(json_from_run(replace(RUN, started_unix_s=1000.0, served=served)))
    out = tmp_path / "k8s"
    code, printed, err = _deploy_from(Path(str(repo)), results, out, capsys)
    assert code == 0 and not err, err
    cautions = json.loads((out / "thresholds.json").read_text())["cautions"]
    if changed is None:
        assert cautions == [] and "caution" not in printed
        return
    (caution,) = cautions
    assert caution.startswith(
        f"double's config.pbtxt now serves it otherwise than this perf run measured it ({changed}"
    )
    assert "so the thresholds are of the config before; restart tritongen serve" in caution
    assert f"(tritongen perf double --concurrency 1,2,4,8,16 --repo {repo} --report perf-double/ --force" in caution
    assert f"\ncaution: {caution}" in printed


@pytest.mark.parametrize(
    "edit",
    [
        ("count: 1", "count: -1"),
        ("max_queue_delay_microseconds: 20000", "max_queue_delay_microseconds: 10000000000000000"),
    ],
    ids=["count -1", "delay 1e16"],
)
def test_a_config_triton_loads_but_perf_records_nothing_of_compares_nothing(work, tmp_path, capsys, edit):
    """Triton serves count -1 as 1 and loads a 10**16 us queue delay: deploy stopped with a ValueError traceback."""
    repo = tmp_path / "repo"
    shutil.copytree(work / "repo", repo)
    config = repo / "double" / "config.pbtxt"
    config.write_text(config.read_text().replace(*edit))
    vouch(repo / "double")
    results = tmp_path / "results.json"
    results.write_text(json_from_run(replace(RUN, served=ServedSettings(8, 1, True, (8,), 20000))))
    code, printed, err = _deploy_from(Path(str(repo)), results, tmp_path / "k8s", capsys)
    assert code == 0 and "Traceback" not in err, err
    assert "otherwise than this perf run measured it" not in printed


def test_ensemble_target_uses_the_whole_request_time():
    # an ensemble's own statistics (50 ms here) leave out its steps; the client's mean (p99/2 = 37.5 ms) covers them
    from dataclasses import replace

    step = ServerBreakdown(1000, 100, 10.0, 5.0, 30_000.0, 5.0)
    run = PerfRun("ens", "u", "grpc", "builtin", tuple(replace(p, steps={"ens_model": step}) for p in RUN.points))
    t = thresholds_from_run(run, slo_p99_ms=SLO_MS)
    assert t.target_in_flight == pytest.approx(110 * 0.0375, rel=1e-3)


def test_hpa_rule_replayed():
    assert desired_replicas(1, 3.0, 6.0) == 1
    assert desired_replicas(1, 6.5, 6.0) == 1  # within Kubernetes' 10% tolerance
    assert desired_replicas(1, 12.0, 6.0) == 2
    assert desired_replicas(3, 12.0, 6.0) == 6
    assert desired_replicas(4, 1.0, 6.0) == 1


# ------------------------------------------------------------------------------------------ the files, checked


def test_measured_bundle_renders_and_validates(measured):
    check = check_bundle(measured.out)
    assert check.ok, "\n".join(check.problems)
    assert set(check.overlays) == {"dev", "prod", "prod-keda"}
    prod = set(check.overlays["prod"])
    assert {
        "Deployment/triton-double",
        "Service/triton-double",
        "PodDisruptionBudget/triton-double",
        "ServiceMonitor/triton-double",
        "HorizontalPodAutoscaler/triton-double",
        "PrometheusRule/triton-double",
    } <= prod
    keda = set(check.overlays["prod-keda"])
    assert "ScaledObject/triton-double" in keda and "HorizontalPodAutoscaler/triton-double" not in keda


def test_measured_numbers_reach_the_objects(measured):
    t = measured.thresholds
    objs = {(o["kind"], o["metadata"]["namespace"]): o for o in rendered_overlay(measured.out / "overlays" / "prod")}
    hpa = objs[("HorizontalPodAutoscaler", "tritongen")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 11)
    metric = hpa["spec"]["metrics"][0]["pods"]
    assert metric["metric"]["name"] == "triton_in_flight_double"
    assert metric["target"]["averageValue"] == f"{round(t.target_in_flight * 1000)}m"
    pod = objs[("Deployment", "tritongen")]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    # every instance of the model is KIND_CPU: no GPU asked of the node (--gpus sets it)
    assert "nvidia.com/gpu" not in c.get("resources", {}).get("limits", {})
    assert "--metrics-config=summary_latencies=true" in c["args"]
    env = {e["name"]: e["value"] for e in c["env"]}  # what `tritongen serve` gives its server
    assert env == {"OPENBLAS_NUM_THREADS": "1", "LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so"}
    assert pod["terminationGracePeriodSeconds"] > t.exit_timeout_s
    dev = {o["kind"]: o for o in rendered_overlay(measured.out / "overlays" / "dev")}
    assert (
        dev["HorizontalPodAutoscaler"]["spec"]["minReplicas"],
        dev["HorizontalPodAutoscaler"]["spec"]["maxReplicas"],
    ) == (1, 2)
    assert dev["Deployment"]["metadata"]["namespace"] == "tritongen-dev"
    rules = yaml.safe_load((measured.out / "monitoring" / "rules.yaml").read_text())["groups"][0]["rules"]
    exprs = {r["alert"]: r["expr"] for r in rules}
    assert exprs["TritonLatencyObjective"].endswith("> 95") and exprs["TritonAboveKnee"].endswith(
        f"> {t.above_knee_in_flight:g}"
    )
    readme = (measured.out / "README.md").read_text()
    assert (
        "measured" in readme
        and "concurrency 8" in readme
        and "110.0 req/s" in readme
        and "unmeasured" not in readme.split("Startup")[0]
    )
    keda = yaml.safe_load((measured.out / "overlays" / "prod-keda" / "scaledobject.yaml").read_text())
    assert keda["spec"]["triggers"][0]["metadata"]["threshold"] == f"{t.target_in_flight:g}"


def test_kserve_bundle(work):
    b = kubernetes_bundle_from_repository(
        work / "repo",
        work / "kserve",
        target="kserve",
        perf_results=work / "results.json",
        slo_p99_ms=SLO_MS,
        model_uri="s3://models/repo",
        canary_traffic_percent=10,
    )
    check = check_bundle(b.out)
    assert check.ok, "\n".join(check.problems)
    isvc = next(o for o in rendered_overlay(b.out / "overlays" / "prod") if o["kind"] == "InferenceService")
    pred = isvc["spec"]["predictor"]
    assert pred["model"]["modelFormat"]["name"] == "triton" and pred["model"]["protocolVersion"] == "v2"
    assert pred["model"]["storageUri"] == "s3://models/repo" and pred["canaryTrafficPercent"] == 10
    env = {e["name"]: e["value"] for e in pred["model"]["env"]}
    assert env == {"OPENBLAS_NUM_THREADS": "1", "LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so"}
    target = pred["autoScaling"]["metrics"][0]["external"]["target"]["averageValue"]
    assert target == f"{round(b.thresholds.target_in_flight * 1000)}m"  # the same target as the HPA's


def test_a_repository_ngcs_image_cannot_serve_needs_the_image_it_does(work, tmp_path, capsys):
    """A Python-backend model importing a package NGC's image lacks (here onnxruntime, as `build --target local`
    writes): the stock image would fail every pod's load, so the bundle needs --image (the one --to docker builds);
    with it, both targets run that image."""
    repo = tmp_path / "repo"
    shutil.copytree(work / "repo", repo)
    model_py = repo / "double" / "1" / "model.py"
    model_py.write_text("import onnxruntime\n" + model_py.read_text())
    vouch(repo / "double")
    for target in ("kubernetes", "kserve"):
        out = tmp_path / f"out-{target}"
        code, err = _cli(["deploy", str(repo), "--to", target, "--out", str(out), "--slo-p99-ms", "95"], capsys)
        line = err.splitlines()[0]
        assert code == 1 and line.startswith("error: NGC's Triton image") and "onnxruntime" in line, err
        assert f"tritongen deploy {repo} --to docker" in line and "--image" in line and not out.exists()
        image = "registry.example.com/team/double-serving:1"
        b = kubernetes_bundle_from_repository(repo, out, target=target, slo_p99_ms=SLO_MS, image=image, gpus=1)
        assert check_bundle(b.out).ok
        objs = rendered_overlay(b.out / "overlays" / "prod")
        if target == "kubernetes":
            (c,) = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"]
        else:
            c = next(o for o in objs if o["kind"] == "InferenceService")["spec"]["predictor"]["model"]
        assert c["image"] == image and c["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_gpus_follow_the_instance_kinds_unless_given(work, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(work / "repo", repo)
    config = repo / "double" / "config.pbtxt"
    for kinds, given, expected in ((["KIND_CPU"], None, None), (["KIND_GPU"], None, 1), (["KIND_CPU"], 2, 2)):
        text = DOUBLE_CONFIG.replace("kind: KIND_CPU", f"kind: {kinds[0]}")
        config.write_text(text)
        vouch(repo / "double")
        b = kubernetes_bundle_from_repository(repo, tmp_path / f"out-{kinds[0]}-{given}", slo_p99_ms=SLO_MS, gpus=given)
        (c,) = yaml.safe_load((b.out / "base" / "deployment.yaml").read_text())["spec"]["template"]["spec"][
            "containers"
        ]
        assert c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu") == expected, (kinds, given)


def test_the_bundle_is_made_from_the_config_bytes_verify_checked(work, tmp_path, monkeypatch):
    """deploy parsed each config.pbtxt before verify hashed it again: a config swapped between the two reads (an
    attacker's inotify race made a bundle asking for 64 GPU instances from a repository that verified) was what the
    bundle was made from. Now it is read again after the check and held to the digest the check found."""
    import importlib

    verify = importlib.import_module("tritongen.verify")  # tritongen.verify is also the API's function
    repo = tmp_path / "repo"
    shutil.copytree(work / "repo", repo)
    config = repo / "double" / "config.pbtxt"
    legit = config.read_text()
    config.write_text(legit.replace("kind: KIND_CPU", "kind: KIND_GPU"))  # what the first read sees
    real = verify.check_verified

    def swapped_around_the_check(*args, **kwargs):
        config.write_text(legit)  # the verified bytes are back for the check ...
        return real(*args, **kwargs)

    monkeypatch.setattr(verify, "check_verified", swapped_around_the_check)
    b = kubernetes_bundle_from_repository(repo, tmp_path / "out", slo_p99_ms=SLO_MS)
    (c,) = yaml.safe_load((b.out / "base" / "deployment.yaml").read_text())["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in c.get("resources", {}).get("limits", {})  # the verified config: CPU only

    def swapped_after_the_check(*args, **kwargs):
        report = real(*args, **kwargs)
        config.write_text(legit.replace("kind: KIND_CPU", "kind: KIND_GPU"))  # ... and swapped again after it
        return report

    monkeypatch.setattr(verify, "check_verified", swapped_after_the_check)
    with pytest.raises(TritongenError, match=r"double/config.pbtxt changed after it was verified"):
        kubernetes_bundle_from_repository(repo, tmp_path / "out2", slo_p99_ms=SLO_MS)
    assert not (tmp_path / "out2").exists()
    config.write_text(legit)

    def moved_away_during_the_check(*args, **kwargs):  # a reviewer's variant: the check never sees the folder
        (repo / "double").rename(tmp_path / "away")
        try:
            return real(*args, **kwargs)
        finally:
            (tmp_path / "away").rename(repo / "double")
            config.write_text(legit.replace("kind: KIND_CPU", "kind: KIND_GPU"))

    (repo / "other").mkdir()  # so that the repository verifies without double
    shutil.copytree(work / "repo" / "double", repo / "other", dirs_exist_ok=True)
    (repo / "other" / "config.pbtxt").write_text(legit.replace('name: "double"', 'name: "other"'))
    vouch(repo / "other")
    monkeypatch.setattr(verify, "check_verified", moved_away_during_the_check)
    with pytest.raises(TritongenError, match=r"model folder double was not there when the repository was verified"):
        kubernetes_bundle_from_repository(repo, tmp_path / "out3", slo_p99_ms=SLO_MS, model="double")
    assert not (tmp_path / "out3").exists()


def test_unmeasured_defaults_are_marked_in_every_file_that_uses_them(work):
    b = kubernetes_bundle_from_repository(work / "repo", work / "unmeasured", slo_p99_ms=SLO_MS)
    assert not b.thresholds.measured and b.thresholds.target_in_flight == 8.0  # max_batch_size 8 x 1 instance
    assert check_bundle(b.out).ok
    for rel in b.files:
        text = (b.out / rel).read_text()
        if any(k in text for k in ("averageValue", "threshold", "expr", "Replicas", "startupProbe", "target")):
            assert "unmeasured" in text, rel


def test_plans_pin_nodes_to_their_compute_capability(work, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(work / "repo", repo)
    vouch(repo / "double", engines={"8.9": {"plan": "x"}})
    b = kubernetes_bundle_from_repository(repo, tmp_path / "out", gpus=1, model="double")
    pod = yaml.safe_load((b.out / "base" / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {e["key"]: e["values"] for e in term["matchExpressions"]} == {
        "nvidia.com/gpu.compute.major": ["8"],
        "nvidia.com/gpu.compute.minor": ["9"],
    }


def test_plans_of_models_pin_nodes_to_a_capability_every_loaded_version_has(work, tmp_path):
    """One model's plans for 8.0 and another's for 8.9: no node loads both (the affinity had been either); plans
    for 8.0 and 8.9 beside plans for 8.9: nodes with 8.9 only. A version Triton does not load does not count."""
    repo = tmp_path / "repo"
    shutil.copytree(work / "repo", repo)
    shutil.copytree(repo / "double", repo / "other")
    other = repo / "other" / "config.pbtxt"
    other.write_text(other.read_text().replace('name: "double"', 'name: "other"'))
    vouch(repo / "double", engines={"8.0": {"plan": "x"}})
    vouch(repo / "other", engines={"8.9": {"plan": "x"}})
    with pytest.raises(TritongenError) as err:
        kubernetes_bundle_from_repository(repo, tmp_path / "out", gpus=1, model="double")
    assert "no GPU can load every model" in err.value.problem and "8.0" in err.value.problem
    assert not (tmp_path / "out").exists()
    vouch(repo / "double", engines={"8.0": {"plan": "x"}, "8.9": {"plan": "y"}})
    b = kubernetes_bundle_from_repository(repo, tmp_path / "out", gpus=1, model="double")
    assert b.out.is_dir()
    pod = yaml.safe_load((b.out / "base" / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert [e["values"] for e in term["matchExpressions"]] == [["8"], ["9"]]
    # version 2 of 'other' (plans for 8.0 only) is what Triton loads (latest 1): 8.0 is common, 8.9 no longer
    shutil.copytree(repo / "other" / "1", repo / "other" / "2")
    from tritongen.manifest import file_hashes, manifest_path, new_manifest, write_manifest

    files = [f for f in (repo / "other" / "2").rglob("*") if f.is_file() and f != manifest_path(repo / "other", 2)]
    manifest = replace(new_manifest(2, file_hashes(repo / "other", files)), engines={"8.0": {"plan": "x"}})
    write_manifest(repo / "other", 2, manifest)
    b = kubernetes_bundle_from_repository(repo, tmp_path / "out2", gpus=1, model="double")
    pod = yaml.safe_load((b.out / "base" / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert [e["values"] for e in term["matchExpressions"]] == [["8"], ["0"]]


def test_plans_are_checked_against_the_release_of_the_image_the_bundle_names(work, tmp_path):
    """Plans built with TensorRT 10.8 (NGC 25.01): a Kubernetes bundle on 24.10's image was written (every pod then
    failed to load them), and any --ngc-version was written as an image tag; KServe's runtime image is of a
    release the cluster decides (not checked), and --ngc-version there names NGC's image of that release."""
    repo = tmp_path / "repo"
    shutil.copytree(work / "repo", repo)
    vouch(repo / "double", engines={"8.9": {"plan": "x", "tensorrt_version": "10.8.0.43"}})
    for target, release, words in (
        ("kubernetes", "24.10", "built with TensorRT 10.8.0.43"),
        ("kserve", "24.10", "built with TensorRT 10.8.0.43"),
        ("kubernetes", "banana", "NGC release 'banana' is not known"),
        ("kubernetes", "", "NGC release '' is not known"),
        ("kubernetes", None, "built with TensorRT 10.8.0.43"),  # None: the default release, 24.10
        ("kserve", None, "KServe 0.20 installs nvcr.io/nvidia/tritonserver:23.05-py3"),  # the runtime's image
    ):
        out = tmp_path / f"out-{target}-{release}"
        with pytest.raises(TritongenError) as err:
            kubernetes_bundle_from_repository(repo, out, target=target, gpus=1, ngc_release=release)
        assert words in f"{err.value.problem} {err.value.details}", (target, release, err.value)
        assert not out.exists()
    b = kubernetes_bundle_from_repository(repo, tmp_path / "k8s", gpus=1, ngc_release="25.01")
    (c,) = yaml.safe_load((b.out / "base" / "deployment.yaml").read_text())["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "nvcr.io/nvidia/tritonserver:25.01-py3"
    for release, image, written in (
        ("25.01", None, "nvcr.io/nvidia/tritonserver:25.01-py3"),
        (None, "registry.example.com/serving:1", "registry.example.com/serving:1"),
    ):
        b = kubernetes_bundle_from_repository(
            repo, tmp_path / f"kserve-{release}", target="kserve", gpus=1, ngc_release=release, image=image
        )
        isvc = yaml.safe_load((b.out / "overlays" / "prod" / "inferenceservice.yaml").read_text())
        assert isvc["spec"]["predictor"]["model"]["image"] == written
    # without plans, KServe's runtime image serves as it is (its release not named, nothing written over it)
    b = kubernetes_bundle_from_repository(work / "repo", tmp_path / "kserve-plain", target="kserve")
    isvc = yaml.safe_load((b.out / "overlays" / "prod" / "inferenceservice.yaml").read_text())
    assert "image" not in isvc["spec"]["predictor"]["model"]


@pytest.mark.parametrize("image", ["", " ", "a b", "x\n"])
def test_an_image_that_is_no_name_is_one_error(work, tmp_path, capsys, image):
    out = tmp_path / "out"
    code, err = _cli(["deploy", str(work / "repo"), "--to", "kubernetes", "--out", str(out), "--image", image], capsys)
    assert code == 1 and err.startswith("error: --image") and "is not an image name" in err and not out.exists()


@pytest.mark.parametrize("uri", ["as://account/container/repo", "/models/repo"])
def test_a_model_uri_kserve_cannot_read_is_refused_for_kserve_only(work, tmp_path, capsys, uri):
    out = tmp_path / "out"
    code, err = _cli(["deploy", str(work / "repo"), "--to", "kserve", "--out", str(out), "--model-uri", uri], capsys)
    assert code == 1 and "is not a storageUri KServe reads" in err and "pvc://" in err and not out.exists(), err
    b = kubernetes_bundle_from_repository(work / "repo", out, target="kubernetes", model_uri=uri)
    assert uri in (b.out / "base" / "deployment.yaml").read_text()


def test_the_pod_kserve_makes_is_scraped_and_holds_its_requests(work, tmp_path):
    """KServe makes the pod from its Triton runtime (no container port; limits 1 CPU, 2Gi) patched with the
    InferenceService: the PodMonitor's port must be declared (Prometheus' pod discovery finds no other), and a
    measured CPU request above the runtime's limit must come with a limit (the API server refuses the pod)."""
    from tritongen.deploy import kserve, monitoring
    from tritongen.deploy import kubernetes as k8s
    from tritongen.deploy.checks import kserve_pod, kserve_pod_problems
    from tritongen.deploy.thresholds import unmeasured_thresholds

    t = replace(unmeasured_thresholds("double", max_batch_size=8, instances=1), cpu_request_cores=2.5)
    q = monitoring.Queries(job="triton-double", model="double")

    def isvc(placement: k8s.Placement) -> dict:
        return kserve.inference_service(
            "triton-double",
            "ns",
            "s3://b/r",
            q,
            t,
            placement,
            prometheus_url="http://p:9090",
            min_replicas=1,
            max_replicas=2,
        )

    monitor = kserve.pod_monitor("triton-double")
    good = isvc(k8s.Placement(gpus=1))
    assert kserve_pod_problems(good, [monitor]) == []
    (c,) = kserve_pod(good)["spec"]["containers"]
    assert c["resources"]["requests"]["cpu"] == "2500m" and c["resources"]["limits"]["cpu"] == "5000m"  # 2x: bursts
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and c["args"][:2] == [
        "tritonserver",
        "--model-store=/mnt/models",
    ]
    assert {p["containerPort"] for p in c["ports"]} == {8080, 8002} and c["ports"][0]["containerPort"] == 8080
    assert c["lifecycle"]["preStop"]["sleep"]["seconds"] == k8s.PRESTOP_SLEEP_S  # drained as the Deployment's
    assert good["spec"]["predictor"]["terminationGracePeriodSeconds"] == k8s.grace_period_s(t)
    # the bundle as it was: no ports, requests alone (the runtime's limits stay)
    old = isvc(k8s.Placement(gpus=1))
    del old["spec"]["predictor"]["model"]["ports"]
    old["spec"]["predictor"]["model"]["resources"]["limits"] = {"nvidia.com/gpu": 1}
    problems = kserve_pod_problems(old, [monitor])
    assert any("requests cpu 2500m, above its limit 1" in p for p in problems), problems
    assert any("scrapes port metrics, which the pod KServe makes does not declare" in p for p in problems), problems
    # with the default request (1 core), the runtime's 1-CPU limit is kept, not lowered
    t1 = replace(t, cpu_request_cores=None)
    small = kserve.inference_service(
        "triton-double",
        "ns",
        "s3://b/r",
        q,
        t1,
        k8s.Placement(gpus=0),
        prometheus_url="http://p:9090",
        min_replicas=1,
        max_replicas=2,
    )
    (c,) = kserve_pod(small)["spec"]["containers"]
    assert c["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}  # the runtime's own, kept


def test_one_rule_asks_for_a_gpu_in_the_docker_and_the_cluster_bundles(work, tmp_path):
    """A Python-backend model with no instance group (Triton's KIND_AUTO) loads where no GPU is given (Triton makes
    CPU instances; whether model.py uses CUDA is its own business): the Docker bundle asked for no GPU while the
    Kubernetes bundle asked for one per replica."""
    from tritongen.deploy.docker import model_needs_gpu
    from tritongen.validate import config_from_text

    repo = tmp_path / "repo"
    shutil.copytree(work / "repo", repo)
    config = repo / "double" / "config.pbtxt"
    for i, (group, onnx, expected) in enumerate(
        (
            ("", False, False),
            ("instance_group [{ kind: KIND_AUTO }]", False, False),
            ("instance_group [{ kind: KIND_GPU }]", False, True),
            ("", True, True),
            ("instance_group [{ kind: KIND_CPU }]", True, False),
        )
    ):
        text = DOUBLE_CONFIG.replace("instance_group [{ kind: KIND_CPU count: 1 }]", group)
        if onnx:
            text = text.replace('backend: "python"', 'backend: "onnxruntime"')
        assert model_needs_gpu(config_from_text(text)) is expected, (group, onnx)
        if onnx:
            continue
        config.write_text(text)
        vouch(repo / "double")
        b = kubernetes_bundle_from_repository(repo, tmp_path / f"out-{i}", slo_p99_ms=SLO_MS)
        (c,) = yaml.safe_load((b.out / "base" / "deployment.yaml").read_text())["spec"]["template"]["spec"][
            "containers"
        ]
        assert ("nvidia.com/gpu" in c["resources"].get("limits", {})) is expected, group


def test_checks_catch_what_they_claim_to(measured, tmp_path):
    objs = rendered_overlay(measured.out / "overlays" / "prod")
    monitor = next(o for o in objs if o["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["scrapeEvery"] = "15s"  # no such field
    assert any("scrapeEvery" in p for p in custom_resource_problems(monitor))
    deployment = next(o for o in objs if o["kind"] == "Deployment")
    deployment["spec"]["replicas"] = "two"
    assert core_problems([deployment])
    # promtool: a rule that also fires under the nominal series fails its unit test
    copy = tmp_path / "bundle"
    shutil.copytree(measured.out, copy)
    rules = copy / "monitoring" / "rules.yaml"
    rules.write_text(rules.read_text().replace(f"> {measured.thresholds.above_knee_in_flight:g}", "> 0.001"))
    problems = check_bundle(copy).problems
    assert len(problems) == 1 and "TritonAboveKnee nominal" in problems[0]


# ------------------------------------------------------------------------------------------ bad input


def _cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize("case", ["unreachable slo", "other model", "invalid repository", "partial run"])
def test_bad_input_one_error_nothing_written(work, tmp_path, capsys, case):
    repo, results, slo = work / "repo", work / "results.json", "95"
    if case == "partial run":  # a perf run stopped with Ctrl-C: its last level was cut short
        results = tmp_path / "partial.json"
        results.write_text(json_from_run(replace(RUN, partial=True, partial_reason="interrupted")))
        expected = "the perf results of double are of a partial run (interrupted)"
    elif case == "unreachable slo":
        slo = "50"  # below the 70 ms p99 measured at concurrency 1
        expected = "below the p99 measured at the lowest load"
    elif case == "other model":
        other = PerfRun("resnet", "u", "grpc", "builtin", RUN.points)
        results = tmp_path / "other.json"
        results.write_text(json_from_run(other))
        expected = "model 'resnet' is not in model repository"
    else:
        repo = tmp_path / "bad"
        write_model(repo, "double", DOUBLE_CONFIG.replace("max_batch_size: 8", "max_batch_size: -3"), DOUBLE_MODEL)
        expected = "problem"
    out = tmp_path / "out"
    code, err = _cli(
        [
            "deploy",
            str(repo),
            "--to",
            "kubernetes",
            "--out",
            str(out),
            "--from-perf",
            str(results),
            "--slo-p99-ms",
            slo,
        ],
        capsys,
    )
    assert code == 1 and err.startswith("error: ") and expected in err.splitlines()[0] and "Traceback" not in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.mark.parametrize(
    "model, words",
    [
        (
            "doubel",
            (
                "model 'doubel' is not in model repository",
                "did you mean 'double'? name one the repository holds with --model",
            ),
        ),
        ("resnet", ("model 'resnet' is not in model repository", ": name one the repository holds with --model")),
    ],
)
def test_a_model_not_in_the_repository_gets_the_fix_for_model(work, tmp_path, capsys, model, words):
    """--model that names no model of the repository is told to name one it holds (not to pass perf results)."""
    out = tmp_path / "out"
    code, err = _cli(["deploy", str(work / "repo"), "--to", "kubernetes", "--out", str(out), "--model", model], capsys)
    line = err.splitlines()[0]
    assert code == 1 and line.startswith("error: ") and "Traceback" not in err
    assert all(w in line for w in words) and "perf results" not in line, line
    assert not out.exists()


def test_existing_output_needs_force(measured, work):
    with pytest.raises(TritongenError, match="already exists"):
        kubernetes_bundle_from_repository(
            work / "repo", measured.out, perf_results=work / "results.json", slo_p99_ms=SLO_MS
        )


# ------------------------------------------------------------------------------------------ live


def test_steady_window_is_read_from_the_scrapes_not_the_clock():
    from tritongen.deploy.live import _steady_at, _Timing

    t = _Timing(interval_s=1.0, window_s=10.0, for_s=3.0, ramp_s=1.0, min_scrapes=5)
    idle = [(float(s), 100.0) for s in range(0, 6)]
    loaded = [(float(s), 100.0 + 20 * (s - 5)) for s in range(6, 30)]  # requests answered from t=5 on
    # the first scrape that saw the load is t=6; the window and the alert's ``for`` behind the evaluation time
    # lie after it (6 + 1 + 3 + 10 = 20), and the counter still rose at the next scrape
    assert _steady_at(idle + loaded, 100.0, t) == (6.0, 20.0, 10)
    # the load stopped at t=20: 20 is not inside it any more, and nothing later is
    stopped = [(ts, min(v, 100.0 + 20 * 15)) for ts, v in idle + loaded]
    assert _steady_at(stopped, 100.0, t) is None
    # missed scrapes: a window holding fewer than 5 successful ones is not used; the next that holds 5 is
    sparse = [(ts, v) for ts, v in idle + loaded if ts < 16 or ts >= 24]
    assert _steady_at(sparse, 100.0, t) == (6.0, 28.0, 5)  # (18, 28] holds 24..28
    # before any load, nothing
    assert _steady_at(idle, 100.0, t) is None


# The live test's model: one instance, no batcher, 50 ms per request. A closed loop of c clients then waits
# c x 50 ms for every request (each waits for the c - 1 ahead of it, first come first served), whatever the
# clients' timing: ~200 ms at concurrency 4, ~400 ms at 8, >= 800 ms at 16 (sixteen requests cannot pass faster).
# A 600 ms objective puts the knee at 8, with 200 ms of room below it for a busy machine's overhead (which only
# adds latency) and 200 ms above it that no overhead removes. The HPA's metric, requests in flight, is ~c at any c.
# (A batching model's tail is not bounded so: a client late for a batch waits a whole execution more.)
LIVE_CONFIG = SLEEPY_UNBATCHED_CONFIG
LIVE_MODEL = sleepy_model(0.05)
LIVE_SLO_MS = 600.0


@pytest.mark.server
@pytest.mark.slow
def test_live_prometheus_scrapes_triton_under_perf(tmp_path, server_install):
    if shutil.which("prometheus") is None:
        pytest.skip("no prometheus binary: apt-get install prometheus")
    from tritongen.deploy.live import autoscale_proof, proof_table
    from tritongen.perf import PerfSpec, perf_from_spec
    from tritongen.server import ServeSpec, server_from_repository

    repo = tmp_path / "repo"
    vouch(write_model(repo, "sleepy", LIVE_CONFIG, LIVE_MODEL))
    inputs = tmp_path / "x.npz"
    np.savez(inputs, X=np.ones((8, 4), np.float32))
    spec = ServeSpec(repo=repo, extra_args=("--metrics-config=summary_latencies=true", "--metrics-interval-ms=500"))
    with server_from_repository(spec) as server:

        def perf(levels, load_s):
            timing = (
                {"duration_s": 3.0, "warmup_s": 0.5, "max_windows": 4, "stability_pct": 25.0}
                if load_s is None  # the measurement a user runs
                else {"duration_s": load_s - 1.0, "warmup_s": 1.0, "max_windows": 3, "stability_pct": 100.0}
            )
            return perf_from_spec(
                PerfSpec(
                    model="sleepy",
                    url=server.grpc_url,
                    repo=repo,
                    metrics_url=server.metrics_url,
                    input_data=inputs,
                    concurrency=levels,
                    **timing,
                )
            )

        proof = autoscale_proof(
            server,
            repo,
            tmp_path / "proof",
            perf=perf,
            measure_levels=(1, 2, 4, 8, 16),
            slo_p99_ms=LIVE_SLO_MS,
            peak_rps=100,
        )
    table = proof_table(proof)
    print(table)
    t = proof.bundle.thresholds
    # the knee is the last level of the unbroken run within the objective: 8 by design (4 where a busy machine's
    # overhead took concurrency 8 over it), never 16
    unbroken = [lv.load for lv in itertools.takewhile(lambda lv: lv.meets_slo, t.levels)]
    assert t.knee_load == unbroken[-1] and t.knee_load in (4, 8), table
    half, knee, double = proof.levels
    # each level was read where its load had filled the rate window and the alert's ``for``
    for lv in proof.levels:
        assert lv.window.at_s - lv.window.load_seen_s >= 10 + 1, table
        assert lv.window.scrapes >= 5, table
    # the HPA metric follows the offered load: up to c requests in flight at concurrency c (a closed loop keeps c in
    # flight at the server but for the client's own time per request: at half the knee, where requests are short,
    # up to 47% of it measured on a machine with 7x more runnable processes than cores; at twice the knee < 2%)
    for lv in proof.levels:
        assert lv.in_flight < 1.2 * lv.load, table
    assert double.in_flight > 0.6 * double.load, table
    assert half.in_flight < knee.in_flight < double.in_flight, table
    # the overload alert: silent at half the knee; at twice the knee it follows the live figure, firing where the
    # requests in flight read clearly above its threshold (1.5x the knee's: ~16 against ~12 here) and silent where
    # they read clearly below it (a machine busy enough to stall the clients kept 11.2 of 16 in flight once)
    assert half.alerts["TritonAboveKnee"] == "inactive", table
    if double.in_flight > 1.1 * t.above_knee_in_flight:
        assert double.alerts["TritonAboveKnee"] == "firing", table
    elif double.in_flight < 0.9 * t.above_knee_in_flight:
        assert double.alerts["TritonAboveKnee"] == "inactive", table
    assert double.alerts["TritonLatencyObjective"] != "inactive", table
    # the HPA rule on the live metric: one replica is enough at half the knee, more are asked for at twice it
    assert half.desired_replicas == 1 and knee.desired_replicas in (1, 2) and 2 <= double.desired_replicas <= 3, table
    # every query of the bundle returns data over the driven period, as a dashboard asks for it; all but alert
    # conditions (empty while not firing) and GPU ones (no GPU here)
    empty = [r.where for r in proof.queries if r.series == 0 and not r.needs_gpu and " expr" not in r.where]
    assert not empty, table


# ------------------------------------------------------------------------------------------ versions and the canary


def test_canary_rules_compare_versions_and_promtool_tests_them(measured, tmp_path):
    from tritongen.deploy.monitoring import CANARY_P99_RATIO

    groups = yaml.safe_load((measured.out / "monitoring" / "rules.yaml").read_text())["groups"]
    alerts = {r["alert"]: r for r in groups[0]["rules"]}
    records = {r["record"]: r for r in groups[1]["rules"]}
    assert {"TritonCanaryFailureRatio", "TritonCanaryLatency"} <= set(alerts)
    assert "by (namespace, version)" in alerts["TritonCanaryFailureRatio"]["expr"]
    assert alerts["TritonCanaryLatency"]["expr"].endswith(f"* {CANARY_P99_RATIO:g})")
    assert {"tritongen:version_p99_ms", "tritongen:version_failure_ratio", "tritongen:version_latency_ms"} <= set(
        records
    )
    assert all(r["labels"] == {"model": "double"} for r in records.values())
    tests = yaml.safe_load((measured.out / "monitoring" / "rules-test.yaml").read_text())["tests"]
    names = {t["name"] for t in tests}
    assert {
        "TritonCanaryFailureRatio overload",
        "TritonCanaryFailureRatio nominal",
        "TritonCanaryLatency overload",
    } <= names
    fired = next(t for t in tests if t["name"] == "TritonCanaryFailureRatio overload")["alert_rule_test"][0]
    assert fired["exp_alerts"][0]["exp_labels"]["version"] == "2"  # the canary, not the stable version
    dashboard = json.loads((measured.out / "monitoring" / "grafana-dashboard.json").read_text())
    titles = [p["title"] for p in dashboard["panels"]]
    assert "Versions compared: p99 and mean latency (ms)" in titles and "Versions compared: failure ratio" in titles
    # promtool runs those unit tests: a canary margin so wide it never fires fails exactly the overload case
    copy = tmp_path / "bundle"
    shutil.copytree(measured.out, copy)
    rules = copy / "monitoring" / "rules.yaml"
    margin = f"+ {measured.thresholds.failure_ratio_alert:g})"
    assert rules.read_text().count(margin) == 1
    rules.write_text(rules.read_text().replace(margin, "+ 0.9)"))
    problems = check_bundle(copy).problems
    assert len(problems) == 1 and "TritonCanaryFailureRatio overload" in problems[0], problems


def test_kserve_canary_from_the_command_line(work, tmp_path, capsys):
    out = tmp_path / "kserve"
    main_args = [
        "deploy",
        str(work / "repo"),
        "--to",
        "kserve",
        "--out",
        str(out),
        "--from-perf",
        str(work / "results.json"),
        "--slo-p99-ms",
        "95",
        "--model-uri",
        "s3://models/repo",
    ]
    main([*main_args, "--canary-percent", "10"])
    assert "wrote" in capsys.readouterr().out
    check = check_bundle(out)  # the InferenceService against KServe's CRD schema, the rules through promtool
    assert check.ok, "\n".join(check.problems)
    isvc = next(o for o in rendered_overlay(out / "overlays" / "prod") if o["kind"] == "InferenceService")
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert "`canaryTrafficPercent: 10`" in (out / "README.md").read_text()
    rule = next(o for o in rendered_overlay(out / "overlays" / "prod") if o["kind"] == "PrometheusRule")
    assert [g["name"] for g in rule["spec"]["groups"]] == [
        "tritongen-triton-double",
        "tritongen-triton-double-versions",
    ]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--to", "kserve", "--canary-percent", "150"], "canary traffic 150% is not a percentage"),
        (["--to", "kubernetes", "--canary-percent", "10"], "deploy option --canary-percent is for kserve bundles"),
    ],
)
def test_bad_canary_one_error_nothing_written(work, tmp_path, capsys, args, words):
    out = tmp_path / "out"
    code, err = _cli(["deploy", str(work / "repo"), *args, "--out", str(out), "--slo-p99-ms", "95"], capsys)
    assert code == 1 and err.startswith("error: ") and words in err.splitlines()[0] and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["--to", "docker", "--from-perf", "perf1"],
            "error: deploy option --from-perf is for kserve and kubernetes bundles, not docker: leave it out, or "
            "deploy to kserve or kubernetes",
        ),
        (
            ["--to", "docker", "--canary-percent", "5"],
            "error: deploy option --canary-percent is for kserve bundles, not docker: leave it out, deploy to kserve, "
            "or compare versions on one server (tritongen perf MODEL --version-split 1:90,2:10)",
        ),
        (
            ["--to", "kubernetes", "--canary-percent", "5"],
            "error: deploy option --canary-percent is for kserve bundles, not kubernetes: leave it out, deploy to "
            "kserve, or compare versions on one server (tritongen perf MODEL --version-split 1:90,2:10)",
        ),
    ],
)
def test_another_targets_option_is_named_as_typed_and_its_targets_truly(work, tmp_path, capsys, args, line):
    """The flag the user typed (--from-perf, not the keyword perf_results), and only the targets that take it (a
    canary is KServe's alone); from Python the same error names the keyword."""
    import tritongen

    out = tmp_path / "out"
    code, printed, err = run_cli(["deploy", str(work / "repo"), *args, "--out", str(out)], capsys)
    assert (code, err, printed) == (1, line + "\n", ""), err
    assert not out.exists()
    with pytest.raises(TritongenError, match=r"^deploy option perf_results is for kserve and kubernetes bundles, not"):
        tritongen.deploy(work / "repo", to="docker", out=out, perf_results=work / "results.json")
    with pytest.raises(TritongenError, match=r"^deploy option canary_traffic_percent is for kserve bundles, not ku"):
        tritongen.deploy(work / "repo", to="kubernetes", out=out, canary_traffic_percent=5)
    assert not out.exists()


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["--peak-rps", "0"],
            "error: --peak-rps 0 is not a request rate above 0 and at most 1e9 per second: give the peak request rate "
            "in requests per second",
        ),
        (
            ["--peak-rps", "2e9", "--from-perf", "results.json"],
            "error: --peak-rps 2e+09 is not a request rate above 0 and at most 1e9 per second: give the peak request "
            "rate in requests per second",
        ),
        (
            ["--slo-p99-ms", "0"],
            "error: --slo-p99-ms 0 is not a latency from 0.01 ms (10 us) to 3600000 ms (an hour): give the p99 "
            "latency objective in milliseconds",
        ),
        (  # found by an attacker: alert thresholds of 5e-298 were written
            ["--slo-p99-ms", "1e-300"],
            "error: --slo-p99-ms 1e-300 is not a latency from 0.01 ms (10 us) to 3600000 ms (an hour): give the p99 "
            "latency objective in milliseconds",
        ),
        (
            ["--peak-rps", "100000"],
            "error: --peak-rps 100000 sizes the maximum replica count by the capacity per replica a perf run "
            "measures, and no --from-perf results are given (the unmeasured default would be kept): measure the model "
            "on the target hardware (tritongen perf MODEL --concurrency 1,2,4,8,16,32 --report perf/) and pass "
            "--from-perf perf/ and --slo-p99-ms with it, or leave out --peak-rps",
        ),
    ],
)
def test_peak_rate_and_objective_out_of_range_or_unmeasured_are_one_true_error(work, tmp_path, capsys, args, line):
    """The accepted range as it is (0 is refused: above 0), and a peak rate without measurements refused: it
    would size nothing (the unmeasured replica bounds stay) while thresholds.json recorded it."""
    out = tmp_path / "out"
    args = [a.replace("results.json", str(work / "results.json")) for a in args]
    code, printed, err = run_cli(["deploy", str(work / "repo"), "--to", "kubernetes", *args, "--out", str(out)], capsys)
    assert (code, err, printed) == (1, line + "\n", ""), err
    assert not out.exists() and not list(tmp_path.iterdir())


CANARY_CONFIG = """\
name: "ab"
backend: "python"
max_batch_size: 8
input [{ name: "X" data_type: TYPE_FP32 dims: [ 4 ] }]
output [{ name: "Y" data_type: TYPE_FP32 dims: [ 4 ] }]
version_policy: { all {} }
instance_group [{ kind: KIND_CPU count: 1 }]
"""
# version 1 answers at once; version 2 (the canary) takes 100 ms and fails every 4th request
CANARY_MODEL = """\
import time

import triton_python_backend_utils as pb_utils

CANARY = {canary}


class TritonPythonModel:
    def initialize(self, args):
        self.seen = 0

    def execute(self, requests):  # one request per call (no dynamic batching)
        self.seen += 1
        if CANARY:
            time.sleep(0.1)
            if self.seen % 4 == 0:  # an exception: Triton counts a failure (an error response counts as a success)
                raise pb_utils.TritonModelException("canary failure")
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
                for r in requests]
"""


@pytest.mark.server
@pytest.mark.slow
def test_live_prometheus_compares_a_canary_version_with_the_stable_one(tmp_path, server_install):
    """A real Triton serving two versions, driven by perf --version-split 1:75,2:25 while a real Prometheus scrapes it
    with the bundle's rules: the per-version queries see both versions in proportion, and the canary comparisons
    single out version 2 (slower, failing a quarter of its requests) and never version 1."""
    if shutil.which("prometheus") is None:
        pytest.skip("no prometheus binary: apt-get install prometheus")
    import time

    from tests.conftest import free_ports
    from tritongen.deploy.monitoring import CANARY_P99_RATIO, Queries, all_queries
    from tritongen.deploy.prometheus import prometheus_scraping
    from tritongen.perf import PerfSpec, perf_from_spec
    from tritongen.server import ServeSpec, server_from_repository

    repo = tmp_path / "repo"
    for version in (1, 2):
        (repo / "ab" / str(version)).mkdir(parents=True)
        (repo / "ab" / str(version) / "model.py").write_text(CANARY_MODEL.format(canary=version == 2))
    (repo / "ab" / "config.pbtxt").write_text(CANARY_CONFIG)
    inputs = tmp_path / "x.npz"
    np.savez(inputs, X=np.ones((4, 4), np.float32))
    bundle = kubernetes_bundle_from_repository(
        repo, tmp_path / "bundle", slo_p99_ms=SLO_MS, rate_window="10s", allow_unverified=("ab",)
    )
    t = bundle.thresholds
    q = Queries(job=bundle.app, model="ab", window="10s")
    pod = f"{bundle.app}-0"
    http, grpc, metrics = free_ports(3)
    spec = ServeSpec(
        repo=repo,
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        extra_args=("--metrics-config=summary_latencies=true", "--metrics-interval-ms=500"),
    )
    with (
        server_from_repository(spec) as server,
        prometheus_scraping(
            server.metrics_url,
            tmp_path / "prometheus",
            job=bundle.app,
            namespace="tritongen",
            pod=pod,
            rule_files=(bundle.out / "monitoring" / "rules.yaml",),
        ) as prom,
    ):
        run = perf_from_spec(
            PerfSpec(
                model="ab",
                url=server.grpc_url,
                repo=repo,
                input_data=inputs,
                concurrency=(4,),
                duration_s=6.0,
                warmup_s=1.0,
                max_windows=3,
                stability_pct=100.0,
                version_split="1:75,2:25",
            )
        )
        time.sleep(1.5)  # one more scrape and rule evaluation
        at_s = time.time()

        def by_version(expr: str) -> dict[str, float]:
            return {s.labels["version"]: s.value for s in prom.query(expr, at_s)}

        rps = by_version(q.versions_rps())
        failures = by_version('tritongen:version_failure_ratio{model="ab"}')
        p99 = by_version(q.versions_p99_ms())
        canary_failing = by_version(q.canary_failure_ratio(t.failure_ratio_alert))
        canary_slow = by_version(q.canary_p99(CANARY_P99_RATIO))
        empty = [
            where
            for where, expr, gpu in all_queries(q, t, ("tritongen", [pod]))
            if "ersion" in where and not gpu and not prom.query(expr, at_s)
        ]
    point = run.points[0]
    print(
        f"client: v1 {point.versions['1'].ok} ok, v2 {point.versions['2'].ok} ok / {point.versions['2'].error_count}"
        f" failed; Prometheus: rps {rps}, failure ratio {failures}, p99 ms {p99}"
    )
    assert point.versions["1"].error_count == 0 and point.versions["2"].error_count > 0
    assert set(rps) == {"1", "2"} and rps["1"] > rps["2"] > 0
    assert failures["1"] == 0 and 0.15 < failures["2"] < 0.35  # every 4th request of version 2 fails
    assert p99["2"] >= 100 > p99["1"]
    assert set(canary_failing) == {"2"} and set(canary_slow) == {"2"}
    assert not empty, empty  # every per-version record and query of the bundle returns data


def test_figures_past_any_fleet_are_refused_and_the_grace_period_is_bounded():
    from dataclasses import replace

    from tritongen.deploy.thresholds import MAX_EXIT_TIMEOUT_S

    with pytest.raises(TritongenError, match="replicas, over 10000"):
        thresholds_from_run(RUN, slo_p99_ms=SLO_MS, peak_rps=1e9)  # 110 req/s a replica: 9 million replicas
    slow = replace(RUN.points[3], latency=replace(RUN.points[3].latency, max_ms=1e12))  # the knee's slowest request
    t = thresholds_from_run(replace(RUN, points=RUN.points[:3] + (slow,) + RUN.points[4:]), slo_p99_ms=SLO_MS)
    assert t.exit_timeout_s == MAX_EXIT_TIMEOUT_S
    tiny = replace(RUN, points=tuple(replace(p, throughput_rps=1e-300) for p in RUN.points))
    with pytest.raises(TritongenError, match="measured no throughput"):
        thresholds_from_run(tiny, slo_p99_ms=SLO_MS)


@pytest.mark.parametrize("option, value", [("--peak-rps", "inf"), ("--peak-rps", "nan"), ("--slo-p99-ms", "inf")])
def test_options_that_are_not_finite_are_one_error(work, tmp_path, capsys, option, value):
    args = ["deploy", str(work / "repo"), "--to", "kubernetes", "--out", str(tmp_path / "out")]
    args += ["--from-perf", str(work / "results.json"), "--slo-p99-ms", "95", option, value]
    code, err = _cli(args, capsys)
    assert code == 1 and err.startswith(f"error: {option} ") and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_a_knee_whose_mean_latency_is_nan_has_no_target():
    """Without server statistics the target is throughput x mean latency: a NaN mean passed `round(t, 3) <= 0` and
    reached int() in the HPA's quantity. (The results reader refuses such a file; this is the API's own check.)"""
    from dataclasses import replace

    knee = RUN.points[3]
    blind = replace(knee, latency=replace(knee.latency, mean_ms=float("nan")), server=ServerBreakdown())
    with pytest.raises(TritongenError, match="measured no throughput \\(or no latency\\)"):
        thresholds_from_run(replace(RUN, points=RUN.points[:3] + (blind,) + RUN.points[4:]), slo_p99_ms=SLO_MS)


@pytest.mark.parametrize("load_s", ["Infinity", "NaN", "1e300", "-5", "0", "86401", "true", '"90"'])
def test_a_tune_record_whose_load_time_is_not_a_load_time_is_one_error(work, tmp_path, capsys, load_s):
    repo = tmp_path / "repo"
    shutil.copytree(work / "repo", repo)
    record = repo / "double" / "1" / "tritongen" / "tune.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(f'{{"winner": {{"load_s": {load_s}}}}}')
    vouch(repo / "double")  # tune rehashes what it writes
    out = tmp_path / "out"
    code, err = _cli(["deploy", str(repo), "--to", "kubernetes", "--out", str(out)], capsys)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {record} holds a winner load_s of ") and "at most 86400" in err, err
    assert f"remove {record}" in err and not out.exists()


def test_a_tune_records_load_time_sets_the_startup_probe(work, tmp_path):
    from tritongen.deploy.thresholds import load_time_from_tune_record

    repo = tmp_path / "repo"
    shutil.copytree(work / "repo", repo)
    assert load_time_from_tune_record(repo / "double") is None
    record = repo / "double" / "1" / "tritongen" / "tune.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text('{"winner": {"load_s": 86400}}')  # a day: the most a record may say
    assert load_time_from_tune_record(repo / "double") == 86400.0


def test_a_run_whose_server_statistics_were_not_read_says_so_in_perf_and_in_deploy():
    """A server stopped during an HTTP run kept answering its open connections, but not its statistics API: the
    table showed queue 0, infer 0, batch 0.00 and deploy took 0 us of compute for the queue alert, silently."""
    from tritongen.perf.results import table_from_run

    blind = replace(RUN, points=tuple(replace(p, server=ServerBreakdown()) for p in RUN.points))
    table = table_from_run(blind)
    row = next(line for line in table.splitlines() if line.strip().startswith("8c"))
    assert row.split()[8:11] == ["-", "-", "-"], row
    assert "the server's statistics could not be read at concurrency 1, 2, 4, 8, 16 (queue us" in table
    assert "the model's versions changed during the level (a rollout or rollback" in table
    assert "statistics could not be read" not in table_from_run(RUN)
    cautions = thresholds_from_run(blind, slo_p99_ms=SLO_MS).cautions
    assert any(c.startswith("the server's statistics were not read at the knee level, concurrency 8") for c in cautions)
    assert not any("statistics" in c for c in thresholds_from_run(RUN, slo_p99_ms=SLO_MS).cautions)


def test_the_command_to_measure_again_names_the_runs_server_and_repository():
    from tritongen.deploy.thresholds import config_changed_caution
    from tritongen.served_settings import ServedSettings

    was, now = ServedSettings(8, 1, False), ServedSettings(8, 2, False)
    http = replace(RUN, url="127.0.0.1:46000", protocol="http", served=was)
    caution = config_changed_caution(now, http, Path("my repo"))
    assert "--repo 'my repo' --url 127.0.0.1:46000 --protocol http --report perf-double/ --force" in caution
    assert "--repo " not in config_changed_caution(now, replace(RUN, served=was), Path("model_repository"))
    assert config_changed_caution(was, replace(RUN, served=was)) is None


def test_a_model_the_repository_does_not_hold_is_named_as_such_before_the_perf_results_are_compared(
    work, tmp_path, capsys
):
    results = tmp_path / "results.json"
    results.write_text(json_from_run(RUN))
    argv = ["deploy", str(work / "repo"), "--to", "kubernetes", "--from-perf", str(results), "--slo-p99-ms", "95"]
    code, _, err = run_cli([*argv, "--image", "r/x:1", "--out", str(tmp_path / "k8s"), "--model", "doubel"], capsys)
    assert code == 1 and err.startswith(f"error: model 'doubel' is not in model repository {work / 'repo'}"), err
    assert "did you mean 'double'" in err


def test_every_measure_again_command_names_the_runs_server_and_recorded_repository():
    """'measure higher loads (tritongen perf tiny --concurrency 8,16,32,64 ...)' dropped the run's --url and --repo:
    run as printed, it found no server."""
    run = replace(RUN, url="127.0.0.1:18601", settings={**RUN.settings, "repo": "my repo"})
    cautions = thresholds_from_run(run, slo_p99_ms=10_000).cautions  # every level met it: measure higher loads
    higher = next(c for c in cautions if "measure higher loads" in c)
    assert "--repo 'my repo' --url 127.0.0.1:18601 --report perf-double/ --force" in higher
    assert "--url" not in next(c for c in thresholds_from_run(RUN, slo_p99_ms=10_000).cautions if "higher" in c)


def test_the_load_time_a_bundle_takes_from_tune_json_is_the_verified_record(tmp_path):
    """An attack session: a tune.json added (and listed in a manifest) set the startup probe to 2166 failures; and
    it was read again after verify, so a record swapped in after the check set it unchecked. Read once, held to
    the digest verify found; one verify did not list is not used."""
    import hashlib

    from tritongen.deploy.thresholds import load_time_from_tune_record

    model_dir = tmp_path / "m"
    record = model_dir / "1" / "tritongen" / "tune.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"winner": {"load_s": 2.5}}))
    digest = hashlib.sha256(record.read_bytes()).hexdigest()
    assert load_time_from_tune_record(model_dir) == 2.5  # no verify report: as read
    assert load_time_from_tune_record(model_dir, {"m/1/tritongen/tune.json": digest}) == 2.5
    assert load_time_from_tune_record(model_dir, {}) is None  # not verified: not used
    record.write_text(json.dumps({"winner": {"load_s": 3600}}))  # swapped after the check
    with pytest.raises(TritongenError, match=r"tune.json changed after it was verified"):
        load_time_from_tune_record(model_dir, {"m/1/tritongen/tune.json": digest})


def test_tune_records_are_read_from_version_folders_only_the_newest_first(tmp_path):
    """A glob of ``*/tritongen/tune.json`` read ``01/`` and ``9x/`` (folders Triton never loads) as versions, and
    ``9x`` sorted as the newest."""
    from tritongen.deploy.thresholds import load_time_from_tune_record

    model_dir = tmp_path / "m"
    for folder, load_s in (("1", 1.5), ("2", 2.5), ("01", 7.0), ("9x", 9.0), ("10", None)):
        record = model_dir / folder / "tritongen" / "tune.json"
        record.parent.mkdir(parents=True)
        if load_s is not None:
            record.write_text(json.dumps({"winner": {"load_s": load_s}}))
    assert load_time_from_tune_record(model_dir) == 2.5  # version 2's: 10 holds none, 9x and 01 are no versions


@pytest.mark.parametrize("target", ["kubernetes", "docker"])
def test_deploy_checks_the_signature_first_where_a_key_is_given(work, tmp_path, capsys, target):
    """deploy took no --public-key (verify, serve, rollout and tune do): a writer who rewrote a manifest with a
    crafted tune.json or config got thresholds of their own into the bundle, signature or not."""
    from tests.keys import write_key_pair
    from tritongen.signing import sign_repository

    repo = tmp_path / "repo"
    shutil.copytree(work / "repo", repo)
    private, public = write_key_pair(tmp_path)
    sign_repository(repo, private)
    args = ["deploy", str(repo), "--to", target, "--public-key", str(public)]
    code, out, err = run_cli([*args, "--out", str(tmp_path / "ok")], capsys)
    assert code == 0, err
    config = repo / "double" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 8", "max_batch_size: 64"))
    code, out, err = run_cli([*args, "--out", str(tmp_path / "changed")], capsys)
    assert code == 1 and "double/config.pbtxt" in err and "sign" in err, err
    assert not (tmp_path / "changed").exists()
    code, out, err = run_cli(
        ["deploy", str(repo), "--to", target, "--out", str(tmp_path / "x"), "--signature", "s"], capsys
    )
    assert code == 1 and "--signature without --public-key checks nothing" in err


@pytest.mark.parametrize(
    "uri",
    [
        "http://host/repo",
        "pvc://",
        "pvc://Bad_Claim/x",
        "relative/repo",
        "s3:/bucket",
        "s3://",  # no bucket
        "gs:///path",
        "s3:// b/r",
        "pvc://claim/../x",  # a subPath with .. (the API server refuses it)
        "/models/./repo",
    ],
)
def test_a_model_uri_neither_triton_nor_a_pod_reads_is_one_error(work, tmp_path, capsys, uri):
    out = tmp_path / "out"
    code, err = _cli(
        ["deploy", str(work / "repo"), "--to", "kubernetes", "--out", str(out), "--model-uri", uri], capsys
    )
    assert code == 1 and f"model repository location '{uri}' is not one Triton or a pod can read" in err, err
    assert "pvc://CLAIM[/path]" in err and not out.exists()


def test_quantities_are_read_as_kubernetes_writes_them():
    from tritongen.deploy.checks import _quantity_value

    cases = {"1": 1, "2500m": 2.5, "2Gi": 2**31, "1e3": 1000, ".5": 0.5, "1Ei": 2.0**60, "3P": 3e15, "+2": 2}
    for text, value in cases.items():
        assert _quantity_value(text) == pytest.approx(value), text
    for text in ("x", "1.5.5", "2GB", ""):
        assert _quantity_value(text) is None, text


def test_a_dollar_in_the_model_path_reaches_triton_as_written():
    """Found by an attacker: the kubelet expands $(NAME) in container args, so --model-uri
    's3://bucket/models$(LD_PRELOAD)' named another folder in the pod; $$ is the kubelet's escape for one $."""
    from tritongen.deploy.kubernetes import triton_args
    from tritongen.deploy.thresholds import unmeasured_thresholds

    args = triton_args("s3://bucket/models$(LD_PRELOAD)", unmeasured_thresholds("m", max_batch_size=8, instances=1))
    assert "--model-repository=s3://bucket/models$$(LD_PRELOAD)" in args
    assert "--model-repository=/models" in triton_args(
        "/models", unmeasured_thresholds("m", max_batch_size=8, instances=1)
    )


@pytest.mark.parametrize("target", ["kubernetes", "docker"])
def test_a_config_and_manifest_rewritten_after_the_signature_check_are_not_deployed(
    work, tmp_path, capsys, monkeypatch, target
):
    """Found by an attacker: the signature was checked, then the manifests on a second read: a config.pbtxt and its
    manifest rewritten between the two gave a bundle the rewritten config's thresholds (max_batch_size 4096)."""
    import hashlib

    from tests.keys import write_key_pair
    from tritongen import signing
    from tritongen.signing import sign_repository

    repo = tmp_path / "repo"
    shutil.copytree(work / "repo", repo)
    private, public = write_key_pair(tmp_path)
    sign_repository(repo, private)
    real = signing.check_signature

    def then_rewritten(*args, **kwargs):
        found = real(*args, **kwargs)
        config = repo / "double" / "config.pbtxt"
        text = config.read_text().replace("max_batch_size: 8", "max_batch_size: 4096")
        config.write_text(text)
        manifest = repo / "double" / "1" / "tritongen" / "manifest.json"
        data = json.loads(manifest.read_text())
        data["files"]["config.pbtxt"] = hashlib.sha256(text.encode()).hexdigest()
        manifest.write_text(json.dumps(data))
        return found

    monkeypatch.setattr(signing, "check_signature", then_rewritten)
    args = ["deploy", str(repo), "--to", target, "--public-key", str(public), "--out", str(tmp_path / "out")]
    code, out, err = run_cli(args, capsys)
    assert code == 1 and "changed after the repository's signature was checked" in err, err
    assert not (tmp_path / "out").exists()


def test_a_kserve_host_name_longer_than_a_dns_label_is_refused(work, tmp_path, capsys):
    """KServe's RawDeployment names the predictor's host <isvc>-predictor-<namespace> (kserve/kserve#4807): a
    namespace of 59 characters, which Kubernetes takes, gave an InferenceService its controller never reconciles."""
    long_namespace = "a" * 59
    base = ["deploy", str(work / "repo"), "--to", "kserve", "--model-uri", "s3://models/repo"]
    code, err = _cli([*base, "--namespace", long_namespace, "--out", str(tmp_path / "long")], capsys)
    assert code == 1 and "KServe would name the predictor's host 'triton-double-predictor-aaaa" in err, err
    assert "use a --namespace of at most 35 characters" in err and not (tmp_path / "long").exists()
    code, _, err = run_cli([*base, "--namespace", "a" * 35, "--out", str(tmp_path / "fits")], capsys)
    assert code == 0, err
