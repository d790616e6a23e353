"""Calibration data: the user's samples -> calibration batches and held-out evaluation batches.

``--calib-data`` may be an ``.npz`` file or a folder of them (one array per model input, batch axis first
for batching models, or one sample per file without batching), or a text file with one sentence per line
for models with a tokenizer (``--tokenizer DIR``, a Hugging Face tokenizer folder; UTF-8, lines split on ``\n``
alone), or a folder of images for a model with one image input ``[3, H, W]``, H and W fixed (with a Hugging Face
``preprocessor_config.json``, through the served pre-processing step's own code: its resize, crop, rescale and
normalisation; without one, resized to H x W, RGB, scaled to [0, 1]). Every 4th sample is held out: the accuracy
guard measures on samples that calibration never saw.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..dtypes import numpy_dtype
from ..errors import TritongenError
from ..files import read_problem, regular_bytes, size_text, text_lines
from ..spec import TensorSpec

Arrays = dict[str, np.ndarray]
MIN_CALIB_SAMPLES = 16
MIN_EVAL_SAMPLES = 4
HOLDOUT_EVERY = 4  # every 4th sample is held out for the accuracy guard
# samples read from --calib-data (rows of its files, its files, its lines): a few hundred calibrate well; each is
# kept as arrays of its own, so a file of 10**8 tiny (or empty) rows within the byte bound would fill the memory
MAX_CALIB_SAMPLES = 100_000
DEFAULT_MAX_TOKENS = 128
TEXT_SUFFIXES = (".txt", ".text", ".lines")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
MAX_TEXT_BYTES = 64 << 20  # a calibration text file: a few hundred sentences are plenty, a million still fit
MAX_CALIB_BYTES = 2 << 30  # the arrays of all calibration samples together, as read


@dataclass(frozen=True)
class CalibrationData:
    """Batches (input name -> array) for calibration and for the accuracy guard, never overlapping."""

    calib: tuple[Arrays, ...]
    eval: tuple[Arrays, ...]
    source: str  # "npz" or "text"
    calib_samples: int
    eval_samples: int
    digest: str  # sha256 of the calibration batches (names, dtypes, shapes, bytes)
    batched: bool = True  # batches carry a leading batch axis (else one sample per batch)

    def rows(self, batch: Arrays) -> int:
        return next(iter(batch.values())).shape[0] if self.batched else 1

    @property
    def uniform(self) -> bool:
        """Whether every calibration batch has the same shapes (histogram calibrators need that)."""
        shapes = {tuple((k, a.shape) for k, a in sorted(b.items())) for b in self.calib}
        return len(shapes) <= 1

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "calib_samples": self.calib_samples,
            "eval_samples": self.eval_samples,
            "calib_sha256": self.digest,
        }


def digest_of(batches: Sequence[Arrays]) -> str:
    h = hashlib.sha256()
    for b in batches:
        for name in sorted(b):
            a = np.ascontiguousarray(b[name])
            h.update(f"{name}:{a.dtype}:{a.shape};".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def _check_finite(arrays: Arrays, where: str) -> None:
    for name, a in arrays.items():
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            raise TritongenError(
                f"{where}: input '{name}' holds NaN or Inf",
                "remove or fix that sample; calibration needs finite values",
            )


def _items_from_npz(
    path: Path, inputs: tuple[TensorSpec, ...], batched: bool, preprocessor: Path | None = None
) -> list[Arrays]:
    from ..npz import arrays_from_npz
    from ..samples import check_arrays_match_spec

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".npz" and p.is_file())
        if not files:
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if images:
                _check_count(len(images), path)
                return _items_from_images(path, images, inputs, batched, preprocessor)
        if not files:
            raise TritongenError(
                f"calibration folder {path} holds no .npz files or images",
                "put one .npz per sample (or per batch) in it, one array "
                "per model input (or image files for an image model)",
            )
    else:
        files = [path]
    _check_count(len(files), path)
    items: list[Arrays] = []
    total = 0
    for f in files:
        arrays = arrays_from_npz(f)
        total = _check_total(total + sum(a.nbytes for a in arrays.values()), path)
        check_arrays_match_spec(arrays, inputs, batched, f"calibration file {f.name}")
        arrays = {t.name: arrays[t.name] for t in inputs}
        _check_finite(arrays, f"calibration file {f.name}")
        if not batched:
            items.append(arrays)
            continue
        rows = {a.shape[0] for a in arrays.values()}
        if len(rows) != 1:
            raise TritongenError(
                f"calibration file {f.name}: arrays have different batch sizes",
                "give every input the same number of rows",
            )
        count = rows.pop()
        _check_count(len(items) + count, path)
        items.extend({k: a[i : i + 1] for k, a in arrays.items()} for i in range(count))
    return items


def _check_total(nbytes: int, path: Path) -> int:
    """``nbytes`` (the calibration arrays read so far), a :class:`TritongenError` past :data:`MAX_CALIB_BYTES`: a
    folder of 100,000 files of 512 MiB each passed every per-file bound."""
    if nbytes > MAX_CALIB_BYTES:
        raise TritongenError(
            f"calibration data {path} holds over {size_text(MAX_CALIB_BYTES)} of arrays",
            "give a few hundred representative samples (more add little to calibration)",
        )
    return nbytes


def _check_count(samples: int, path: Path) -> None:
    if samples > MAX_CALIB_SAMPLES:
        raise TritongenError(
            f"calibration data {path} holds more than {MAX_CALIB_SAMPLES} samples",
            "give a few hundred to a few thousand representative samples",
        )


def _described(inputs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(f"{t.name} {t.dtype} {list(t.dims)}" for t in inputs)


def _is_image_input(inputs: tuple[TensorSpec, ...]) -> bool:
    """One float input shaped [3, H, W] (H and W fixed or not): what a folder of images can calibrate."""
    return (
        len(inputs) == 1
        and len(inputs[0].dims) == 3
        and inputs[0].dims[0] == 3
        and numpy_dtype(inputs[0].dtype).kind == "f"
    )


def _utf8_lines(raw: bytes, path: Path) -> list[str]:
    """The non-empty lines of a UTF-8 text, split on "\n" alone (a trailing "\r" dropped), so that form feeds,
    separators and U+2028 inside a line do not make samples; bytes that are not UTF-8 are a :class:`TritongenError`."""
    try:
        text = raw.decode("utf-8-sig")  # a byte order mark is no part of the first sample
    except UnicodeDecodeError as exc:
        raise TritongenError(
            f"calibration text file {path} is not UTF-8 text (byte {exc.start} is {raw[exc.start : exc.start + 1]!r})",
            "give a UTF-8 text file with one sample per line, or .npz samples",
        ) from None
    return [line.strip() for line in text_lines(text)]


def _check_text_fits(path: Path, inputs: tuple[TensorSpec, ...], tokenizer: Path | None) -> None:
    """Text calibration data needs token-id inputs and a tokenizer to make them."""
    if inputs and not all(numpy_dtype(t.dtype).kind in "iu" for t in inputs):  # a tokenizer gives integer token ids
        if _is_image_input(inputs):
            raise TritongenError(
                f"calibration data {path.name} is text, but the model takes an image ({_described(inputs)})",
                "calibrate an image model with a folder of images (.jpg, .png, ...) or an .npz of input arrays",
            )
        raise TritongenError(
            f"calibration data {path.name} is text, but the model's inputs are not a tokenizer's token ids "
            f"({_described(inputs)})",
            "give .npz samples with one array per model input",
        )
    if tokenizer is None:
        raise _no_tokenizer(path)


def _items_from_text(path: Path, inputs: tuple[TensorSpec, ...], batched: bool, tokenizer: Path | None) -> list[Arrays]:
    _check_text_fits(path, inputs, tokenizer)
    assert tokenizer is not None  # refused above
    if not batched:
        raise TritongenError(
            "text calibration data needs a batching model",
            "build with --max-batch-size 1 or more, or give .npz samples",
        )
    try:
        raw = regular_bytes(path, MAX_TEXT_BYTES)
    except OSError as exc:
        raise TritongenError(
            f"calibration text file {path} {read_problem(exc)}",
            "give a readable text file with one sample per line (a few hundred lines are enough)",
        ) from None
    lines = _utf8_lines(raw, path)
    _check_count(len(lines), path)
    if not lines:
        raise TritongenError(f"calibration text file {path} has no non-empty lines", "write one sample text per line")
    from ..hf import checked_tokenizer_files

    checked_tokenizer_files(Path(tokenizer))  # as the served step's tokenizer: no links, bounded, no code of its own
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True, trust_remote_code=False)
    except Exception as exc:
        raise TritongenError(
            f"cannot load a tokenizer from {tokenizer}: {str(exc).splitlines()[0][:200]}",
            "pass --tokenizer with a folder holding tokenizer.json / tokenizer_config.json",
        ) from None
    fixed = {t.shape[0] for t in inputs if len(t.shape) == 1 and t.shape[0] != -1}
    max_len = fixed.pop() if fixed else min([DEFAULT_MAX_TOKENS, *_length_limits(tok, Path(tokenizer))])
    # A line is cut to what max_len tokens could hold before it is tokenized: one 60 MB line took 7.6 GB to
    # tokenize whole, for the 128 tokens kept.
    lines = [line[: max_len * MAX_CHARS_PER_TOKEN] for line in lines]
    # One padded length for all lines: histogram calibrators stack batches, so shapes must agree.
    enc = tok(
        lines, padding="max_length" if fixed else "longest", truncation=True, max_length=max_len, return_tensors="np"
    )
    missing = [t.name for t in inputs if t.name not in enc]
    if missing:
        raise TritongenError(
            f"the tokenizer gives {', '.join(sorted(enc.keys()))} but the model needs input '{missing[0]}'",
            "name the model inputs like the tokenizer's outputs (input_ids, attention_mask, token_type_ids)",
        )
    arrays = {t.name: np.asarray(enc[t.name]).astype(numpy_dtype(t.dtype)) for t in inputs}
    return [{k: a[i : i + 1] for k, a in arrays.items()} for i in range(len(lines))]


MAX_CHARS_PER_TOKEN = 64  # far more characters than any tokenizer puts in one token


def _length_limits(tok: Any, folder: Path) -> list[int]:
    """The token counts a calibration line may not pass: the tokenizer's ``model_max_length`` and, where the
    folder holds the model's config.json, its ``max_position_embeddings`` (lines of 102 tokens failed a 64-position
    model as "the size of tensor a (102) must match ... (64)", blamed on the data); each only where it is a count."""
    from ..hf import max_positions

    limits = [getattr(tok, "model_max_length", None), max_positions(folder)]
    return [v for v in limits if type(v) is int and v > 0]


def _items_from_images(
    folder: Path, files: list[Path], inputs: tuple[TensorSpec, ...], batched: bool, preprocessor: Path | None
) -> list[Arrays]:
    from PIL import Image

    from ..hf import MAX_IMAGE_FILE_BYTES, MAX_IMAGE_PIXELS

    if not _is_image_input(inputs):
        raise TritongenError(
            f"calibration folder {folder} holds images, but the model does not take one image [3, H, W] (float): "
            f"it takes {_described(inputs)}",
            "give .npz samples with one array per model input",
        )
    t = inputs[0]
    if -1 in t.dims[1:]:
        raise TritongenError(
            f"calibration folder {folder} holds images, but the model's image input {_described(inputs)} has a "
            "variable height or width, and a folder of images calibrates a fixed H x W only",
            f"give an .npz with an array '{t.name}' of shape [N, 3, H, W] ({numpy_dtype(t.dtype)}; a folder of "
            "such .npz files for several sizes), or declare H and W with --input",
        )
    height, width = t.dims[1], t.dims[2]
    settings = _image_settings(preprocessor, (height, width), folder)
    steps = _served_image_steps()
    items: list[Arrays] = []
    total = 0
    for f in files:
        try:
            data = regular_bytes(f, MAX_IMAGE_FILE_BYTES)
        except OSError as exc:
            raise TritongenError(
                f"calibration image {f.name} {read_problem(exc)}", "remove it or replace it with a smaller image"
            ) from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own bound is below PIL's
                with Image.open(io.BytesIO(data)) as image:
                    pixels = image.size[0] * image.size[1]  # from the header, before anything is decoded
                    if pixels > MAX_IMAGE_PIXELS:
                        raise TritongenError(
                            f"calibration image {f.name} has {image.size[0]} x {image.size[1]} pixels, over the "
                            f"{MAX_IMAGE_PIXELS:,} the build decodes",
                            "remove it or scale it down (the model sees it resized to its input anyway)",
                        )
                    image.load()
                    try:
                        pixels = steps.pixels_from_image(image, settings)
                    except ValueError as exc:  # the served step's own refusal: an image smaller than the crop
                        raise TritongenError(
                            f"calibration image {f.name} {exc}", "remove it or use a larger image"
                        ) from None
        except TritongenError:
            raise
        except Exception as exc:
            raise TritongenError(
                f"calibration image {f.name} cannot be read ({type(exc).__name__})",
                "remove it or replace it with a valid image",
            ) from None
        array = steps.normalise(pixels[None], settings)[0].astype(numpy_dtype(t.dtype))
        total = _check_total(total + array.nbytes, folder)
        items.append({t.name: array[None] if batched else array})
    return items


def _image_settings(preprocessor: Path | None, hw: tuple[int, int], folder: Path) -> dict[str, Any]:
    """The steps that make a calibration image the model's input, as ``image_processor.json`` writes them for the
    served pre-processing step: the model folder's ``preprocessor_config.json`` where it has one (read and checked by
    :func:`tritongen.hf.image_settings_from_folder`, the served step's own settings: resize, crop, rescale and
    normalisation as served; a file that sets no fixed size, as a model file's ``--tokenizer DIR`` may hold, gets a
    resize to the input's H x W with its own rescale and normalisation), else a resize to the input's H x W and a
    rescale of bytes to 0..1. A processor that makes another size than the model's input is refused."""
    from ..hf import IMAGE_PROCESSOR_FILE, image_settings_from_folder

    resize = {"height": hw[0], "width": hw[1]}
    if preprocessor is None or not (Path(preprocessor) / IMAGE_PROCESSOR_FILE).is_file():  # PIL's default: bicubic
        return dict(resize=resize, crop=None, crop_pct=None, resample=3, rescale_factor=1 / 255.0, mean=None, std=None)
    settings = image_settings_from_folder(Path(preprocessor))
    try:
        settings.output_hw  # noqa: B018 -- the served step's own rule for a fixed size
    except TritongenError:
        settings = dataclasses.replace(settings, resize=resize, crop=None, crop_pct=None)
    if tuple(settings.output_hw) != tuple(hw):
        raise TritongenError(
            f"the image processor of {preprocessor} makes {settings.output_hw[0]} x {settings.output_hw[1]} pixels, "
            f"but the model's image input is {hw[0]} x {hw[1]} (calibration images from {folder})",
            "declare the input as the processor's size (--input), or fix preprocessor_config.json",
        )
    return settings.to_dict()


