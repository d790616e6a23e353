"""The offline validator against Triton's own QA cases, and against hand-written broken repositories."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.factories import onnx_declaring
from tritongen.errors import TritongenError
from tritongen.validate import (
    ValidationReport,
    check_repository,
    config_from_text,
    problems_in_config,
    validate_repository,
)

ORACLE = Path(__file__).resolve().parent.parent.parent / "shared" / "testdata" / "triton_l0_model_config"
REJECT_CASES = sorted(p.name for p in (ORACLE / "noautofill_platform").iterdir()) if ORACLE.exists() else []
ACCEPT_ROOT = ORACLE / "autofill_noplatform_success"


def test_triton_qa_cases_are_beside_the_repository():
    assert ORACLE.is_dir() and REJECT_CASES, (
        f"Triton's QA cases must be at {ORACLE} (../shared beside the repository root)"
    )


# Cases whose message matches only another expected* file than `expected`, with the reason. Empty: every
# one of the 58 cases is matched by its own `expected` regex.
MATCHED_ONLY_BY_OTHER_EXPECTED: dict[str, str] = {}
# Cases that cannot be matched offline at all (still asserted to be rejected), with the reason. Empty.
REJECTED_WITHOUT_MATCH: dict[str, str] = {}
# Not used as an oracle: `expected_unsupported` ("batch inputs and batch outputs are only supported for custom
# platform and TensorRT platform") is the message of backends that lack batch inputs, not a core rule.


def grep_regex(pattern: str) -> re.Pattern[str]:
    """Compile a grep (basic regular expression) pattern for Python's ``re``."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append(nxt if nxt in "(){}|+?" else "\\" + nxt)  # BRE \( \| ... are operators
            i += 2
            continue
        out.append("\\" + char if char in "(){}|+?" else char)  # BRE ( | + ... are literals
        i += 1
    return re.compile("".join(out))


def matches(expected_file: Path, problems: list[str]) -> bool:
    patterns = [grep_regex(line) for line in expected_file.read_text().splitlines() if line.strip()]
    return any(p.search(problem) for p in patterns for problem in problems)


def test_grep_regex_conversion():
    assert grep_regex(r"range \[1, 3\] for x").search("must be in range [1, 3] for x")
    assert grep_regex("a (b) c+").search("a (b) c+")
    assert not grep_regex("a (b)").search("a b")


# --------------------------------------------------------------------------------------------------------
# Triton's QA cases


@pytest.mark.parametrize("case", REJECT_CASES)
def test_triton_rejected_case_is_rejected_with_tritons_reason(case):
    folder = ORACLE / "noautofill_platform" / case
    config = config_from_text((folder / "config.pbtxt").read_text(), str(folder / "config.pbtxt"))
    problems = problems_in_config(config)
    assert problems, f"{case} was accepted"
    if case in REJECTED_WITHOUT_MATCH:
        return
    if case in MATCHED_ONLY_BY_OTHER_EXPECTED:
        assert any(matches(f, problems) for f in folder.glob("expected*")), problems
        return
    assert matches(folder / "expected", problems), (case, (folder / "expected").read_text(), problems)


def test_oracle_has_all_cases():
    assert len(REJECT_CASES) == 58


@pytest.mark.parametrize(
    "case", [c for c in REJECT_CASES if (ORACLE / "noautofill_platform" / c / "expected_ensemble").exists()]
)
def test_triton_case_as_ensemble_platform_is_rejected_with_tritons_reason(case):
    """Triton's QA reruns these with platform "ensemble": an ensemble without ensemble_scheduling."""
    folder = ORACLE / "noautofill_platform" / case
    config = config_from_text((folder / "config.pbtxt").read_text())
    config.platform, config.backend = "ensemble", ""
    assert matches(folder / "expected_ensemble", problems_in_config(config))


def accepted_configs() -> list[Path]:
    if not ACCEPT_ROOT.exists():
        return []
    return sorted(ACCEPT_ROOT.glob("*/*/expected*")) + sorted(ACCEPT_ROOT.glob("*/*/*/expected*"))


@pytest.mark.parametrize("path", accepted_configs(), ids=lambda p: str(p.relative_to(ACCEPT_ROOT)))
def test_config_triton_accepted_has_no_problems(path):
    assert problems_in_config(config_from_text(path.read_text(), str(path))) == []


@pytest.mark.parametrize(
    "path",
    sorted(ACCEPT_ROOT.glob("*/*/expected*")) if ACCEPT_ROOT.exists() else [],
    ids=lambda p: str(p.relative_to(ACCEPT_ROOT)),
)
def test_config_triton_accepted_is_valid_in_a_repository_with_its_files(tmp_path, path):
    """Single-model configs placed in a repository, with a version folder and the model file they name."""
    config = config_from_text(path.read_text())
    model_dir = tmp_path / "repo" / config.name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(path.read_text())
    filename = config.default_model_filename or {"pytorch": "model.pt"}[config.backend]  # Triton's default
    own = path.parent / "1" / filename
    if own.is_file():  # Triton's case ships the model it completed the config from
        shutil.copy(own, model_dir / "1" / filename)
    elif config.backend == "onnxruntime":  # the backend reads the graph's inputs and outputs
        (model_dir / "1" / filename).write_bytes(onnx_declaring(config))
    else:
        (model_dir / "1" / filename).write_bytes(b"")
    for output in config.output:
        if output.label_filename:
            (model_dir / output.label_filename).write_text("a\nb\n")
    report = validate_repository(tmp_path / "repo")
    assert report.ok, report.summary()


@pytest.mark.parametrize(
    "folder",
    sorted({p.parent.parent for p in ACCEPT_ROOT.glob("*/*/*/expected")}) if ACCEPT_ROOT.exists() else [],
    ids=lambda p: p.name,
)
def test_ensemble_repository_triton_accepted_is_valid(tmp_path, folder):
    """Triton's accepted ensembles with their composing models (identity and Python backends)."""
    repo = tmp_path / "repo"
    for model in folder.iterdir():
        (repo / model.name / "1").mkdir(parents=True)
        shutil.copy(model / "config.pbtxt", repo / model.name / "config.pbtxt")
        if (model / "model.py").exists() and model.name != folder.name:
            shutil.copy(model / "model.py", repo / model.name / "1" / "model.py")
    report = validate_repository(repo)
    assert report.ok, report.summary()


# --------------------------------------------------------------------------------------------------------
# Helpers to write repositories


def tensors_text(kind: str, tensors) -> str:
    body = ",\n".join(
        f'  {{ name: "{n}" data_type: TYPE_{t} dims: [ {", ".join(str(d) for d in dims)} ] }}' for n, t, dims in tensors
    )
    return f"{kind} [\n{body}\n]\n"


def model_text(name, inputs, outputs, backend="python", max_batch_size=8, extra="") -> str:
    return (
        f'name: "{name}"\nbackend: "{backend}"\nmax_batch_size: {max_batch_size}\n'
        + tensors_text("input", inputs)
        + tensors_text("output", outputs)
        + extra
    )


