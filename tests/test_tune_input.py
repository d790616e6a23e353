"""What ``tritongen tune`` refuses on its command line: one error line, before any server is asked anything."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize(
    ("args", "line"),
    [
        # an IndexError from an empty concurrency ladder
        (["--max-concurrency", "0"], "error: --max-concurrency 0 is not from 1 to 4096: give the largest concurrency"),
        (["--max-concurrency", "-2"], "error: --max-concurrency -2 is not from 1 to 4096: give the largest"),
        (["--max-concurrency", "5000"], "error: --max-concurrency 5000 is not from 1 to 4096: give the largest"),
        # taken silently as the default (the CPU cores)
        (["--max-instances", "0"], "error: --max-instances 0 is not from 1 to 256: give the largest instance count to"),
        (["--max-instances", "-1"], "error: --max-instances -1 is not from 1 to 256: give the largest instance count"),
        (["--max-instances", "257"], "error: --max-instances 257 is not from 1 to 256: give the largest instance"),
        # -3 said "pass 0 or more", then 0 was refused as "not positive"
        (["--max-p99-ms", "-3"], "error: --max-p99-ms -3 is not above 0: give the p99 latency bound in milliseconds"),
        (["--max-p99-ms", "0"], "error: --max-p99-ms 0 is not above 0: give the p99 latency bound in milliseconds"),
        (["--duration-s", "-1"], "error: --duration-s -1 is not above 0: give a time above 0 seconds"),
        (["--duration-s", "0"], "error: --duration-s 0 is not above 0: give a time above 0 seconds"),
        # a 300-digit target in the search's notes
        (["--max-p99-ms", "1e300"], "error: --max-p99-ms 1e+300 is more than an hour: give the p99 latency bound"),
    ],
)
def test_bad_tune_options_are_one_line_that_states_the_accepted_range(capsys, tmp_path, args, line):
    folder = tmp_path / "repo" / "m"
    code, out, err = run_cli(["tune", str(folder), "--max-p99-ms", "10", "--url", "127.0.0.1:9", *args], capsys)
    assert code != 0 and "Traceback" not in err and out == ""
    assert err.strip().splitlines() == [err.strip()] and err.strip().startswith(line), err


def test_the_search_space_takes_the_instances_given_and_the_cores_when_none_is(monkeypatch):
    import os

    from tritongen.perf.tune_configs import search_space
    from tritongen.perf.tune_spec import Candidate, TuneSpec

    base = Candidate(1, 0, 8, ())
    assert search_space(TuneSpec("m", 10, max_instances=1), base, True)["instances"] == [1]
    cores = os.cpu_count() or 4
    assert search_space(TuneSpec("m", 10), base, True)["instances"] == list(range(1, cores + 1))
    # a machine of more cores than validate takes instances: the search stops at what validate takes
    monkeypatch.setattr(os, "cpu_count", lambda: 512)
    assert search_space(TuneSpec("m", 10), base, True)["instances"][-1] == 256


def test_no_preferred_sizes_and_the_max_alone_are_one_config_measured_once():
    """Triton's NormalizeModelConfig fills an empty preferred_batch_size with max_batch_size: tune measured
    "preferred=none" and "preferred=8" (max batch 8) as two configs, though the server served the same one."""
    from tritongen.perf.tune_configs import neighbour, preferred_kind, search_space, served_form
    from tritongen.perf.tune_spec import Candidate, TuneSpec

    none, the_max = Candidate(2, 500, 8, ()), Candidate(2, 500, 8, (8,))
    assert served_form(none) == served_form(the_max)
    assert served_form(Candidate(2, 500, 8, (4, 8))) != served_form(none)
    assert served_form(Candidate(2, 0, 0, ())) == Candidate(2, 0, 0, ())  # no batching: nothing filled in
    kinds = search_space(TuneSpec("m", 10), none, True)["preferred"]
    for start in (none, the_max):  # from either spelling, the preferred dimension tries only a different config
        assert preferred_kind(start) in kinds
        others = [neighbour(start, "preferred", k) for k in kinds if k != preferred_kind(start)]
        assert others and all(served_form(o) != served_form(start) for o in others)
        served = [served_form(neighbour(start, "preferred", k)) for k in kinds]
        assert len(set(served)) == len(served)


def test_tune_takes_request_texts_as_perf_does(capsys, tmp_path):
    """tune's fix for a model without saved samples (a text ensemble's pre-processing step) named --text-file, which
    tune did not take; it takes it, under perf's rules."""
    from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, write_model

    folder = write_model(tmp_path / "repo", "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    (tmp_path / "texts.txt").write_text("one\ntwo\n")
    np_file = tmp_path / "x.npz"
    np_file.write_bytes(b"")
    code, out, err = run_cli(
        ["tune", str(folder), "--max-p99-ms", "10", "--url", "127.0.0.1:9", "--text-file", str(tmp_path / "texts.txt")]
        + ["--input-data", str(np_file)],
        capsys,
    )
    assert code != 0 and err.strip() == "error: --input-data and --text-file both given: pass one source of inputs"


def test_a_bare_model_name_is_pointed_at_its_folder_in_the_default_repository(capsys, tmp_path, monkeypatch):
    """`tune minilm` said the folder does not exist and gave a generic example; infer takes the bare name."""
    from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, write_model

    monkeypatch.chdir(tmp_path)
    write_model(tmp_path / "model_repository", "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    code, out, err = run_cli(["tune", "double", "--max-p99-ms", "10", "--url", "127.0.0.1:9"], capsys)
    assert code != 0 and "did you mean model_repository/double?" in err, err
    code, out, err = run_cli(["tune", "nothing", "--max-p99-ms", "10", "--url", "127.0.0.1:9"], capsys)
    assert code != 0 and "did you mean" not in err and "e.g. model_repository/my-model" in err, err
