"""Outside text in what a Kubernetes/KServe bundle's tools parse: label values in PromQL (KEDA, prometheus-adapter,
rules, dashboard) and alert labels and annotations (Go templates Prometheus expands at alert time), checked with
the real promtool; and what a Triton pod asks of its node (/dev/shm, CPU and memory requests)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, write_model
from tritongen.cli import main
from tritongen.deploy import kubernetes as k8s
from tritongen.deploy import monitoring
from tritongen.deploy.checks import check_bundle, rendered_overlay, tool
from tritongen.deploy.k8s_bundle import kubernetes_bundle_from_repository
from tritongen.deploy.monitoring import (
    Queries,
    adapter_query,
    adapter_rule,
    all_queries,
    label_value,
    promtool_tests,
    regex_value,
    rule_groups,
    template_text,
)
from tritongen.deploy.thresholds import Thresholds, thresholds_from_run, unmeasured_thresholds
from tritongen.errors import TritongenError
from tritongen.perf.results import LatencySummary, PerfPoint, PerfRun, ServerBreakdown, json_from_run

# A model name that ends the string and adds a matcher, holds a backslash (alone it made every query unparsable),
# a Go template running a query, prometheus-adapter's template, Grafana's variables, a newline and a non-ASCII letter.
EVIL_MODEL = 'm",job=~".+\\q{{ with query "up" }}{{ . | first | value }}{{ end }}<<.Series>>$datasource[[x]]\né'
# The perf results file name F4 found running a query at alert time.
EVIL_SOURCE = "tritongen perf r{{ with query `up` }}{{ . | first | value }}{{ end }}.json of m: 3 levels"
JOB = "triton-m"
NAMESPACE = "serving"


def promtool(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("promtool", "apt-get install prometheus"), *args], cwd=folder, capture_output=True, text=True, timeout=120
    )


def evil() -> tuple[Queries, Thresholds]:
    """Queries and thresholds for a model named EVIL_MODEL measured into a file named as in EVIL_SOURCE (deploy
    refuses such a model name: these are built past that check, as a library user could)."""
    t = replace(unmeasured_thresholds("m", max_batch_size=8, instances=1), model=EVIL_MODEL, source=EVIL_SOURCE)
    return Queries(job=JOB, model=EVIL_MODEL), t


# ------------------------------------------------------------------------------------------ PromQL string literals


def test_a_label_value_is_a_promql_string_literal_of_exactly_itself():
    assert label_value("double") == '"double"'
    assert label_value("resnet50_v1.5-onnx") == '"resnet50_v1.5-onnx"'
    assert label_value('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    # what another tool reads as a template or a variable before Prometheus reads the query
    assert label_value("<<.Series>>") == '"\\u003c\\u003c.Series\\u003e\\u003e"'
    assert label_value("$x[[y]]{{z}}`") == '"\\u0024x\\u005b\\u005by\\u005d\\u005d\\u007b\\u007bz\\u007d\\u007d\\u0060"'
    assert label_value("é\u2028") == '"é\\u2028"'
    with pytest.raises(TritongenError, match="not valid UTF-8"):
        label_value("a\udcff")  # an undecodable file name's byte
    # each alternative's metacharacters escaped for RE2, the joining "|" kept (written \u007c, read back as "|")
    assert regex_value(["p.1", "a|b"]) == '"p\\\\.1\\u007ca\\\\\\u007cb"'


def test_every_query_selects_exactly_the_named_series(tmp_path):
    """promtool evaluates the KEDA query, the adapter's (filled in as the adapter fills it, for a pod whose name
    holds a regex metacharacter) and a recording rule against series of the hostile model beside decoys: the one a
    `model="m",job=~".+"` injection would pick up (another job), and a pod the unescaped regex `p.1` matches."""
    q, t = evil()
    rule = adapter_rule(q)
    # the metricsQuery template holds only the adapter's own actions, whatever the model is called
    assert re.findall(r"<<[^>]*>>", rule["metricsQuery"]) == ["<<.GroupBy>>", "<<.Series>>", "<<.LabelMatchers>>"]
    for where, expr, _ in all_queries(q, t, (NAMESPACE, ["p.1"])):
        assert "$" not in expr and "[[" not in expr and "<<" not in expr, where  # Grafana and adapter templates

    # the test's own series and expectations are quoted by another encoder (JSON's escapes are PromQL's too)
    def quoted(text: str) -> str:
        return json.dumps(text)

    def series(model: str, job: str, pod: str, in_flight: float) -> dict[str, str]:
        labels = f"namespace={quoted(NAMESPACE)},job={quoted(job)},model={quoted(model)},pod={quoted(pod)}"
        return {
            "series": f'nv_inference_request_duration_us{{{labels},version="1"}}',
            "values": f"0+{in_flight * 1e6 * 15:g}x40",
        }

    ok = f"namespace={quoted(NAMESPACE)},job={quoted(JOB)},model={quoted(EVIL_MODEL)}"
    inputs = [
        series(EVIL_MODEL, JOB, "p.1", 2),
        series(EVIL_MODEL, JOB, "px1", 7),  # matched by an unescaped pod=~"p.1"
        series("m", "other", "p.1", 100),  # matched by the injected job=~".+"
        {"series": f'nv_inference_request_success{{{ok},pod="p.1",version="1"}}', "values": "0+150x40"},
    ]
    keda, adapter = q.in_flight_total(NAMESPACE), adapter_query(rule, NAMESPACE, ["p.1"])
    model_label = f"model={quoted(EVIL_MODEL)}"
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": inputs,
                "promql_expr_test": [
                    {"expr": keda, "eval_time": "5m", "exp_samples": [{"labels": "{}", "value": 9}]},
                    {"expr": adapter, "eval_time": "5m", "exp_samples": [{"labels": '{pod="p.1"}', "value": 2}]},
                    {  # a recording rule's label is stored as written (not a template)
                        "expr": "tritongen:version_throughput_rps",
                        "eval_time": "5m",
                        "exp_samples": [
                            {
                                "labels": f'tritongen:version_throughput_rps{{{model_label},namespace="serving",'
                                'version="1"}',
                                "value": 10,
                            }
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups(q, t)}, width=1000))
    (tmp_path / "queries-test.yaml").write_text(yaml.safe_dump(tests, width=1000))
    check = promtool(tmp_path, "check", "rules", "rules.yaml")
    assert check.returncode == 0, check.stdout + check.stderr
    run = promtool(tmp_path, "test", "rules", "queries-test.yaml")
    assert run.returncode == 0, run.stdout + run.stderr


# ------------------------------------------------------------------------------------------ alert templates


def test_template_text_renders_as_written():
    assert template_text("double") == "double"
    assert template_text("a{{b}}c") == 'a{{ "{{" }}b}}c'
    assert template_text("{{{") == '{{ "{{" }}{'


def test_alert_labels_and_annotations_render_literally_and_run_no_query(tmp_path, monkeypatch):
    """The bundle's own promtool unit tests expect every alert's model label, summary and thresholds annotation to
    read exactly as the model and results file are named. promtool expands them as Prometheus does at alert time:
    a `{{ with query "up" }}` that ran would render the query's result (the series hold `up`), not itself. The same
    test fails when the values are written unescaped, so it sees the injection."""

    def write(folder: Path) -> subprocess.CompletedProcess:
        folder.mkdir()
        q, t = evil()
        (folder / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups(q, t)}, width=1000))
        tests = promtool_tests(q, t, "rules.yaml")
        (folder / "rules-test.yaml").write_text(yaml.safe_dump(tests, width=1000))
        expected = tests["tests"][0]["alert_rule_test"][0]["exp_alerts"][0]
        assert expected["exp_labels"]["model"] == EVIL_MODEL
        assert expected["exp_annotations"]["thresholds"] == f"unmeasured: {EVIL_SOURCE}"
        check = promtool(folder, "check", "rules", "rules.yaml")
        assert check.returncode == 0, check.stdout + check.stderr
        return promtool(folder, "test", "rules", "rules-test.yaml")

    run = write(tmp_path / "escaped")
    assert run.returncode == 0, run.stdout + run.stderr
    monkeypatch.setattr(monitoring, "template_text", lambda text: text)
    raw = write(tmp_path / "raw")
    # Prometheus ran `up` and printed its value (1) in place of the template: "r1.json"
    assert raw.returncode != 0 and 'thresholds="unmeasured: tritongen perf r1.json of m' in raw.stdout + raw.stderr


# ------------------------------------------------------------------------------------------ deploy refuses the name


@pytest.mark.parametrize("name", ['m",job=~".+', "a\\q", "r{{x}}", "has space", "a<<b"])
def test_deploy_refuses_a_model_name_queries_and_labels_would_need_escaped(name):
    fix = "rename the model's folder and the name in its config.pbtxt"
    with pytest.raises(TritongenError, match="holds characters other than letters") as err:
        unmeasured_thresholds(name, max_batch_size=8, instances=1)
    assert fix in err.value.fix
    run = PerfRun(name, "127.0.0.1:8001", "grpc", "builtin", (_point(1, 15.0, 70.0),))
    with pytest.raises(TritongenError, match="holds characters other than letters"):
        thresholds_from_run(run, slo_p99_ms=95)
    assert unmeasured_thresholds("resnet50_v1.5-onnx", max_batch_size=8, instances=1).model == "resnet50_v1.5-onnx"


def test_deploy_of_a_hand_written_model_with_such_a_name_is_one_error_and_writes_nothing(tmp_path, capsys):
    name = "m,job=x"  # passes validate (no character a shell splits on), but not a name a bundle carries
    config = DOUBLE_CONFIG.replace('name: "double"', f'name: "{name}"')
    write_model(tmp_path / "repo", name, config, DOUBLE_MODEL)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["deploy", str(tmp_path / "repo"), "--to", "kubernetes", "--out", str(out), "--allow-unverified", name])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: model name '{name}' holds characters") and "Traceback" not in err
    assert not out.exists()


# ------------------------------------------------------------------------------------------ what a pod asks for


def _point(load: int, rps: float, p99_ms: float, server_cores: float | None = None) -> PerfPoint:
    lat = LatencySummary(p99_ms / 2, p99_ms / 2, p99_ms * 0.8, p99_ms * 0.9, p99_ms, p99_ms * 1.2)
    server = ServerBreakdown(1000, 200, 20_000, 10.0, 50_000.0, 10.0)
    return PerfPoint("concurrency", load, "builtin", rps, lat, 1000, server=server, server_cpu_cores=server_cores)


# The server measured on the perf machine: 1.23 cores busy at the knee (c4), on CPUs 0-3.
RUN = PerfRun(
    "double",
    "127.0.0.1:8001",
    "grpc",
    "builtin",
    (_point(1, 15.0, 70.0, 0.4), _point(4, 55.0, 72.0, 1.23), _point(16, 120.0, 140.0, 3.9)),
    server_cpus=(0, 1, 2, 3),
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pods")
    write_model(root / "repo", "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    return root / "repo"


def test_the_cpu_request_is_the_servers_cpu_at_the_knee():
    assert thresholds_from_run(RUN, slo_p99_ms=95).cpu_request_cores == 1.3  # 1.23 cores, up to a tenth
    no_cpus = replace(RUN, points=tuple(replace(p, server_cpu_cores=None) for p in RUN.points))
    assert thresholds_from_run(no_cpus, slo_p99_ms=95).cpu_request_cores is None  # a server elsewhere
    busier = replace(RUN, points=(RUN.points[0], replace(RUN.points[1], server_cpu_cores=9.0)), server_cpus=(0, 1))
    assert thresholds_from_run(busier, slo_p99_ms=95).cpu_request_cores == 2.0  # at most the CPUs it had
    crafted = replace(busier, server_cpus=())
    crafted = replace(crafted, points=(crafted.points[0], replace(crafted.points[1], server_cpu_cores=float("inf"))))
    with pytest.raises(TritongenError, match="cores busy in the server at the knee"):
        thresholds_from_run(crafted, slo_p99_ms=95)


@pytest.mark.parametrize("target", ["kubernetes", "kserve"])
@pytest.mark.parametrize("measured", [True, False])
def test_pods_get_dev_shm_and_requests(repo, tmp_path, target, measured):
    results = tmp_path / "results.json"
    results.write_text(json_from_run(RUN))
    b = kubernetes_bundle_from_repository(
        repo,
        tmp_path / "out",
        target=target,
        perf_results=results if measured else None,
        slo_p99_ms=95,
        model_uri="s3://models/repo" if target == "kserve" else None,
        allow_unverified=("double",),  # written by hand here: no build manifest
    )
    check = check_bundle(b.out)  # kubectl kustomize, kubernetes-validate --strict, the CRDs' schemas, promtool
    assert check.ok, "\n".join(check.problems)
    objs = rendered_overlay(b.out / "overlays" / "prod")
    if target == "kubernetes":
        pod = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["spec"]
        (c,) = pod["containers"]
    else:
        pod = next(o for o in objs if o["kind"] == "InferenceService")["spec"]["predictor"]
        c = pod["model"]
    shm = next(v for v in pod["volumes"] if v["name"] == k8s.SHM_VOLUME)
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}  # the compose bundle's shm_size: 1g
    assert {"name": k8s.SHM_VOLUME, "mountPath": "/dev/shm"} in c["volumeMounts"]
    cpu = "1300m" if measured else k8s.quantity(k8s.DEFAULT_CPU_REQUEST_CORES)
    assert c["resources"]["requests"] == {"cpu": cpu, "memory": k8s.DEFAULT_MEMORY_REQUEST}
    recorded = json.loads((b.out / "thresholds.json").read_text())["cpu_request_cores"]
    assert recorded == (1.3 if measured else None)


def test_the_shm_size_is_the_compose_bundles():
    compose = (Path(__file__).resolve().parents[1] / "templates" / "deploy" / "docker" / "compose.yaml.j2").read_text()
    (size,) = re.findall(r"shm_size: (\d+)g\b", compose)
    assert k8s.SHM_SIZE == f"{size}Gi"


def test_a_pvc_model_source_keeps_its_mount_beside_dev_shm(repo, tmp_path):
    b = kubernetes_bundle_from_repository(
        repo, tmp_path / "out", slo_p99_ms=95, model_uri="pvc://models/sub", allow_unverified=("double",)
    )
    pod = yaml.safe_load((b.out / "base" / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["models", k8s.SHM_VOLUME]
    assert [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]] == ["/models", "/dev/shm"]
    shutil.rmtree(b.out)


def test_a_prometheus_answer_is_read_within_its_bound(monkeypatch, tmp_path):
    """An answer larger than the bound is one error, not read whole into memory (a real HTTP server sends it)."""
    import http.server
    import threading

    from tritongen.deploy import prometheus

    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}, "pad": "x" * 4096})

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the standard library's name)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        prom = prometheus.LocalPrometheus(None, f"http://127.0.0.1:{server.server_address[1]}", tmp_path)  # type: ignore[arg-type]
        assert prom.query("up") == []  # within the bound: read and parsed
        monkeypatch.setattr(prometheus, "MAX_ANSWER_BYTES", 1024)
        with pytest.raises(TritongenError, match=r"Prometheus answered 'up' with more than"):
            prom.query("up")
    finally:
        server.shutdown()


def test_the_unmeasured_target_of_a_huge_config_is_capped():
    """Found by an attacker: max_batch_size 2**31 - 1 over 17,000 instance groups made an autoscaling target past
    2**63 milli-units (a Kubernetes quantity that never scales), which the bundle's checks passed."""
    t = unmeasured_thresholds("m", max_batch_size=2**31 - 1, instances=17_000 * 256)
    assert t.target_in_flight == 4096 and "capped at 4096" in t.source
    assert unmeasured_thresholds("m", max_batch_size=8, instances=2).target_in_flight == 16