def _served_image_steps() -> Any:
    """The served image pre-processing step's own module (``templates/python/image_preprocess.py``): calibration
    applies its functions, so INT8 is calibrated on the pixels the served ensemble feeds the model."""
    import importlib.util

    from ..templates import template_path

    path = template_path("python/image_preprocess.py")
    spec = importlib.util.spec_from_file_location("tritongen_image_preprocess_step", path)
    if spec is None or spec.loader is None:
        raise TritongenError(f"{path} cannot be loaded", "reinstall tritongen")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _batches(items: list[Arrays], batch: int, batched: bool) -> list[Arrays]:
    """Stack consecutive same-shape items into batches of up to ``batch`` rows."""
    if not batched:
        return list(items)
    out: list[Arrays] = []
    group: list[Arrays] = []

    def flush():
        if group:
            out.append({k: np.concatenate([g[k] for g in group], axis=0) for k in group[0]})
            group.clear()

    for item in items:
        if group and (len(group) >= batch or any(item[k].shape != group[0][k].shape for k in item)):
            flush()
        group.append(item)
    flush()
    return out


def _looks_like_text(path: Path) -> bool:
    if path.suffix.lower() in TEXT_SUFFIXES:
        return True
    if path.suffix.lower() in (".npz", ".npy"):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # not held up by a FIFO
    except OSError:
        return False  # read as .npz, whose reader names the problem
    try:
        head = os.read(fd, 4096) if stat.S_ISREG(os.fstat(fd).st_mode) else b"PK"
    except OSError:
        return False
    finally:
        os.close(fd)
    return not head.startswith(b"PK") and b"\x00" not in head