def step_text(model: str, inputs: dict[str, str], outputs: dict[str, str], version: int = -1) -> str:
    maps = "".join(f' input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items())
    maps += "".join(f' output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items())
    return f'{{ model_name: "{model}" model_version: {version}{maps} }}'


def ensemble_text(name, steps, inputs, outputs, max_batch_size=8, extra="") -> str:
    return (
        f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {max_batch_size}\n'
        + tensors_text("input", inputs)
        + tensors_text("output", outputs)
        + "ensemble_scheduling { step [\n"
        + ",\n".join(steps)
        + "\n] }\n"
        + extra
    )


def write_repo(repo: Path, models: dict[str, str]) -> Path:
    """One folder per model with config.pbtxt, version folder 1 and the backend's model file."""
    for name, text in models.items():
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(text)
        config = config_from_text(text)
        if config.backend == "python":
            (repo / name / "1" / "model.py").write_text("class TritonPythonModel:\n    pass\n")
        elif config.backend == "onnxruntime":
            (repo / name / "1" / "model.onnx").write_bytes(onnx_declaring(config))
    return repo


TEXT = ("TEXT", "STRING", [1])
LABEL = ("LABEL", "STRING", [1])
COMPOSING = {
    "preprocess": model_text("preprocess", [TEXT], [("INPUT_IDS", "INT64", [16])]),
    "classifier": model_text(
        "classifier", [("input_ids", "INT64", [16])], [("logits", "FP32", [2])], backend="onnxruntime"
    ),
    "postprocess": model_text("postprocess", [("LOGITS", "FP32", [2])], [LABEL]),
    "mixer": model_text("mixer", [("A", "FP32", [2]), ("B", "FP32", [2])], [("C", "FP32", [2])]),
}
PRE = step_text("preprocess", {"TEXT": "TEXT"}, {"INPUT_IDS": "ids"})
CLASSIFY = step_text("classifier", {"input_ids": "ids"}, {"logits": "logits"})
POST = step_text("postprocess", {"LOGITS": "logits"}, {"LABEL": "LABEL"})


def pipeline_problems(
    tmp_path, steps=(PRE, CLASSIFY, POST), inputs=(TEXT,), outputs=(LABEL,), max_batch_size=8, extra="", models=None
) -> list[str]:
    repo = write_repo(
        tmp_path / "repo",
        {
            **(models or COMPOSING),
            "pipeline": ensemble_text("pipeline", list(steps), inputs, outputs, max_batch_size, extra),
        },
    )
    return list(validate_repository(repo).problems_by_model["pipeline"])


def assert_problem(problems: list[str], *needles: str) -> None:
    assert any(all(n in p for n in needles) for p in problems), f"no problem with {needles} in {problems}"


# --------------------------------------------------------------------------------------------------------
# Ensembles


def test_three_step_ensemble_is_valid(tmp_path):
    repo = write_repo(
        tmp_path / "repo", {**COMPOSING, "pipeline": ensemble_text("pipeline", [PRE, CLASSIFY, POST], [TEXT], [LABEL])}
    )
    report = check_repository(repo)
    assert report.ok and set(report.problems_by_model) == {*COMPOSING, "pipeline"}
    assert "valid" in report.summary() and "pipeline" in report.summary()


def test_batching_ensemble_may_call_a_non_batching_model_with_the_batch_dim_in_dims(tmp_path):
    models = {
        **COMPOSING,
        "postprocess": model_text(
            "postprocess", [("LOGITS", "FP32", [-1, 2])], [("LABEL", "STRING", [-1, 1])], max_batch_size=0
        ),
    }
    assert pipeline_problems(tmp_path, models=models) == []


def test_ensemble_without_steps(tmp_path):
    assert_problem(pipeline_problems(tmp_path, steps=()), "must specify 'step' for ensemble 'pipeline'")


def test_step_without_input_map(tmp_path):
    steps = (PRE, step_text("classifier", {}, {"logits": "logits"}), POST)
    assert_problem(
        pipeline_problems(tmp_path, steps=steps),
        "must specify 'input_map' in step 1 ('classifier') of ensemble 'pipeline'",
    )


def test_tensor_written_twice(tmp_path):
    problems = pipeline_problems(tmp_path, steps=(PRE, PRE, CLASSIFY, POST))
    assert_problem(
        problems,
        "ensemble tensor 'ids' can appear in an output map only once",
        "'pipeline'",
        "step 0 ('preprocess')",
        "step 1 ('preprocess')",
    )


def test_ensemble_input_overwritten_by_a_step(tmp_path):
    steps = (PRE, CLASSIFY, POST, step_text("postprocess", {"LOGITS": "logits"}, {"LABEL": "TEXT"}))
    assert_problem(
        pipeline_problems(tmp_path, steps=steps), "ensemble input 'TEXT'", "'pipeline'", "step 3 ('postprocess')"
    )


def test_ensemble_input_not_used(tmp_path):
    problems = pipeline_problems(tmp_path, inputs=(TEXT, ("EXTRA", "STRING", [1])))
    assert_problem(problems, "ensemble input 'EXTRA' for ensemble 'pipeline' is not used")


def test_output_not_written_names_the_unconnected_tensor_and_step(tmp_path):
    steps = (PRE, step_text("classifier", {"input_ids": "idz"}, {"logits": "logits"}), POST)
    problems = pipeline_problems(tmp_path, steps=steps)
    assert_problem(problems, "output 'LABEL' for ensemble 'pipeline' is not written", "'idz'", "step 1 ('classifier')")
    assert_problem(problems, "ensemble tensor 'idz' read by step 1 ('classifier')", "never written")
    assert_problem(problems, "ensemble tensor 'ids' is unused in ensemble 'pipeline'", "step 0 ('preprocess')")


def test_output_no_step_writes(tmp_path):
    problems = pipeline_problems(tmp_path, outputs=(LABEL, ("SCORE", "FP32", [2])))
    assert_problem(problems, "output 'SCORE' for ensemble 'pipeline' is not written")


def test_steps_in_a_cycle(tmp_path):
    steps = (
        PRE,
        CLASSIFY,
        POST,
        step_text("mixer", {"A": "logits", "B": "z"}, {"C": "w"}),
        step_text("mixer", {"A": "w", "B": "logits"}, {"C": "z"}),
    )
    problems = pipeline_problems(tmp_path, steps=steps)
    assert_problem(
        problems, "steps of ensemble 'pipeline' form a cycle", "step 3 ('mixer')", "step 4 ('mixer')", "'w'", "'z'"
    )


def test_composing_model_missing(tmp_path):
    steps = (step_text("tokenizer", {"TEXT": "TEXT"}, {"INPUT_IDS": "ids"}), CLASSIFY, POST)
    assert_problem(
        pipeline_problems(tmp_path, steps=steps),
        "ensemble pipeline contains models that are not available: step 0 ('tokenizer')",
    )


def test_composing_model_with_smaller_max_batch_size(tmp_path):
    models = {**COMPOSING, "classifier": COMPOSING["classifier"].replace("max_batch_size: 8", "max_batch_size: 4")}
    assert_problem(
        pipeline_problems(tmp_path, models=models),
        "ensemble pipeline allows maximum batch size 8, but it contains model classifier which only "
        "allows maximum batch size to be 4",
        "step 1 ('classifier')",
    )
    models["classifier"] = COMPOSING["classifier"].replace("max_batch_size: 8", "max_batch_size: 0")
    models["classifier"] = (
        models["classifier"].replace("dims: [ 16 ]", "dims: [ -1, 16 ]").replace("dims: [ 2 ]", "dims: [ -1, 2 ]")
    )
    assert pipeline_problems(tmp_path / "nobatch", models=models) == []  # 0 means "no batching": allowed


def test_input_map_key_not_an_input_of_the_model(tmp_path):
    steps = (PRE, step_text("classifier", {"INPUT_IDS": "ids"}, {"logits": "logits"}), POST)
    problems = pipeline_problems(tmp_path, steps=steps)
    assert_problem(
        problems,
        "in ensemble pipeline, ensemble tensor ids is mapping to non-existing input INPUT_IDS in model classifier",
        "step 1 ('classifier')",
        "'input_ids'",
    )
    assert_problem(problems, "input input_ids in model classifier is not mapped to any ensemble tensors")


def test_output_map_key_not_an_output_of_the_model(tmp_path):
    steps = (PRE, CLASSIFY, step_text("postprocess", {"LOGITS": "logits"}, {"label": "LABEL"}))
    assert_problem(
        pipeline_problems(tmp_path, steps=steps),
        "ensemble tensor LABEL is mapped from non-existing output label in model postprocess",
        "step 2 ('postprocess')",
    )


def test_tensor_with_two_data_types(tmp_path):
    models = {**COMPOSING, "postprocess": model_text("postprocess", [("LOGITS", "FP16", [2])], [LABEL])}
    assert_problem(
        pipeline_problems(tmp_path, models=models),
        "in ensemble pipeline, ensemble tensor logits: inconsistent data type: TYPE_FP32 is inferred from "
        "model classifier (step 1 ('classifier')) while TYPE_FP16 is inferred from model postprocess "
        "(step 2 ('postprocess'))",
    )


def test_tensor_with_incompatible_shapes(tmp_path):
    models = {**COMPOSING, "postprocess": model_text("postprocess", [("LOGITS", "FP32", [3])], [LABEL])}
    assert_problem(
        pipeline_problems(tmp_path, models=models),
        "ensemble tensor logits: inconsistent shape: [-1,2] is inferred from model classifier",
        "[-1,3] is inferred from model postprocess (step 2 ('postprocess'))",
    )


def test_ensemble_output_shape_checked_against_the_step_writing_it(tmp_path):
    assert_problem(
        pipeline_problems(tmp_path, outputs=(("LABEL", "STRING", [4]),)),
        "ensemble tensor LABEL: inconsistent shape: [-1,4] is inferred from model pipeline",
        "step 2 ('postprocess')",
    )


@pytest.mark.parametrize(
    "extra, words",
    [
        ("instance_group [ { kind: KIND_CPU } ]\n", "instance group should not be specified for ensemble 'pipeline'"),
        ("optimization { input_pinned_memory { enable: true } }\n", "optimization should not be specified"),
        (
            'model_warmup [ { name: "w" batch_size: 1 inputs { key: "TEXT" value { data_type: TYPE_STRING dims: [1] '
            "zero_data: true } } } ]\n",
            "model_warmup can not be specified for ensemble 'pipeline'",
        ),
    ],
)
def test_ensemble_fields_that_belong_to_composing_models(tmp_path, extra, words):
    assert_problem(pipeline_problems(tmp_path, extra=extra), words)


def test_ensemble_with_dynamic_batching_does_not_parse():
    text = ensemble_text("pipeline", [PRE], [TEXT], [LABEL], extra="dynamic_batching { }\n")
    with pytest.raises(TritongenError, match="keep one scheduler"):
        config_from_text(text)


def test_ensemble_platform_without_scheduling():
    config = config_from_text('name: "e"\nplatform: "ensemble"\ndynamic_batching { }\n')
    problems = problems_in_config(config)
    assert_problem(problems, "ensemble scheduling must be set for ensemble e whose platform is ensemble")
    assert_problem(problems, "dynamic_batching should not be specified for ensemble 'e'")


def test_ensemble_with_a_backend():
    config = config_from_text('name: "e"\nplatform: "ensemble"\nbackend: "python"\n')
    assert_problem(
        problems_in_config(config), "Ensemble model 'e' must have platform type 'ensemble' and empty backend type"
    )


def test_ensembles_calling_each_other(tmp_path):
    x, y = ("X", "FP32", [2]), ("Y", "FP32", [2])
    repo = write_repo(
        tmp_path / "repo",
        {
            "loop_a": ensemble_text("loop_a", [step_text("loop_b", {"X": "X"}, {"Y": "Y"})], [x], [y]),
            "loop_b": ensemble_text("loop_b", [step_text("loop_a", {"X": "X"}, {"Y": "Y"})], [x], [y]),
        },
    )
    report = validate_repository(repo)
    assert_problem(
        list(report.problems_by_model["loop_a"]), "circular dependency between ensembles: loop_a -> loop_b -> loop_a"
    )
    assert_problem(
        list(report.problems_by_model["loop_b"]), "circular dependency between ensembles: loop_b -> loop_a -> loop_b"
    )


def test_ensemble_needs_a_version_folder(tmp_path):
    repo = write_repo(
        tmp_path / "repo", {**COMPOSING, "pipeline": ensemble_text("pipeline", [PRE, CLASSIFY, POST], [TEXT], [LABEL])}
    )
    (repo / "pipeline" / "1").rmdir()
    assert_problem(
        list(validate_repository(repo).problems_by_model["pipeline"]),
        "at least one version must be available under the version policy of model 'pipeline'",
    )


def test_step_asking_for_a_missing_version(tmp_path):
    steps = (PRE, step_text("classifier", {"input_ids": "ids"}, {"logits": "logits"}, version=3), POST)
    assert_problem(
        pipeline_problems(tmp_path, steps=steps),
        "ensemble pipeline step 1 ('classifier') asks for version 3 of model 'classifier'",
    )


def test_step_mixing_outputs_of_a_decoupled_and_a_plain_model(tmp_path):
    models = {
        **COMPOSING,
        "streamer": model_text(
            "streamer", [TEXT], [("D", "FP32", [2])], extra="model_transaction_policy { decoupled: true }\n"
        ),
    }
    steps = (
        PRE,
        CLASSIFY,
        POST,
        step_text("streamer", {"TEXT": "TEXT"}, {"D": "d"}),
        step_text("mixer", {"A": "logits", "B": "d"}, {"C": "MIXED"}),
    )
    problems = pipeline_problems(tmp_path, steps=steps, outputs=(LABEL, ("MIXED", "FP32", [2])), models=models)
    assert_problem(
        problems,
        "in ensemble pipeline, step of model 'mixer' receives inputs originated from different decoupled models",
        "step 4 ('mixer')",
    )


# --------------------------------------------------------------------------------------------------------
# One model and its folder


ONNX_MODEL = model_text("net", [("x", "FP32", [3])], [("y", "FP32", [2])], backend="onnxruntime")


def test_syntax_error_names_file_line_and_column():
    text = 'name: "net"\nbackend: "onnxruntime"\ninput [ { name: "x" dims: [ 3, ] } ]\n'
    with pytest.raises(TritongenError) as err:
        config_from_text(text, "repo/net/config.pbtxt")
    assert "repo/net/config.pbtxt:3:" in err.value.problem and err.value.fix


@pytest.mark.parametrize(
    "setting, words",
    [
        ("data_type: 99", "input.data_type is 99, which names no DataType value"),
        ("data_type: -1", "input.data_type is -1, which names no DataType value"),
        ("data_type: 2147483648", "Value out of range: 2147483648"),
    ],
)
def test_an_enum_number_no_name_stands_for_is_one_error_line(tmp_path, setting, words):
    """Each was a ValueError traceback out of validate, verify, serve, infer and deploy."""
    text = ONNX_MODEL.replace("data_type: TYPE_FP32", setting, 1)
    assert text != ONNX_MODEL
    with pytest.raises(TritongenError, match=re.escape(words)) as err:
        config_from_text(text)
    assert "names no DataType" not in words or err.value.fix.startswith("give the enum by one of its names (TYPE_")
    with pytest.raises(TritongenError) as kind:
        config_from_text(ONNX_MODEL + "instance_group [ { kind: 7 } ]\n")
    assert "instance_group.kind is 7, which names no Kind value" in kind.value.problem
    assert "KIND_CPU" in kind.value.fix and "TYPE_" not in kind.value.fix
    repo = write_repo(tmp_path / "repo", {"net": ONNX_MODEL})
    (repo / "net" / "config.pbtxt").write_text(text)
    report = validate_repository(repo)
    assert not report.ok and any(words in p for p in report.problems_by_model["net"]), report
    warm = ONNX_MODEL + (
        'model_warmup [ { name: "w" batch_size: 1 inputs { key: "x" value: { data_type: -1 dims: [3] zero_data: true '
        "} } } ]\n"
    )
    with pytest.raises(TritongenError, match=r"model_warmup.inputs.data_type is -1"):
        config_from_text(warm)


def test_unknown_field_gets_a_spelling_hint():
    with pytest.raises(TritongenError, match=r"config.pbtxt:2:1: .*no field named \"max_batch\""):
        config_from_text('name: "net"\nmax_batch: 8\n')


def test_repository_reports_a_config_that_does_not_parse_as_a_problem(tmp_path):
    repo = write_repo(tmp_path / "repo", {"net": ONNX_MODEL})
    (repo / "net" / "config.pbtxt").write_text('name: "net"\nbackend: "onnxruntime"\nmax_batch_size: eight\n')
    report = validate_repository(repo)
    assert not report.ok
    assert_problem(list(report.problems_by_model["net"]), f"{repo / 'net' / 'config.pbtxt'}:3:")


def test_valid_onnx_model_folder(tmp_path):
    assert check_repository(write_repo(tmp_path / "repo", {"net": ONNX_MODEL})).ok


def test_folder_name_must_equal_model_name(tmp_path):
    repo = write_repo(tmp_path / "repo", {"net": ONNX_MODEL})
    (repo / "net").rename(repo / "network")
    assert_problem(
        list(validate_repository(repo).problems_by_model["network"]),
        "unexpected directory name 'network' for model 'net', directory name must equal model name",
    )


@pytest.mark.parametrize("backend, file", [("onnxruntime", "model.onnx"), ("python", "model.py")])
def test_missing_model_file(tmp_path, backend, file):
    repo = write_repo(tmp_path / "repo", {"net": ONNX_MODEL.replace("onnxruntime", backend)})
    (repo / "net" / "1" / file).unlink()
    assert_problem(
        list(validate_repository(repo).problems_by_model["net"]), f"unable to find 'net/1/{file}' for model 'net'"
    )


def test_onnx_model_may_be_a_folder_holding_model_onnx(tmp_path):
    repo = write_repo(tmp_path / "repo", {"net": ONNX_MODEL})
    (repo / "net" / "1" / "model.onnx").unlink()
    (repo / "net" / "1" / "model.onnx").mkdir()
    assert not validate_repository(repo).ok
    (repo / "net" / "1" / "model.onnx" / "model.onnx").write_bytes(onnx_declaring(config_from_text(ONNX_MODEL)))
    assert validate_repository(repo).ok


def test_version_folder_with_leading_zero(tmp_path):
    repo = write_repo(tmp_path / "repo", {"net": ONNX_MODEL})
    (repo / "net" / "1").rename(repo / "net" / "01")
    problems = list(validate_repository(repo).problems_by_model["net"])
    assert_problem(problems, "version folder '01' of model 'net' is ignored by Triton: it contains leading zeros")
    assert_problem(problems, "at least one version must be available under the version policy of model 'net'")


@pytest.mark.parametrize(
    "folder, problem",
    [
        ("9x", "folder '9x' of model 'net' is read by Triton as version 9 (it reads the sign and leading digits"),
        ("+2", "folder '+2' of model 'net' is read by Triton as version 2"),
        (" 3", "folder ' 3' of model 'net' is read by Triton as version 3"),
        ("-1", "folder '-1' of model 'net' is read by Triton as version -1"),
        ("0x", "version folder '0x' of model 'net' is ignored by Triton: it contains leading zeros"),
        ("x9", "version folder 'x9' of model 'net' is ignored by Triton: it fails to convert to integral number"),
        ("\u00b2", "version folder '\u00b2' of model 'net' is ignored by Triton: it fails to convert"),  # a digit
    ],
)
def test_a_folder_is_judged_as_std_stoll_reads_its_name(tmp_path, folder, problem):
    """Triton's VersionsToLoad: a name of more than one character starting with 0 is ignored, else std::stoll
    reads white space, a sign and the leading ASCII digits; Triton loads version N from N/ (Triton 2.51, for a
    folder 9x: 'loading: tiny:9', then 'Python model file not found in .../tiny/9/model.py')."""
    repo = write_repo(tmp_path / "repo", {"net": ONNX_MODEL})
    (repo / "net" / folder).mkdir()
    problems = list(validate_repository(repo).problems_by_model["net"])
    assert len(problems) == 1, problems
    assert_problem(problems, problem)
    if "read by Triton as version" in problem:
        assert "not from this folder: rename it to" in problems[0] and "fails to convert" not in problems[0]


def test_specific_version_policy_needs_its_folders(tmp_path):
    text = ONNX_MODEL + "version_policy { specific { versions: [ 1, 2 ] } }\n"
    problems = list(validate_repository(write_repo(tmp_path / "repo", {"net": text})).problems_by_model["net"])
    assert problems == ["version 2 is specified for model 'net', but the version directory is not present"]


def test_only_the_versions_the_policy_loads_need_a_model_file(tmp_path):
    repo = write_repo(tmp_path / "repo", {"net": ONNX_MODEL})
    (repo / "net" / "2").mkdir()  # latest version (the default policy loads only it) has no model.onnx
    assert_problem(list(validate_repository(repo).problems_by_model["net"]), "unable to find 'net/2/model.onnx'")
    shutil.move(repo / "net" / "1" / "model.onnx", repo / "net" / "2" / "model.onnx")
    assert validate_repository(repo).ok


def test_backend_inferred_from_the_model_file_like_triton(tmp_path):
    repo = write_repo(tmp_path / "repo", {"net": ONNX_MODEL.replace('backend: "onnxruntime"\n', "")})
    assert_problem(
        list(validate_repository(repo).problems_by_model["net"]), "Could not determine backend for model 'net'"
    )
    declared = onnx_declaring(config_from_text(ONNX_MODEL))
    (repo / "net" / "1" / "model.onnx").write_bytes(declared)  # Triton infers the backend from this file
    assert validate_repository(repo).ok


def test_unknown_platform_gets_a_hint():
    problems = problems_in_config(
        config_from_text(ONNX_MODEL.replace('backend: "onnxruntime"', 'platform: "onnxruntime"'))
    )
    assert_problem(problems, "unexpected platform type 'onnxruntime' for net", 'backend: "onnxruntime"')


def test_platform_and_backend_that_disagree():
    text = ONNX_MODEL.replace('backend: "onnxruntime"', 'backend: "onnxruntime"\nplatform: "tensorrt_plan"')
    assert_problem(
        problems_in_config(config_from_text(text)),
        "unexpected 'platform' and 'backend' pair, got:tensorrt_plan, onnxruntime",
    )


def test_gpu_ids_checked_against_the_target_host():
    config = config_from_text(ONNX_MODEL + "instance_group [ { kind: KIND_GPU gpus: [ 1 ] } ]\n")
    assert problems_in_config(config) == []
    assert problems_in_config(config, gpu_count=2) == []
    assert_problem(
        problems_in_config(config, gpu_count=1),
        "instance group net_0 of model net specifies invalid or unsupported gpu id 1",
        "are: 0",
    )
    assert_problem(problems_in_config(config, gpu_count=0), "has kind KIND_GPU but no GPUs are available")


def test_tensorrt_instances_must_be_on_gpu():
    text = ONNX_MODEL.replace("onnxruntime", "tensorrt") + "instance_group [ { kind: KIND_CPU } ]\n"
    assert_problem(
        problems_in_config(config_from_text(text)),
        "of model net has kind KIND_CPU but TensorRT models run only on GPUs",
    )


def test_duplicate_input_name():
    text = model_text("net", [("x", "FP32", [3]), ("x", "FP32", [3])], [("y", "FP32", [2])])
    assert problems_in_config(config_from_text(text)) == ["model input 'x' is declared more than once for net"]


def test_preferred_batch_size_above_max_batch_size():
    text = ONNX_MODEL + "dynamic_batching { preferred_batch_size: [ 4, 16 ] }\n"
    assert_problem(
        problems_in_config(config_from_text(text)),
        "dynamic batching preferred size must be <= max batch size for net (16 > 8)",
    )


def test_onnxruntime_tensorrt_accelerator_keys_are_whitelisted():
    accelerator = (
        'optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "tensorrt" '
        'parameters { key: "%s" value: "%s" } } ] } }\n'
    )
    assert problems_in_config(config_from_text(ONNX_MODEL + accelerator % ("precision_mode", "FP16"))) == []
    assert_problem(
        problems_in_config(config_from_text(ONNX_MODEL + accelerator % ("precision", "FP16"))),
        "unknown parameter 'precision' is provided for TensorRT Execution Accelerator of net",
    )
    assert_problem(
        problems_in_config(config_from_text(ONNX_MODEL + accelerator % ("precision_mode", "fp8"))),
        "unsupported precision mode 'fp8'",
    )


def warmup_text(dims: str, file: str = "x.bin") -> str:
    return (
        f'model_warmup [ {{ name: "w" batch_size: 1 inputs {{ key: "x" value {{ data_type: TYPE_FP32 '
        f'dims: [ {dims} ] input_data_file: "{file}" }} }} }} ]\n'
    )


@pytest.mark.parametrize("max_batch_size, batch_size, ok", [(8, 8, True), (8, 9, False), (0, 1, True), (0, 2, False)])
def test_warmup_batch_size_is_bounded_by_max_batch_size_as_triton_fails_the_load(max_batch_size, batch_size, ok):
    # Triton 2.51, measured: a sample of batch 64 for max_batch_size 8 fails the load ("failed to run warmup sample
    # 'sample_request': batch size 64 for 'tiny_0_0', max allowed is 8"); batch 2 for max_batch_size 0 likewise,
    # batch 1 there loads
    text = model_text("net", [("x", "FP32", [3])], [("y", "FP32", [2])], "onnxruntime", max_batch_size)
    text += (
        warmup_text("3")
        .replace("batch_size: 1", f"batch_size: {batch_size}")
        .replace('input_data_file: "x.bin"', "zero_data: true")
    )
    problems = problems_in_config(config_from_text(text))
    if ok:
        assert problems == []
    else:
        assert_problem(problems, f"batch size {batch_size} for 'net', max allowed is {max_batch_size}", "at most")


def test_warmup_file_must_hold_enough_bytes(tmp_path):
    repo = write_repo(tmp_path / "repo", {"net": ONNX_MODEL + warmup_text("3")})
    assert_problem(
        list(validate_repository(repo).problems_by_model["net"]),
        "unable to find warmup data file 'warmup/x.bin' for input 'x'",
    )
    (repo / "net" / "warmup").mkdir()
    (repo / "net" / "warmup" / "x.bin").write_bytes(b"\0" * 8)
    assert_problem(
        list(validate_repository(repo).problems_by_model["net"]),
        "warmup setting expects 12 bytes, but the data provided from x.bin only has 8 bytes",
    )
    (repo / "net" / "warmup" / "x.bin").write_bytes(b"\0" * 12)
    assert validate_repository(repo).ok


@pytest.mark.parametrize(
    "dims, words",
    [
        ("-1", "warmup setting expects all variable-size dimensions are specified for input 'x'"),
        ("4", "unexpected shape for input 'x' for model 'net'. Expected [3], got [4]"),
    ],
)
def test_warmup_sample_shape(dims, words):
    assert_problem(problems_in_config(config_from_text(ONNX_MODEL + warmup_text(dims))), words)


def test_label_file_must_exist(tmp_path):
    text = ONNX_MODEL.replace("dims: [ 2 ] }", 'dims: [ 2 ] label_filename: "labels.txt" }')
    repo = write_repo(tmp_path / "repo", {"net": text})
    assert_problem(
        list(validate_repository(repo).problems_by_model["net"]),
        "unable to find label file 'labels.txt' for output 'y' in model 'net'",
    )
    (repo / "net" / "labels.txt").write_text("cat\ndog\n")
    assert validate_repository(repo).ok


# --------------------------------------------------------------------------------------------------------
# Repository entry points


def test_check_repository_raises_with_every_problem_in_details(tmp_path):
    repo = write_repo(
        tmp_path / "repo",
        {
            "net": ONNX_MODEL.replace("max_batch_size: 8", "max_batch_size: -1"),
            "other": model_text("other", [("a", "FP32", [0])], [("b", "FP32", [1])]),
        },
    )
    with pytest.raises(TritongenError) as err:
        check_repository(repo)
    assert err.value.problem == f"2 problems in model repository {repo}"
    assert err.value.fix
    assert err.value.details.splitlines() == [
        "net: 'max_batch_size' must be non-negative value for net",
        "other: model input 'a' dimension must be integer >= 1, or -1 to indicate a variable-size dimension for other",
    ]


def test_report_summary_lists_problems(tmp_path):
    report = ValidationReport(tmp_path, {"a": (), "b": ("bad thing",)})
    assert not report.ok and report.problem_count == 1
    assert report.summary().splitlines() == [
        f"model repository {tmp_path}: 1 problem(s) in 2 model(s)",
        "  b: bad thing",
    ]


@pytest.mark.parametrize(
    "setup, words",
    [
        (lambda repo: None, "does not exist"),
        (lambda repo: repo.write_text("x"), "is a file, not a folder"),
        (lambda repo: repo.mkdir(), "holds no model folders"),
        (lambda repo: (repo / "net").mkdir(parents=True), "has no config.pbtxt"),
    ],
)
def test_repository_that_cannot_be_validated(tmp_path, setup, words):
    repo = tmp_path / "repo"
    setup(repo)
    with pytest.raises(TritongenError, match=words) as err:
        validate_repository(repo)
    assert err.value.fix


def test_a_local_build_is_checked_against_the_graph_its_model_py_runs(tmp_path):
    """`build --target local` writes tritongen's ONNX Runtime runner as model.py: it feeds the graph the config's
    inputs and asks it for the config's outputs by name, so a config edited to another name loads but fails every
    request. validate names each such mismatch; a model.py that is not the runner is not judged."""
    from tests import factories
    from tritongen.build import build
    from tritongen.spec import build_spec_from_options
    from tritongen.validate import validate_repository

    model = factories.save_model(
        factories.make_dynamic_seq(), tmp_path / "seq.pt", "torchscript-trace", factories.dynamic_seq_inputs()
    )
    repo = tmp_path / "repo"
    build(build_spec_from_options(model, name="seq", inputs=["x:FP32:-1,8"], max_batch_size=4, repo=repo))
    assert validate_repository(repo).ok
    config = repo / "seq" / "config.pbtxt"
    text = config.read_text()
    (output,) = re.findall(r'output \[\s*\{\s*name: "([^"]+)"', text)
    config.write_text(text.replace(f'name: "{output}"', 'name: "renamed"').replace("TYPE_FP32", "TYPE_FP16", 1))
    problems = validate_repository(repo).problems_by_model["seq"]
    assert any(
        "output 'renamed' of model 'seq' is not an output of 1/model.onnx" in p and f"(its outputs: {output})" in p
        for p in problems
    ), problems
    assert any(
        "input 'x' of model 'seq' is TYPE_FP16 in config.pbtxt but TYPE_FP32 in 1/model.onnx" in p for p in problems
    )
    model_py = repo / "seq" / "1" / "model.py"
    model_py.write_text(model_py.read_text() + "\n# changed by hand: not judged\n")
    assert not any("1/model.onnx" in p for p in validate_repository(repo).problems_by_model["seq"])


@pytest.fixture(scope="module")
def mlp_local_repo(tmp_path_factory) -> Path:
    """The newcomer's repro: Sequential(Linear(16, 4)) traced, built with `--target local`, max_batch_size 4 (graph
    x [batch, 16] -> output [batch, 4], the batch dim named symbolically), and a scalar-per-item model beside it
    (x [batch, 16] -> output [batch], which tritongen writes as output dims [1])."""
    import torch

    from tests import factories
    from tritongen.api import build

    root = tmp_path_factory.mktemp("mlp_local")
    repo = root / "repo"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        mlp = torch.nn.Sequential(torch.nn.Linear(16, 4)).eval()
    example = (torch.randn(2, 16),)
    model = factories.save_model(mlp, root / "mlp.pt", "torchscript-trace", example)
    build(model, name="mlp", inputs=["x:FP32:16"], max_batch_size=4, target="local", repo=repo)

    class SumOverLast(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum(-1)

    summed = factories.save_model(SumOverLast(), root / "sum.pt", "torchscript-trace", example)
    build(summed, name="sum", inputs=["x:FP32:16"], max_batch_size=4, target="local", repo=repo)
    return repo


def _edited_mlp_repo(source: Path, tmp_path: Path, old: str, new: str, model: str = "mlp") -> Path:
    """A copy of ``source`` with the first ``old`` in the model's config.pbtxt replaced, its warm-up section removed
    (a warm-up sample of the old dims would be named too)."""
    repo = tmp_path / "repo"
    shutil.copytree(source, repo)
    config = repo / model / "config.pbtxt"
    text = config.read_text()
    assert old in text
    text = re.sub(r"model_warmup \[.*?\n\]\n", "", text.replace(old, new, 1), flags=re.S)
    assert "model_warmup" not in text
    config.write_text(text)
    return repo


def test_a_local_build_and_its_scalar_per_item_output_validate(mlp_local_repo):
    """Output dims [1] over a graph output [batch] is how tritongen writes a scalar per item: not refused."""
    assert validate_repository(mlp_local_repo).ok
    assert "dims: [ 1 ]" in (mlp_local_repo / "sum" / "config.pbtxt").read_text()


@pytest.mark.parametrize(
    "old, new, expected",
    [
        (
            "dims: [ 16 ]",
            "dims: [ 17 ]",
            "input 'x' of model 'mlp' has dims [17] in config.pbtxt (shape [-1,17] with the batch dim of "
            "max_batch_size > 0) but 1/model.onnx takes shape [-1,16] (-1: any size): model.py feeds ONNX Runtime the "
            "request's tensor as Triton shapes it by the config, so ONNX Runtime refuses every request: set dims: "
            "[ 16 ]",
        ),
        (
            "dims: [ 16 ]",
            "dims: [ 16, 1 ]",
            "input 'x' of model 'mlp' has dims [16,1] in config.pbtxt (shape [-1,16,1] with the batch dim of "
            "max_batch_size > 0) but 1/model.onnx takes shape [-1,16] (-1: any size): model.py feeds ONNX Runtime the "
            "request's tensor as Triton shapes it by the config, so ONNX Runtime refuses every request: set dims: "
            "[ 16 ]",
        ),
        (
            "dims: [ 16 ]",
            "dims: [ 16 ] reshape: { shape: [ 2, 8 ] }",
            "input 'x' of model 'mlp' has reshape [2,8] in config.pbtxt (shape [-1,2,8] with the batch dim of "
            "max_batch_size > 0) but 1/model.onnx takes shape [-1,16] (-1: any size): model.py feeds ONNX Runtime the "
            "request's tensor as Triton shapes it by the config, so ONNX Runtime refuses every request: set reshape: "
            "{ shape: [ 16 ] }",
        ),
        (
            "dims: [ 4 ]",
            "dims: [ 5 ]",
            "output 'output' of model 'mlp' has dims [5] in config.pbtxt (shape [-1,5] with the batch dim of "
            "max_batch_size > 0) but 1/model.onnx computes shape [-1,4] (-1: any size): model.py returns what ONNX "
            "Runtime computes, so every response would contradict the config: set dims: [ 4 ]",
        ),
    ],
    ids=["input-dim", "input-rank", "input-reshape", "output-dim"],
)
def test_a_local_builds_dims_are_checked_against_the_graph_its_model_py_runs(
    mlp_local_repo, tmp_path, old, new, expected
):
    """The runner feeds ONNX Runtime each request as Triton shaped it by the config (batch dim first): config dims
    the graph does not take loaded in Triton and then failed every request ("Got invalid dimensions for input x"),
    while validate said the model was valid."""
    repo = _edited_mlp_repo(mlp_local_repo, tmp_path, old, new)
    assert validate_repository(repo).problems_by_model["mlp"] == (expected,)


@pytest.mark.parametrize(
    "model, old, new",
    [
        ("mlp", "dims: [ 16 ]", "dims: [ -1 ]"),  # a variable config dim: a request of 16 still runs
        ("mlp", "dims: [ 16 ]", "dims: [ 2, 8 ] reshape: { shape: [ 16 ] }"),  # Triton hands the runner [batch, 16]
        ("mlp", "dims: [ 4 ]", "dims: [ -1 ]"),
        # the scalar per item: built with an empty reshape; dims [1] alone is fine for the runner too (hand-edited)
        ("sum", "    reshape: { shape: [ ] }\n", ""),
    ],
    ids=["variable-input", "input-reshaped-to-the-graph", "variable-output", "scalar-output-without-reshape"],
)
def test_local_dims_that_fit_the_graph_are_not_refused(mlp_local_repo, tmp_path, model, old, new):
    repo = _edited_mlp_repo(mlp_local_repo, tmp_path, old, new, model)
    assert validate_repository(repo).problems_by_model[model] == ()


def test_a_local_model_without_batching_over_a_batched_graph_is_named(mlp_local_repo, tmp_path):
    """max_batch_size 0: Triton hands the runner [16], the graph takes [batch, 16] (the symbolic batch dim is -1)."""
    repo = _edited_mlp_repo(mlp_local_repo, tmp_path, "max_batch_size: 4", "max_batch_size: 0", "sum")
    config = repo / "sum" / "config.pbtxt"
    text = re.sub(r"dynamic_batching \{.*?\n\}\n", "", config.read_text(), flags=re.S)
    config.write_text(text.replace("    reshape: { shape: [ ] }\n", ""))  # no empty reshape without batching
    assert validate_repository(repo).problems_by_model["sum"] == (
        "input 'x' of model 'sum' has dims [16] in config.pbtxt but 1/model.onnx takes shape [-1,16] (-1: any "
        "size): model.py feeds ONNX Runtime the request's tensor as Triton shapes it by the config, so ONNX Runtime "
        "refuses every request: set dims: [ -1, 16 ]",
    )  # not the output: a graph output [-1] takes the config's [1]


def test_the_repro_fails_validate_with_one_line(mlp_local_repo, tmp_path, capsys):
    """`tritongen validate` on the newcomer's repro: not '1 model(s) valid', but one line naming model, tensor,
    config dims and graph dims."""
    from tritongen.cli import main

    repo = _edited_mlp_repo(mlp_local_repo, tmp_path, "dims: [ 16 ]", "dims: [ 17 ]")
    shutil.rmtree(repo / "sum")
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", str(repo)])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    named = [line for line in err.splitlines() if line.startswith("mlp: ")]
    assert len(named) == 1, err
    assert all(w in named[0] for w in ("'x'", "'mlp'", "dims [17]", "shape [-1,16]", "set dims: [ 16 ]")), named


@pytest.fixture(scope="module")
def sequence_local_repo(tmp_path_factory) -> Path:
    """A stateful model built with `--target local`: tritongen's sequence runner as model.py, running model.onnx
    (x, acc -> y, acc_out) with the state pair acc:acc_out kept by the runner, so config.pbtxt lists x and y only."""
    from tests import factories
    from tritongen.api import build

    root = tmp_path_factory.mktemp("sequence_local")
    model = factories.save_model(factories.Accumulator(), root / "acc.pt", "torchscript")
    repo = root / "repo"
    build(
        model,
        name="acc",
        inputs=["x:FP32:4", "acc:FP32:4"],
        outputs=["y", "acc_out"],
        states=["acc:acc_out"],
        target="local",
        repo=repo,
    )
    return repo


def _edited_sequence_repo(source: Path, tmp_path: Path, old: str, new: str) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(source, repo)
    config = repo / "acc" / "config.pbtxt"
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))
    return repo


def test_a_local_sequence_build_validates(sequence_local_repo):
    """The sequence runner feeds the state input acc itself: the config need not list it."""
    assert validate_repository(sequence_local_repo).ok
    assert (sequence_local_repo / "acc" / "1" / "model.py").read_text().startswith('"""Triton Python-backend model')


@pytest.mark.parametrize(
    "old, new, expected",
    [
        (
            'name: "y"',
            'name: "z"',
            [
                "output 'z' of model 'acc' is not an output of 1/model.onnx (its outputs: y, acc_out): model.py asks "
                "ONNX Runtime for the config's outputs by name, so every request would fail: rename it in config.pbtxt"
            ],
        ),
        (
            'name: "x"',
            'name: "w"',
            [
                "input 'w' of model 'acc' is not an input of 1/model.onnx (its inputs: x, acc): model.py feeds ONNX "
                "Runtime the config's inputs by name, so every request would fail: rename it in config.pbtxt",
                # acc is not named: the runner feeds it from the state it keeps
                "1/model.onnx of model 'acc' needs inputs the config does not give (x): model.py would feed ONNX "
                "Runtime without them, and every request would fail: add them to config.pbtxt's inputs",
            ],
        ),
        (
            "data_type: TYPE_FP32",
            "data_type: TYPE_FP16",
            [
                "input 'x' of model 'acc' is TYPE_FP16 in config.pbtxt but TYPE_FP32 in 1/model.onnx: ONNX Runtime "
                "refuses it on every request: set data_type: TYPE_FP32"
            ],
        ),
        (
            "dims: [ 4 ]",
            "dims: [ 3 ]",
            [
                "input 'x' of model 'acc' has dims [3] in config.pbtxt (shape [-1,3] with the batch dim of "
                "max_batch_size > 0) but 1/model.onnx takes shape [-1,4] (-1: any size): model.py feeds ONNX Runtime "
                "the request's tensor as Triton shapes it by the config, so ONNX Runtime refuses every request: set "
                "dims: [ 4 ]"
            ],
        ),
    ],
    ids=["output-renamed", "input-renamed", "input-type", "input-dims"],
)
def test_a_local_sequence_build_is_checked_against_the_graph_its_model_py_runs(
    sequence_local_repo, tmp_path, old, new, expected
):
    """Each edit loads in Triton but fails every request in the sequence runner (ONNX Runtime: "Invalid output name",
    "Required inputs (['x']) are missing", "Unexpected input data type")."""
    repo = _edited_sequence_repo(sequence_local_repo, tmp_path, old, new)
    assert list(validate_repository(repo).problems_by_model["acc"]) == expected


def test_a_local_sequence_build_without_its_state_pairs_is_named_once(sequence_local_repo, tmp_path):
    """Without tritongen_states the sequence runner cannot load; its state input is not asked for as a config input."""
    repo = _edited_sequence_repo(sequence_local_repo, tmp_path, 'key: "tritongen_states"', 'key: "other"')
    problems = validate_repository(repo).problems_by_model["acc"]
    assert problems == (
        "1/model.py of model 'acc' is tritongen's sequence runner, which reads its state pairs from the config's "
        "tritongen_states parameter, but config.pbtxt lacks it, so Triton cannot load the model: rebuild it with "
        "tritongen build",
    ), problems


def test_a_state_tensor_the_sequence_runners_graph_lacks_is_named_once(sequence_local_repo, tmp_path):
    """State tensors are judged by the state checks; the runner check neither names them again nor asks the config
    for the graph input (acc) the broken pair should name."""
    repo = _edited_sequence_repo(sequence_local_repo, tmp_path, 'string_value: "acc:acc_out"', 'string_value: "h:h2"')
    assert validate_repository(repo).problems_by_model["acc"] == (
        "state input 'h' of model acc is not an input of 1/model.onnx (its inputs: x, acc): name one of them in the "
        "state pair (tritongen build --state INPUT:OUTPUT)",
        "state output 'h2' of model acc is not an output of 1/model.onnx (its outputs: y, acc_out): name one of them "
        "in the state pair (tritongen build --state INPUT:OUTPUT)",
    )


@pytest.mark.parametrize("pairs", ["", ",", "acc", "acc:acc_out:x", "acc:", "acc:acc_out,y"])
def test_a_sequence_runners_state_pairs_that_it_cannot_read_are_named(sequence_local_repo, tmp_path, pairs):
    """The sequence runner splits tritongen_states into INPUT:OUTPUT pairs and fails every request where there is
    none (its first state is read) or a pair is not two names (it unpacks each pair)."""
    repo = _edited_sequence_repo(
        sequence_local_repo, tmp_path, 'string_value: "acc:acc_out"', f'string_value: "{pairs}"'
    )
    problems = validate_repository(repo).problems_by_model["acc"]
    assert any(
        p.startswith("model acc's tritongen_states parameter '")
        and p.endswith(
            "is not a list of INPUT:OUTPUT state pairs (the sequence runner fails every request): rebuild it with "
            "tritongen build --state INPUT:OUTPUT"
        )
        for p in problems
    ), problems


def test_a_hand_edited_sequence_runner_is_not_judged(sequence_local_repo, tmp_path):
    repo = _edited_sequence_repo(sequence_local_repo, tmp_path, 'name: "y"', 'name: "z"')
    model_py = repo / "acc" / "1" / "model.py"
    model_py.write_text(model_py.read_text() + "\n# changed by hand: not judged\n")
    assert validate_repository(repo).ok


def test_an_unreadable_graph_under_the_sequence_runner_is_named_once(sequence_local_repo, tmp_path):
    """The runner check and the state checks both read model.onnx: the file that cannot be read is named once."""
    repo = _edited_sequence_repo(sequence_local_repo, tmp_path, 'name: "y"', 'name: "y"')
    (repo / "acc" / "1" / "model.onnx").write_bytes(b"not an ONNX model")
    problems = validate_repository(repo).problems_by_model["acc"]
    assert len(problems) == 1 and problems[0].startswith("1/model.onnx of model 'acc' cannot be read ("), problems


def test_a_config_over_the_bound_is_one_problem_and_not_read_whole(tmp_path):
    """A 100 MB config.pbtxt of parameters took 15 s and 400 MB to validate: it is refused after 4 MiB + 1 bytes."""
    from tritongen.layout import MAX_CONFIG_BYTES

    repo = write_repo(tmp_path / "repo", {"net": ONNX_MODEL})
    with (repo / "net" / "config.pbtxt").open("a") as fh:
        fh.write(("# padding\n" * 1024) * (MAX_CONFIG_BYTES // 10240 + 1))  # a valid config, only longer
    problems = list(validate_repository(repo).problems_by_model["net"])
    assert len(problems) == 1 and "config.pbtxt is over 4 MiB, far more than a model configuration holds" in problems[0]


def test_a_config_that_is_not_utf8_is_one_error(tmp_path):
    from tritongen.validate import config_from_file

    path = tmp_path / "config.pbtxt"
    path.write_bytes(ONNX_MODEL.encode() + b"# \xff\xfe\n")
    with pytest.raises(TritongenError, match=r"config.pbtxt is not UTF-8 text"):
        config_from_file(path)


def test_a_large_model_py_is_not_read_whole(tmp_path):
    """validate compares a Python model's model.py with tritongen's runners: it reads no more than a runner holds."""
    import tracemalloc

    repo = write_repo(tmp_path / "repo", {"net": ONNX_MODEL.replace("onnxruntime", "python")})
    (repo / "net" / "1" / "model.onnx").write_bytes(onnx_declaring(config_from_text(ONNX_MODEL)))
    with (repo / "net" / "1" / "model.py").open("r+b") as fh:
        fh.truncate(256 << 20)  # sparse: 256 MiB of NULs after the stub
    tracemalloc.start()
    try:
        validate_repository(repo)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak


@pytest.mark.parametrize("name", ["x$(id>pwned)", "my model", "a;b", "tab\there"])
def test_a_python_model_name_a_shell_would_split_or_run_is_a_problem(name):
    # Triton 2.51's Python backend starts the stub through bash -c with the model path unquoted: measured, a model
    # folder named x$(id>pwned) wrote the file in the server's folder; one named with a space never loaded
    text = model_text(name, [("x", "FP32", [3])], [("y", "FP32", [2])])
    assert_problem(problems_in_config(config_from_text(text)), f"of Python-backend model '{name}' holds", "rename")
    other = model_text(name, [("x", "FP32", [3])], [("y", "FP32", [2])], backend="onnxruntime")
    assert not [p for p in problems_in_config(config_from_text(other)) if "Python-backend" in p]


def test_an_instance_group_name_a_shell_would_run_is_a_problem_for_every_stub_backend():
    """The stub's instance is <group name>_<n>, in the shell command Triton starts it with: a group named
    g$(id>...) ran the command in the server (validate, sign and verify passed). A Python-based backend (vllm:
    a model.py in its folder) starts a stub the same way; ONNX Runtime's instances are threads."""
    group = 'instance_group [ { name: "g$(id>/tmp/x)" count: 1 kind: KIND_CPU } ]\n'
    for backend in ("python", "vllm"):
        text = model_text("net", [("x", "FP32", [3])], [("y", "FP32", [2])], backend=backend, extra=group)
        assert_problem(problems_in_config(config_from_text(text)), "instance group name 'g$(id>/tmp/x)'", "rename")
    plain = model_text("net", [("x", "FP32", [3])], [("y", "FP32", [2])], extra=group.replace("$(id>/tmp/x)", "_a"))
    assert problems_in_config(config_from_text(plain)) == []
    native = model_text("net", [("x", "FP32", [3])], [("y", "FP32", [2])], backend="onnxruntime", extra=group)
    assert not [p for p in problems_in_config(config_from_text(native)) if "Python-backend" in p]
    # PyTorch 2 models run in the pytorch backend's Python stub (runtime: "model.py"): started the same way
    torch2 = model_text("net", [("x", "FP32", [3])], [("y", "FP32", [2])], backend="pytorch", extra=group)
    assert_problem(problems_in_config(config_from_text(torch2 + 'runtime: "model.py"\n')), "instance group", "rename")


def test_a_python_model_file_name_a_shell_would_split_is_a_problem():
    text = model_text("net", [("x", "FP32", [3])], [("y", "FP32", [2])], extra='default_model_filename: "m y.py"\n')
    assert_problem(problems_in_config(config_from_text(text)), "model file name 'm y.py'", "rename")
    assert problems_in_config(config_from_text(text.replace("m y.py", "my.py"))) == []


def test_an_instance_count_past_the_bound_is_a_problem():
    # measured: count 2147483647 passed validate, and serve forked 133 stubs and took 8 GB in 15 s before it was
    # stopped
    text = ONNX_MODEL + "instance_group [ { kind: KIND_CPU count: %d } ]\n"
    assert_problem(problems_in_config(config_from_text(text % 2147483647)), "asks for 2147483647 instances", "256")
    assert problems_in_config(config_from_text(text % 256)) == []


@pytest.mark.parametrize(
    "setting, words",
    [
        (
            'model_warmup [{ name: "w" batch_size: 1 inputs { key: "x" value { data_type: TYPE_FP32 dims: [1] '
            'input_data_file: "x\\000y" } } }]',
            "warmup data file 'x\\x00y' for input 'x' is no file name",
        ),
        ('output [{ name: "z" data_type: TYPE_FP32 dims: [1] label_filename: "l\\000" }]', "label file 'l\\x00'"),
    ],
)
def test_a_file_name_holding_a_nul_is_a_problem_not_a_traceback(tmp_path, setting, words):
    """Found by an attacker: resolving the name raised ValueError (embedded null byte) in validate, and in serve,
    which validates first."""
    from tritongen.validate import validate_repository

    model = tmp_path / "repo" / "hand"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    io = 'input [{ name: "x" data_type: TYPE_FP32 dims: [1] }]\n'
    io += "" if "label_filename" in setting else 'output [{ name: "z" data_type: TYPE_FP32 dims: [1] }]\n'
    (model / "config.pbtxt").write_text('name: "hand"\nbackend: "python"\nmax_batch_size: 0\n' + io + setting + "\n")
    report = validate_repository(tmp_path / "repo")
    assert any(words in p for p in report.problems_by_model["hand"]), report.problems_by_model
