"""Reading calibration data: every size bounded, every bad file one error (tritongen/precision/calibration.py)."""

from __future__ import annotations

import json
import os
import tracemalloc

import numpy as np
import pytest

from tritongen.errors import TritongenError
from tritongen.precision.calibration import MAX_TEXT_BYTES, _looks_like_text, calibration_data_from_path
from tritongen.spec import TensorSpec

X = (TensorSpec("x", "FP32", (3, 8, 8)),)
IDS = (TensorSpec("input_ids", "INT64", (-1,)),)


def _sparse(path, size_bytes: int, head: bytes = b"") -> None:
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(size_bytes)  # takes no disk space


def test_sniffing_whether_a_file_is_text_reads_only_its_head(tmp_path):
    """A file of no known suffix is sniffed: a 256 MiB one (sparse, no disk) costs a few KiB, not its size."""
    big = tmp_path / "samples.bin"
    _sparse(big, 256 << 20, head=b"PK\x03\x04")
    tracemalloc.start()
    try:
        assert _looks_like_text(big) is False
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < 1 << 20
    text = tmp_path / "sentences"
    text.write_text("a sentence\n" * 10)
    assert _looks_like_text(text) is True


def test_a_calibration_text_file_over_the_limit_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "lines.txt"
    _sparse(big, MAX_TEXT_BYTES + 1)
    with pytest.raises(TritongenError, match=r"calibration text file .*lines\.txt cannot be read \(it is over 64 MiB"):
        calibration_data_from_path(big, IDS, True, tokenizer=tmp_path)
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    with pytest.raises(TritongenError, match="not a regular file"):
        calibration_data_from_path(fifo, IDS, True, tokenizer=tmp_path)


def _images(folder, count: int = 24) -> None:
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")


@pytest.mark.parametrize(
    "config, words",
    [
        ({"image_mean": [0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}, "image_mean is .* not one or three finite numbers"),
        ({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.0, 0.5]}, "image_std is .* finite numbers above 0"),
        ({"image_mean": ["a", "b", "c"]}, "image_mean is"),
        ({"image_mean": {"r": 1}}, "image_mean is"),
        ([0.5, 0.5, 0.5], "is not a JSON object"),
    ],
)
def test_a_preprocessor_config_with_bad_normalisation_is_one_error(tmp_path, config, words):
    _images(tmp_path / "images")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(TritongenError, match=words):
        calibration_data_from_path(tmp_path / "images", X, True, 8, tokenizer=hf)


def test_image_normalisation_from_the_preprocessor_config(tmp_path):
    _images(tmp_path / "images")
    plain = calibration_data_from_path(tmp_path / "images", X, True, 8).calib[0]["x"]
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5, 0.25, 0.0], "image_std": 0.5}))
    normalised = calibration_data_from_path(tmp_path / "images", X, True, 8, tokenizer=hf).calib[0]["x"]
    mean = np.array([0.5, 0.25, 0.0], np.float32).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(normalised, (plain - mean) / 0.5, rtol=1e-6)
    (hf / "preprocessor_config.json").write_bytes(b"{" + b" " * (2 << 20) + b"}")
    with pytest.raises(TritongenError, match="preprocessor_config.json cannot be read \\(it is over 1 MiB"):
        calibration_data_from_path(tmp_path / "images", X, True, 8, tokenizer=hf)