def _no_tokenizer(path: Path) -> TritongenError:
    return TritongenError(
        f"calibration data {path.name} is text, which needs a tokenizer",
        "pass --tokenizer DIR (a Hugging Face tokenizer folder; the build then serves text in: an ensemble NAME of "
        "NAME_preprocess -> NAME_model -> NAME_postprocess), or give .npz samples of the model's inputs instead",
    )


def check_text_has_tokenizer(
    calib_data: Path | None, tokenizer: Path | None, inputs: tuple[TensorSpec, ...] = ()
) -> None:
    """Refuse, before anything is exported, text calibration data the model cannot take (inputs that are not token
    ids, where declared) or that no tokenizer reads (the build found out after the export and the parity gate)."""
    if calib_data is None or tokenizer is not None:
        return
    path = Path(calib_data).expanduser()
    if path.is_file() and _looks_like_text(path):
        _check_text_fits(path, inputs, tokenizer)


def calibration_data_from_path(
    path: Path,
    inputs: tuple[TensorSpec, ...],
    batched: bool,
    batch: int = 16,
    tokenizer: Path | None = None,
    holdout: bool = True,
) -> CalibrationData:
    """Read, check and split the user's calibration data; every problem is a :class:`TritongenError`.

    ``tokenizer``: a tokenizer folder (text), or a Hugging Face folder whose preprocessor_config.json the served
    pre-processing step applies to images (calibration applies it the same way).

    With ``holdout`` every 4th sample goes to the evaluation batches; without it (FP16 needs no calibration)
    every sample is used for evaluation.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise TritongenError(
            f"calibration data {path} does not exist",
            "pass --calib-data with an .npz file, a folder of .npz files or a text file",
        )
    if not path.is_file() and not path.is_dir():
        raise TritongenError(
            f"calibration data {path} is not a regular file or a folder (a FIFO, a device or a socket)",
            "pass --calib-data with an .npz file, a folder of .npz files or a text file",
        )
    if path.is_file() and _looks_like_text(path):
        items, source = _items_from_text(path, inputs, batched, tokenizer), "text"
    else:
        items = _items_from_npz(path, inputs, batched, tokenizer)
        source = "images" if path.is_dir() and not any(p.suffix == ".npz" for p in path.iterdir()) else "npz"
    if holdout:
        calib = [it for i, it in enumerate(items) if i % HOLDOUT_EVERY != HOLDOUT_EVERY - 1]
        held = [it for i, it in enumerate(items) if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1]
        if len(calib) < MIN_CALIB_SAMPLES or len(held) < MIN_EVAL_SAMPLES:
            need = min_holdout_samples()
            raise TritongenError(
                f"calibration data {path.name} has {len(items)} sample(s), too few to calibrate and check accuracy",
                f"give at least {need} samples (a few hundred is better): "
                f"every {HOLDOUT_EVERY}th is held out for the accuracy guard",
            )
    else:
        calib, held = [], list(items)
        if len(held) < MIN_EVAL_SAMPLES:
            raise TritongenError(
                f"calibration data {path.name} has {len(items)} sample(s)", f"give at least {MIN_EVAL_SAMPLES}"
            )
    step = max(1, batch)
    calib_batches, eval_batches = _batches(calib, step, batched), _batches(held, step, batched)
    return CalibrationData(
        calib=tuple(calib_batches),
        eval=tuple(eval_batches),
        source=source,
        calib_samples=len(calib),
        eval_samples=len(held),
        digest=digest_of(calib_batches),
        batched=batched,
    )


def min_holdout_samples() -> int:
    """The fewest samples that, every :data:`HOLDOUT_EVERY`-th held out, leave :data:`MIN_CALIB_SAMPLES` to
    calibrate and :data:`MIN_EVAL_SAMPLES` to check."""
    n = MIN_CALIB_SAMPLES
    while n - n // HOLDOUT_EVERY < MIN_CALIB_SAMPLES or n // HOLDOUT_EVERY < MIN_EVAL_SAMPLES:
        n += 1
    return n


def calibration_data_from_arrays(
    calib: Sequence[Arrays], eval_batches: Sequence[Arrays], batched: bool = True, source: str = "samples"
) -> CalibrationData:
    """Wrap batches a caller already has (the build's own samples for FP16, or a library caller's data)."""
    count = lambda bs: sum((next(iter(b.values())).shape[0] if batched else 1) for b in bs if b)  # noqa: E731
    return CalibrationData(
        calib=tuple(calib),
        eval=tuple(eval_batches),
        source=source,
        calib_samples=count(calib),
        eval_samples=count(eval_batches),
        digest=digest_of(calib),
        batched=batched,
    )
