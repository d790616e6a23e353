"""A results.json is input like any other: a crafted one (found by an attack session) is one error line, never a
traceback, a hang, an injected YAML document or HTML element. Both readers are covered: ``perf --compare`` and
``deploy --from-perf``."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace

import pytest
import yaml

from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, write_model
from tests.test_deploy_kubernetes import RUN
from tritongen.cli import main
from tritongen.deploy.k8s_bundle import comment_text
from tritongen.errors import TritongenError
from tritongen.perf.results import (
    MAX_LEVELS,
    MAX_POINT_VERSIONS,
    MAX_STEPS,
    json_from_run,
    latency_summary_from_ms,
    run_from_json,
)

GOOD = json.loads(json_from_run(RUN))
DEEP = "<50,000 nested lists>"  # written as raw text: this test's own json could not build it
INJECTED = (
    "builtin\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: pwned\n"
)


def _crafted(change) -> dict:
    data = json.loads(json.dumps(GOOD))
    change(data)
    return data


def _set(path: str, value):
    def change(data):
        target = data
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        target[keys[-1]] = value

    return change


CRAFTED = {
    "yaml in the engine": (_set("engine", INJECTED), "engine is 'builtin\\n---"),
    "an unknown engine": (_set("engine", "fast"), "engine is 'fast'"),
    "html in the protocol": (_set("protocol", "<script>alert(1)</script>"), "protocol is"),
    "an unknown mode": (_set("points.0.mode", "turbo"), "mode is"),
    "nan throughput": (_set("points.0.throughput_rps", math.nan), "throughput_rps is nan"),
    "infinite latency": (_set("points.0.latency.max_ms", math.inf), "max_ms is inf"),
    "a huge load": (_set("points.0.load", 10**400), "load is"),
    "a negative count": (_set("points.0.server.executions", -5), "executions is -5"),
    "a zero load": (_set("points.0.load", 0), "load is not positive"),
    "a bool for a cpu": (_set("client_cpus", [True]), "client_cpus[0] is not a int"),
    "a text share": (
        _set(
            "points.0.versions",
            {"1": {**GOOD["points"][0], "version": "1", "share_pct": "50", "requests": 1, "throughput_rps": 1.0}},
        ),
        "share_pct",
    ),
    "a terminal escape in the label": (_set("label", "\x1b]0;owned\x07"), "control character"),
    "a lone surrogate": (_set("model", "\ud800"), "lone surrogate"),
    "a start after the year 9999": (_set("started_unix_s", 1e14), "after the year 9999"),
    "yaml in a label": (_set("label", "x\n---\nkind: Secret\x00"), "control character"),
    "deep nesting": (_set("settings", DEEP), "nested too deeply"),
    # the knee's mean is the autoscaling target's time per request without server statistics: NaN reached int()
    "nan mean beside measured latencies": (
        lambda data: (_set("points.3.latency.mean_ms", math.nan)(data), _set("points.3.server", {})(data)),
        "points[3].latency.mean_ms is nan beside measured latencies",
    ),
    "nan latencies at a throughput": (
        _set("points.3.latency", {k: math.nan for k in GOOD["points"][3]["latency"]}),
        "points[3].latency.mean_ms is nan at a throughput of 110 req/s",
    ),
    "nan throughput of a window": (_set("points.0.window_history", [[math.nan, 1.0]]), "window_history[0]"),
}


def _levels(count: int):
    return lambda data: data.update(points=[{**data["points"][0], "load": i + 1} for i in range(count)])


def _versions(*names: str):
    def figures(name: str) -> dict:
        p = GOOD["points"][0]
        return {"version": name, "share_pct": 10, "requests": 1, "throughput_rps": 1.0, "latency": p["latency"]}

    return _set("points.0.versions", {name: figures(name) for name in names})


# found by an attack session: 20,000 levels in 3.3 MB took perf --compare --report 5 minutes and ~5 GB, and wrote
# a results.json of 18.6 MB that it could not read back; a 4000-digit version leaked matplotlib's warning, and "²"
# (a digit to str.isdigit(), not to int()) was blamed on the runs' labels
CRAFTED |= {
    "more levels than a run measures": (_levels(MAX_LEVELS + 1), f"holds {MAX_LEVELS + 1} load levels, over the"),
    "more versions than a split names": (
        _versions(*(str(v) for v in range(1, MAX_POINT_VERSIONS + 2))),
        f"holds {MAX_POINT_VERSIONS + 1} versions at points[0], over the {MAX_POINT_VERSIONS}",
    ),
    "more steps than an ensemble has": (
        _set("points.1.steps", {f"s{i}": {} for i in range(MAX_STEPS + 1)}),
        f"holds {MAX_STEPS + 1} ensemble steps at points[1], over the {MAX_STEPS}",
    ),
    "a 4000-digit version": (_versions("9" * 4000), "points[0].versions has '99999999999999999999'... (4000 char"),
    "a version past int64": (_versions(str(2**63)), "has '9223372036854775808', not a model version from 1 to"),
    "version 0": (_versions("0", "1"), "has '0', not a model version"),
    "a superscript digit for a version": (_versions("\u00b2"), "points[0].versions has '\u00b2', not a model version"),
}
SERVED = {
    "max_batch_size": 8,
    "instances": 1,
    "dynamic_batching": True,
    "preferred_batch_sizes": [8],
    "max_queue_delay_us": 0,
}
CRAFTED |= {  # the served settings deploy compares with the repository's config
    "served settings of another shape": (_set("served", {**SERVED, "gpus": 2}), "unexpected keyword argument 'gpus'"),
    "a bool for an instance count": (_set("served", {**SERVED, "instances": True}), "served.instances is not a int"),
    "a text queue delay": (_set("served", {**SERVED, "max_queue_delay_us": "0"}), "served.max_queue_delay_us is not"),
    "a negative batch size": (
        _set("served", {**SERVED, "preferred_batch_sizes": [-8]}),
        "preferred_batch_sizes[0] is -8",
    ),
    "served settings as a list": (_set("served", [8, 1]), "served is not a ServedSettings"),
}

NESTED = "[" * 200 + "]" * 200  # written back with indent=2, a file 1000 lists deep grew a thousandfold
CRAFTED |= {  # a later attack session: recorded options and names reached terminals, READMEs and a written-back file
    "settings nested deep": (_set("settings.k0", json.loads(NESTED)), "settings['k0'] [0] [0] is not what perf"),
    "a setting with a terminal escape": (_set("settings.repo", "/tmp/x\x1b]0;PWNED\x07"), "settings['repo'] holds a"),
    "a repo setting with a line break": (_set("settings.repo", "/tmp/x\nerror: none"), "holds the character U+000A"),
    "more options than perf records": (
        _set("settings", {f"k{i}": 1 for i in range(129)}),
        "settings holds 129 options, over the 128",
    ),
    "a long list of a setting": (_set("settings.concurrency", list(range(5000))), "holds 5000 items, over 4096"),
    "a right-to-left override in the model's name": (
        _set("model", "m\u202egpj.exe"),
        "model holds the character U+202E",
    ),
    "a line separator in the label": (_set("label", "a\u2028b"), "label holds the character U+2028"),
    "a line break in the URL": (_set("url", "127.0.0.1:1\nerror: none"), "url holds the character U+000A"),
    "a label of a megabyte": (_set("label", "x" * (1 << 20)), "label is over 4096 characters"),
    "a concurrency of 1e15": (_set("points.0.load", 1e15), "points[0].load is 1e+15, not a concurrency from 1 to"),
    "a concurrency of 2.5": (_set("points.0.load", 2.5), "points[0].load is 2.5, not a concurrency from 1 to 4096"),
}


def test_what_perf_records_it_reads_back_format_characters_of_real_labels_included(tmp_path):
    """A zero-width joiner (an emoji), a zero-width non-joiner (Persian), a soft hyphen: PerfSpec took them and the
    reader refused the file perf wrote with them."""
    from tritongen.perf.spec import PerfSpec

    label = "baseline \U0001f469\u200d\U0001f4bb \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 soft\u00adhyphen"
    spec = PerfSpec(model="double", label=label, repo=tmp_path / "r\u200cepo")
    run = replace(RUN, label=spec.label, settings=spec.recorded_settings())
    path = tmp_path / "results.json"
    path.write_text(json_from_run(run))
    assert run_from_json(path).label == label


def _write(tmp_path, data) -> str:
    path = tmp_path / "crafted.json"
    # json.dumps writes NaN and Infinity (as Python's json reads them: what a crafted file may hold)
    path.write_text(json.dumps(data).replace(json.dumps(DEEP), "[" * 50_000 + "]" * 50_000))
    return str(path)


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_results_file_is_one_error_line_for_compare_and_deploy(tmp_path, capsys, case):
    change, named = CRAFTED[case]
    crafted = _write(tmp_path, _crafted(change))
    good = tmp_path / "good.json"
    good.write_text(json_from_run(RUN))
    write_model(tmp_path / "repo", "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    for args in (
        ["perf", "--compare", str(good), crafted, "--report", str(tmp_path / "report")],
        [
            "deploy",
            str(tmp_path / "repo"),
            "--to",
            "kubernetes",
            "--out",
            str(tmp_path / "k8s"),
            "--from-perf",
            crafted,
            "--slo-p99-ms",
            "95",
        ],
    ):
        with pytest.raises(SystemExit) as exc:
            main(args)
        err = capsys.readouterr().err
        assert exc.value.code == 1 and "Traceback" not in err, (args[0], err[-500:])
        assert err.startswith("error: perf result ") and named in err, (args[0], err[:300])
        assert "pass a results.json written by tritongen perf" in err
    assert not (tmp_path / "k8s").exists() and not (tmp_path / "report" / "report.html").exists()


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path, capsys):
    fifo = tmp_path / "results.json"
    os.mkfifo(fifo)
    with pytest.raises(TritongenError, match="not a regular file"):
        run_from_json(fifo)


def test_a_file_whose_name_starts_with_a_brace_is_read_as_a_file(tmp_path):
    path = tmp_path / "{run}.json"
    path.write_text(json_from_run(RUN))
    assert run_from_json(path).model == "double"


def test_a_report_folder_is_read_through_its_results_json(tmp_path):
    # perf --report DIR writes DIR/results.json: --compare DIR and deploy --from-perf DIR take the folder itself
    report = tmp_path / "perf-cnn"
    report.mkdir()
    with pytest.raises(TritongenError, match="holds no results.json"):  # a folder without one is still refused
        run_from_json(report)
    (report / "results.json").write_text(json_from_run(RUN))
    assert run_from_json(report).model == "double"


def test_compare_without_a_report_prints_the_comparison_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from dataclasses import replace

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.json").write_text(json_from_run(RUN))
    (tmp_path / "b.json").write_text(json_from_run(replace(RUN, label="second")))
    try:
        main(["perf", "--compare", "a.json", "b.json"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = capsys.readouterr().out
    assert "second" in out and "no report written" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_compare_is_an_api_function_the_cli_prints(tmp_path, monkeypatch):
    """perf --compare assembled its comparison in the CLI: the API had only report(), which needs a folder."""
    from dataclasses import replace

    import tritongen

    second = replace(RUN, label="second")
    (tmp_path / "a.json").write_text(json_from_run(RUN))
    compared = tritongen.compare([tmp_path / "a.json", second])
    assert [r.model for r in compared.runs] == ["double", "double"] and compared.report_path is None
    assert compared.text().endswith("(no report written: pass --report DIR for report.html with the plots)")
    assert "second" in compared.text()
    written = tritongen.compare([str(tmp_path / "a.json"), second], tmp_path / "cmp")
    assert written.report_path == tmp_path / "cmp" / "report.html" and written.report_path.is_file()
    assert written.text().endswith(f"report: {tmp_path / 'cmp' / 'report.html'}")
    with pytest.raises(TritongenError, match="holds an earlier perf report"):  # refused before any read or write
        tritongen.compare([tmp_path / "a.json", second], tmp_path / "cmp")
    with pytest.raises(TritongenError, match="got no runs"):
        tritongen.compare([])
    monkeypatch.chdir(tmp_path)
    assert main(["perf", "--compare", "a.json", "a.json"]) in (0, None)


def test_compare_keeps_each_row_of_a_crafted_file_on_its_line(tmp_path, capsys, monkeypatch):
    """The reader refuses a terminal's escapes in a results.json's texts but keeps newlines and tabs (a partial
    reason quotes the server's log): printed, they are escaped, so no text forges a row of the table."""
    from dataclasses import replace

    monkeypatch.chdir(tmp_path)
    forged = "\n        1c   99999.0"
    crafted = replace(RUN, label="second", partial=True, partial_reason=f"died{forged}")
    (tmp_path / "a.json").write_text(json_from_run(RUN))
    (tmp_path / "b.json").write_text(json_from_run(crafted))
    try:
        main(["perf", "--compare", "a.json", "b.json"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = capsys.readouterr().out
    assert "99999.0" in out and not any(line.lstrip().startswith("1c   99999.0") for line in out.splitlines())
    assert "[PARTIAL: died\\n        1c   99999.0]" in out


def test_what_perf_writes_for_a_level_without_answers_reads_back():
    empty = latency_summary_from_ms([])
    assert math.isnan(empty.p99_ms)
    from dataclasses import replace

    level = replace(
        RUN.points[0],
        latency=empty,
        requests=0,
        throughput_rps=0.0,
        window_history=((0.0, math.nan),),  # a window without an answer has no p99
        client_cpu_cores=0.3,  # the client ran; per request: none completed
    )
    run = replace(RUN, points=(level,), partial=True, partial_reason="server died\nat 3 s\tlog: x.log")
    back = run_from_json(json_from_run(run))
    assert math.isnan(back.points[0].latency.p99_ms) and math.isnan(back.points[0].window_history[0][1])
    assert back.points[0].client_cpu_us_per_request is None and back.partial_reason == run.partial_reason
    table = back.table()  # what perf prints, from the result object (the API's users have no CLI)
    assert "[PARTIAL: server died\\nat 3 s\\tlog: x.log]" in table and "        1c       0.0" in table, table


def test_a_comparison_with_a_zero_server_cpu_figure_says_it_was_not_measured(tmp_path):
    from dataclasses import replace

    from tritongen.perf.results import comparison_lines

    a = replace(
        RUN, server_cpus=(0, 1), points=(replace(RUN.points[0], server_cpu_cores=2.0, server_cpu_us_per_request=0.0),)
    )
    b = replace(a, label="b", points=(replace(a.points[0], throughput_rps=a.points[0].throughput_rps * 2),))
    (line,) = comparison_lines([a, b])
    assert "not measured in both" in line


def test_a_yaml_comment_holds_one_line_whatever_text_it_is_given():
    text = comment_text(INJECTED + "\r\x85\u2028end")
    assert "\n" not in text and "\r" not in text and all(c.isprintable() for c in text)
    header = f"# {text}\n"
    assert yaml.safe_load(header + "a: 1\n") == {"a": 1}  # still one comment line: no document of its own


@pytest.mark.parametrize(
    "label",
    [
        "a$\\foo{$b",  # mathtext: "Unknown symbol: \foo"
        "$" + "{" * 1500 + "x" + "}" * 1500 + "$",  # mathtext: a RecursionError
    ],
)
def test_a_dollar_in_a_label_or_name_is_drawn_as_text(tmp_path, capsys, label):
    from dataclasses import replace

    from tritongen.perf.results import VersionFigures

    p = RUN.points[0]
    figures = VersionFigures("1", 100, p.requests, p.throughput_rps, p.latency, server=p.server)
    versioned = replace(p, versions={"1": figures})  # a file's versions are numbers: the API's may be any text
    runs = {"a.json": replace(RUN, label=label, model=label, points=(versioned,)), "b.json": replace(RUN, label="b")}
    for name, run in runs.items():
        (tmp_path / name).write_text(json_from_run(run))
    args = ["perf", "--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--report", str(tmp_path / "r")]
    main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err and (tmp_path / "r" / "report.html").is_file()


def test_a_run_matplotlib_cannot_draw_is_one_error_line(tmp_path, capsys, monkeypatch):
    from tritongen.perf import report

    def fails(fig):
        raise ValueError("\nUnknown symbol: \\foo, found '\\'  (at char 1), (line:1, col:2)")

    monkeypatch.setattr(report, "_figure_png", fails)
    (tmp_path / "a.json").write_text(json_from_run(RUN))
    with pytest.raises(SystemExit) as exc:
        main(["perf", "--compare", str(tmp_path / "a.json"), "--report", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: the report's plots cannot be drawn (Unknown symbol: \\foo") and "--label" in err
    assert not (tmp_path / "r" / "report.html").exists()


def test_a_client_bound_level_without_cpu_per_request_is_compared_with_its_note(tmp_path, capsys):
    """client_cpu_cores without client_cpu_us_per_request is what loadgen writes for a level that sent no request;
    a crafted one at 0.9 cores (client-bound) made the note format None: a traceback."""
    data = json.loads(json_from_run(RUN))
    data["points"][0]["client_cpu_cores"] = 0.9
    data["points"][0]["client_cpu_us_per_request"] = None
    crafted = _write(tmp_path, data)
    good = tmp_path / "good.json"
    good.write_text(json_from_run(RUN))
    main(["perf", "--compare", str(good), crafted, "--report", str(tmp_path / "report")])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and (tmp_path / "report" / "report.html").is_file()
    assert "client-bound at concurrency 1: tritongen's client used 0.90 cores, so these figures understate" in out
    from dataclasses import replace

    from tritongen.perf.results import client_bound_note

    run = run_from_json(crafted)
    with_cpu = replace(run, points=(replace(run.points[0], client_cpu_us_per_request=250.0),) + run.points[1:])
    assert "0.90 cores (250 us of CPU per request)" in client_bound_note(with_cpu)


def test_runs_of_one_name_are_labelled_apart_by_what_differs(tmp_path, capsys):
    """Two runs of minilm with the built-in engine, one over gRPC, one over HTTP, both unlabelled: the comparison
    read "minilm (builtin) reads 1.34x the throughput of minilm (builtin)" and the plots' legends were the same."""
    from dataclasses import replace

    from tritongen.perf.results import distinct_names

    grpc = RUN
    http = replace(RUN, protocol="http", url="127.0.0.1:8000", points=(replace(RUN.points[0], throughput_rps=30.0),))
    named = distinct_names([grpc, http])
    assert [r.name for r in named] == [f"{RUN.name} [gRPC, 127.0.0.1:8001]", f"{RUN.name} [HTTP, 127.0.0.1:8000]"]
    assert [r.name for r in distinct_names([RUN, RUN])] == [f"{RUN.name} [#1]", f"{RUN.name} [#2]"]
    labelled = replace(http, label="after")
    assert distinct_names([grpc, labelled]) == (grpc, labelled)  # names already apart: unchanged
    (tmp_path / "a.json").write_text(json_from_run(grpc))
    (tmp_path / "b.json").write_text(json_from_run(http))
    main(["perf", "--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--report", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert f"{RUN.name} [HTTP, 127.0.0.1:8000] reads 2.00x the throughput of {RUN.name} [gRPC, 127.0.0.1:8001]" in out
    page = (tmp_path / "r" / "report.html").read_text()
    assert f"{RUN.name} [gRPC, 127.0.0.1:8001] vs {RUN.name} [HTTP, 127.0.0.1:8000]" in page


@pytest.mark.parametrize("name", ["report.html", "results.json", "results.csv"])
def test_a_link_planted_in_a_report_folder_is_refused_and_its_target_untouched(tmp_path, capsys, monkeypatch, name):
    """A report folder received from someone, holding ``report.html -> ~/somewhere``: perf refused nothing and
    wrote the report through the link."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.json").write_text(json_from_run(RUN))
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / name).symlink_to(victim)
    with pytest.raises(SystemExit) as exc:
        main(["perf", "--compare", "a.json", "--report", "rep"])
    assert exc.value.code == 1
    assert f"the report folder rep holds a {name} that is not a file (a link or a folder)" in capsys.readouterr().err
    assert victim.read_text() == "precious"


def _maximal_run():
    """A run of perf at every bound the reader sets: each level with the most versions (19-digit names), the most
    ensemble steps (names of the most characters a model's name has), every error kind and perf's default windows."""
    from dataclasses import replace

    from tritongen.names import MAX_NAME_CHARS
    from tritongen.perf.results import ServerBreakdown, VersionFigures
    from tritongen.perf.spec import PerfSpec, defaults_of

    windows = defaults_of(PerfSpec)["max_windows"]
    big = 123456.789012345
    server = ServerBreakdown(10**12, 10**12, big, big, big, big)
    latency = latency_summary_from_ms([big, big / 3, big / 7])
    errors = {kind: 10**12 for kind in ("no_server", "timeout", "not_found", "forbidden", "unavailable", "rejected")}
    errors["client_overloaded"] = 10**12
    versions = {
        v: VersionFigures(v, 12, 10**12, big, latency, errors, server)
        for v in (str(2**63 - 1 - i) for i in range(MAX_POINT_VERSIONS))
    }
    steps = {f"{i:03d}".ljust(MAX_NAME_CHARS, "s"): server for i in range(MAX_STEPS)}
    figures = dict.fromkeys(
        ("send_rate_rps", "max_send_lag_ms", "client_cpu_cores", "client_cpu_us_per_request", "client_machine_share"),
        big,
    )
    figures |= dict.fromkeys(("server_cpu_cores", "server_cpu_us_per_request", "server_wakeups_per_request"), big)
    point = replace(
        RUN.points[0],
        throughput_rps=big,
        latency=latency,
        requests=10**12,
        errors=errors,
        measured_s=big,
        windows=windows,
        server=server,
        window_history=((big, big),) * windows,
        steps=steps,
        versions=versions,
        **figures,
    )
    return replace(RUN, points=tuple(replace(point, load=float(i + 1)) for i in range(MAX_LEVELS)))


def test_what_perf_writes_at_every_bound_reads_back_under_the_byte_limit(tmp_path):
    """The reader's bounds are what perf can write: a run at all of them stays under the reader's byte limit (perf
    wrote 18.6 MB it could not read back), and a split names no more versions than a level may hold."""
    from tritongen.perf.results import MAX_RESULT_BYTES
    from tritongen.perf.split import MAX_VERSIONS

    assert MAX_VERSIONS == MAX_POINT_VERSIONS
    run = _maximal_run()
    text = json_from_run(run)
    assert len(text.encode()) < MAX_RESULT_BYTES * 0.8, len(text)  # room to spare for longer windows or texts
    (tmp_path / "results.json").write_text(text)
    assert run_from_json(tmp_path) == run


def _png_size(png: str) -> tuple[int, int]:
    import base64
    import struct

    width, height = struct.unpack(">II", base64.b64decode(png)[16:24])  # the PNG's IHDR chunk
    return width, height


def test_a_bar_chart_draws_a_bounded_number_of_levels_and_says_how_many_it_left_out(monkeypatch):
    """The "where the time goes" chart grew 0.32 inches a level: 20,000 levels drew a 745 x 497,887 PNG in
    minutes. Levels of many runs together are as many: the chart keeps MAX_BAR_ROWS of them."""
    from dataclasses import replace

    from tritongen.perf import report

    monkeypatch.setattr(report, "MAX_BAR_ROWS", 4)
    versions = _maximal_run().points[0].versions
    versioned = replace(RUN, points=tuple(replace(p, versions=versions) for p in RUN.points[:4]))
    sizes = {}
    for count in (4, 12):
        plots = dict(report.plots_from_runs([replace(versioned, label=f"r{i}") for i in range(count // 4)]))
        sizes[count] = {title.split(" (")[0]: _png_size(png) for title, png in plots.items()}
        if count == 12:
            left_out = "(the first 4 of 12 levels; the tables list every one)"
            assert f"Where the time goes (server statistics API) {left_out}" in plots, list(plots)
            assert any(t.startswith("Versions compared") and t.endswith(left_out) for t in plots), list(plots)
    assert sizes[12]["Where the time goes"][1] == sizes[4]["Where the time goes"][1], sizes


def test_a_figure_is_never_wider_or_taller_than_the_cap(monkeypatch):
    """A legend of many runs, or a name as long as a results.json allows, widens a figure that bbox_inches="tight"
    writes whole: past MAX_PLOT_PIXELS it is written at a lower resolution, and refused in one line where even
    MIN_PLOT_DPI would not fit (FreeType failed on the text: a traceback)."""
    from dataclasses import replace

    from tritongen.perf import report

    monkeypatch.setattr(report, "MAX_PLOT_PIXELS", 1000)
    runs = [replace(RUN, label="a" * 300), replace(RUN, label="b")]
    for title, png in report.plots_from_runs(runs):
        assert max(_png_size(png)) <= 1000 * 1.05, (title, _png_size(png))
    monkeypatch.setattr(report, "MAX_PLOT_PIXELS", 300)
    with pytest.raises(TritongenError, match=r"plots cannot be drawn \(a figure \d+ inches long, over 300 pixels"):
        report.plots_from_runs([replace(RUN, label="a" * 4000), replace(RUN, label="b")])


def test_a_throughput_plot_of_many_levels_names_a_bounded_number_of_them(monkeypatch):
    from dataclasses import replace

    from tritongen.perf import report

    figures = []
    monkeypatch.setattr(report, "_figure_png", lambda fig: figures.append(fig) or "")
    points = tuple(replace(RUN.points[0], load=float(c)) for c in range(1, 41))
    try:
        report.plots_from_runs([replace(RUN, points=points)])
        ticks = [t for t in figures[0].axes[0].get_xticks() if 1 <= t <= 40]
        assert 2 <= len(ticks) <= report.MAX_TICKS and all(t == int(t) for t in ticks), ticks
    finally:
        import matplotlib.pyplot as plt

        for fig in figures:
            plt.close(fig)


def test_versions_the_api_passes_as_any_text_are_drawn_without_a_warning():
    """A PerfRun from the API is not read from a file: its versions may be any text. "²" reached int() (an error
    blaming the labels) and a 4000-digit name made matplotlib warn on the output."""
    import warnings
    from dataclasses import replace

    from tritongen.perf.report import plots_from_runs
    from tritongen.perf.results import VersionFigures

    p = RUN.points[0]
    names = ("\u00b2", "9" * 4000, "2", "10", "a$\\foo{$b")
    versions = {v: VersionFigures(v, 20, p.requests, p.throughput_rps, p.latency, server=p.server) for v in names}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots = plots_from_runs([replace(RUN, points=(replace(p, versions=versions),))])
    assert any(title.startswith("Versions compared") for title, _ in plots)


def test_the_served_settings_a_run_records_read_back():
    from dataclasses import replace

    from tritongen.served_settings import ServedSettings

    run = replace(RUN, served=ServedSettings(8, 2, True, (4, 8), 100))
    assert run_from_json(json_from_run(run)) == run
    assert run_from_json(json_from_run(RUN)).served is None  # a run the server's answer said nothing of
    old = _crafted(lambda data: data.pop("served"))  # written before perf recorded them
    assert run_from_json(json.dumps(old)).served is None


def test_a_comparison_of_runs_served_with_other_configs_says_what_differed(tmp_path, capsys):
    from dataclasses import replace

    from tritongen.served_settings import ServedSettings

    one = replace(RUN, label="one", served=ServedSettings(8, 1, True, (8,), 0))
    two = replace(RUN, label="two", served=ServedSettings(16, 2, True, (16,), 0))
    for name, run in (("a", one), ("b", two), ("c", replace(two, label="three", served=None))):
        (tmp_path / f"{name}.json").write_text(json_from_run(run))
    main(["perf", "--compare", *(str(tmp_path / f"{n}.json") for n in "abc"), "--report", str(tmp_path / "r")])
    out = capsys.readouterr().out
    said = "two measured the model served otherwise than one did (max batch 8 -> 16; instances 1 -> 2; preferred batch"
    assert said in out and "the figures compare two configs" in out
    assert "three measured" not in out  # its server's answer did not say


def test_compare_with_one_run_says_nothing_was_compared(tmp_path, capsys):
    (tmp_path / "a.json").write_text(json_from_run(RUN))
    main(["perf", "--compare", str(tmp_path / "a.json")])
    out = capsys.readouterr().out
    assert "(one run: shown, nothing compared; pass two or more" in out
    (tmp_path / "b.json").write_text(json_from_run(RUN))
    main(["perf", "--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert "nothing compared" not in capsys.readouterr().out


def test_a_folder_without_results_is_named_so_a_compare_report_as_such(tmp_path):
    """deploy --from-perf on a perf --compare folder said "cannot be read (it is a folder): pass a results.json ...
    (or the --report folder that holds it)": the fix contradicted the problem."""
    from tritongen.errors import TritongenError

    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "report.html").write_text("<html></html>")
    with pytest.raises(TritongenError) as err:
        run_from_json(tmp_path / "cmp")
    assert err.value.problem.endswith(
        "cmp holds no results.json (a perf --compare report: its runs' results are in their own --report folders)"
    )
    assert "pass the results.json of one run" in err.value.fix
    (tmp_path / "empty").mkdir()
    with pytest.raises(TritongenError, match=r"empty holds no results.json: pass"):
        run_from_json(tmp_path / "empty")
