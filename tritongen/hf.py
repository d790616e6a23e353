"""Hugging Face folders as build input: detect the task, load the weights safely, describe the tensors.

A Hugging Face folder holds ``config.json``, weights (``model.safetensors`` or ``pytorch_model.bin``) and,
for text models, tokenizer files; image models have a ``preprocessor_config.json``. Everything here reads
those files only: nothing is downloaded (``local_files_only``), and ``.bin`` weights are read with
``weights_only`` unpickling (transformers' default), so loading runs no code from the folder.

The model is wrapped in a small ``nn.Module`` that takes plain tensors and returns plain tensors, which is
what the ONNX exporter and the parity gate need.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import stat
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TritongenError
from .files import FileTooLargeError, json_file, json_from_bytes, read_problem, regular_bytes, size_text
from .manifest import finite_number
from .names import MAX_LABELS, check_class_index, check_label, shown, with_suggestion
from .spec import TensorSpec

TASKS = ("text-classification", "feature-extraction", "image-classification")
TEXT_TASKS = ("text-classification", "feature-extraction")
TASK_ALIASES = {
    "sentence-embedding": "feature-extraction",
    "sentence-similarity": "feature-extraction",
    "embedding": "feature-extraction",
    "sequence-classification": "text-classification",
    "sentiment-analysis": "text-classification",
}
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
IMAGE_PROCESSOR_FILE = "preprocessor_config.json"
DEFAULT_MAX_LENGTH = 512
MAX_CONFIG_BYTES = 16 << 20  # config.json, sentence_bert_config.json: a few KiB each (and a label map)


def is_hf_folder(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def task_from_name(task: str) -> str:
    task = TASK_ALIASES.get(task, task)
    if task not in TASKS:
        raise TritongenError(f"unknown task '{task}'", with_suggestion(task, TASKS, f"use one of {', '.join(TASKS)}"))
    return task


def read_config(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    try:
        data = json_file(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise TritongenError(
            f"{folder} has no config.json", "pass a Hugging Face model folder (save_pretrained writes config.json)"
        ) from None
    except (OSError, ValueError) as exc:
        raise TritongenError(
            f"cannot read {path} ({exc})", "pass a Hugging Face folder with a valid config.json"
        ) from None
    if not isinstance(data, dict):
        raise TritongenError(f"{path} is not a JSON object", "pass a Hugging Face folder with a valid config.json")
    _refuse_own_code(path, data)
    archs = data.get("architectures")
    if archs is not None and not (isinstance(archs, list) and all(isinstance(a, str) for a in archs)):
        raise TritongenError(
            f"{path}: architectures is {shown(repr(archs))}, not a list of class names",
            "save the model's config with save_pretrained",
        )
    return data


def _refuse_own_code(path: Path, data: Mapping[str, Any]) -> None:
    """A config naming code of the folder's own (``auto_map``), which transformers would import and run (after a
    ``[y/N]`` prompt on a terminal): refused before transformers reads the folder."""
    if data.get("auto_map"):
        raise TritongenError(
            f"{path} names code of the folder's own (auto_map {shown(repr(data['auto_map']), 80)}), which loading it "
            "would run",
            "tritongen runs no code from a model folder: save a model of a class transformers ships (save_pretrained)",
        )


MAX_TOKENIZER_FILE_BYTES = 64 << 20  # a 250k-token tokenizer.json: ~20 MB; parsing one takes ~25x its size


def checked_tokenizer_files(folder: Path) -> list[str]:
    """The tokenizer files of ``folder`` (:data:`TOKENIZER_FILES` present), each a regular file, not a link (one
    leading to a secret outside the folder was copied into the repository, world-readable), of at most
    :data:`MAX_TOKENIZER_FILE_BYTES` (a 2 GB sparse merges.txt made a 2.1 GB repository); tokenizer_config.json
    naming code of its own is refused."""
    found = []
    for name in TOKENIZER_FILES:
        path = Path(folder) / name
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise TritongenError(f"{path} {read_problem(exc)}", "pass a tokenizer folder you can read") from None
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
            raise TritongenError(
                f"tokenizer file {path} is {'a link' if stat.S_ISLNK(info.st_mode) else 'not a regular file'}",
                "copy the file itself into the folder (tritongen copies tokenizer files into the repository)",
            )
        if info.st_size > MAX_TOKENIZER_FILE_BYTES:
            raise TritongenError(
                f"tokenizer file {path} holds {info.st_size} bytes, over {size_text(MAX_TOKENIZER_FILE_BYTES)}",
                "pass the tokenizer tokenizer.save_pretrained writes",
            )
        found.append(name)
    return found


_READ_ONCE: contextvars.ContextVar[dict[str, dict[str, bytes]] | None] = contextvars.ContextVar(
    "tritongen_tokenizer_reads", default=None
)


@contextlib.contextmanager
def tokenizer_read_once() -> Iterator[None]:
    """Within the block, each folder's tokenizer files are read once (:func:`tokenizer_file_bytes`): a build reads
    the settings, tokenizes the parity samples and writes the pre-processing step from the same bytes (a
    tokenizer.json swapped between the gate and the copy shipped unchecked: ids past the model's table)."""
    token = _READ_ONCE.set({})
    try:
        yield
    finally:
        _READ_ONCE.reset(token)


def tokenizer_file_bytes(folder: Path) -> dict[str, bytes]:
    """The tokenizer files of ``folder`` (:func:`checked_tokenizer_files`), each read once (no link followed, at
    most :data:`MAX_TOKENIZER_FILE_BYTES`), ``tokenizer_config.json`` checked in those bytes: what tritongen loads
    the tokenizer from and copies into the repository, so a file swapped in after the checks (a link to a secret)
    is never read. Within :func:`tokenizer_read_once`, the first read of a folder is every later one's."""
    memo, key = _READ_ONCE.get(), os.path.abspath(folder)
    if memo is not None and key in memo:
        return dict(memo[key])
    out = _tokenizer_file_bytes(Path(folder))
    if memo is not None:
        memo[key] = dict(out)
    return out


def _tokenizer_file_bytes(folder: Path) -> dict[str, bytes]:
    out = {}
    for name in checked_tokenizer_files(folder):
        try:
            data = regular_bytes(Path(folder) / name, MAX_TOKENIZER_FILE_BYTES, follow_links=False)
        except FileTooLargeError:
            raise TritongenError(
                f"tokenizer file {Path(folder) / name} is over {size_text(MAX_TOKENIZER_FILE_BYTES)}",
                "pass the tokenizer tokenizer.save_pretrained writes",
            ) from None
        except OSError as exc:
            raise TritongenError(
                f"tokenizer file {Path(folder) / name} {read_problem(exc)}", "pass a readable tokenizer"
            ) from None
        if name == "tokenizer_config.json":
            _check_tokenizer_config(Path(folder) / name, data)
        out[name] = data
    return out


# tokenizer_config.json keys that name files transformers opens (fast_tokenizer_files picks a tokenizer.json by
# version): a path there led the build, and the served step, to a file outside the folder and the signature.
_FILE_KEY_SUFFIXES = ("_file", "_files")
# ... but not these: transformers 4.2x-4.3x save_pretrained wrote the absolute path they were saved from, and no
# version reads a file through them (the folder's own special_tokens_map.json and added_tokens.json are read).
_RECORDED_ONLY_KEYS = frozenset({"special_tokens_map_file", "added_tokens_file", "tokenizer_config_file"})


def _check_tokenizer_config(path: Path, data: bytes) -> None:
    """No code of its own (:func:`_refuse_own_code`), no file named by a path (only names beside it)."""
    try:
        parsed = json_from_bytes(data)
    except ValueError:
        return  # transformers names what is wrong with it
    if not isinstance(parsed, dict):
        return
    _refuse_own_code(path, parsed)
    for key, value in parsed.items():
        if not (isinstance(key, str) and key.endswith(_FILE_KEY_SUFFIXES)) or key in _RECORDED_ONLY_KEYS:
            continue
        for name in value if isinstance(value, list) else [value]:
            if isinstance(name, str) and (not name or name in (".", "..") or any(c in name for c in "/\\")):
                raise TritongenError(
                    f"{path}: {shown(key, 40)} names {shown(repr(name), 80)}, a path: transformers would read that "
                    "file, outside the tokenizer's folder",
                    "save the tokenizer with tokenizer.save_pretrained (its files beside tokenizer_config.json)",
                )


def task_from_config(config: Mapping[str, Any], folder: Path | None = None) -> str:
    """The task from ``architectures`` (``...ForSequenceClassification`` -> text classification, ...)."""
    archs = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "text-classification"
    if any(a.endswith("ForImageClassification") for a in archs):
        return "image-classification"
    if folder is not None and (Path(folder) / "modules.json").is_file():
        return "feature-extraction"  # a sentence-transformers folder
    if archs and all(a.endswith("Model") and "For" not in a and "LMHead" not in a for a in archs):  # a bare encoder
        if folder is not None and (Path(folder) / IMAGE_PROCESSOR_FILE).is_file() and not _has_tokenizer(Path(folder)):
            raise TritongenError(
                f"cannot tell what to serve for the image backbone {archs[0]}",
                "pass --task image-classification with a classifier, or --postprocess raw",
            )
        return "feature-extraction"
    raise TritongenError(
        f"cannot detect the task of {folder or 'the model'} from architectures {archs or 'none'}",
        f"pass --task ({', '.join(TASKS)})",
    )


def _has_tokenizer(folder: Path) -> bool:
    return any(
        (folder / f).is_file() for f in ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "tokenizer.model")
    )


def labels_from_config(config: Mapping[str, Any]) -> tuple[str, ...]:
    """Label names in class-index order from ``id2label`` (``LABEL_<i>`` for gaps).

    Keys must be class indices below ``num_labels`` (when given) and below :data:`~tritongen.names.MAX_LABELS`,
    names must pass :func:`~tritongen.names.check_label`: both checked before any list of that size is built.
    """
    id2label = config.get("id2label") or {}
    if not isinstance(id2label, Mapping):
        raise TritongenError("config.json's id2label is not a mapping", 'write id2label as {"0": "negative", ...}')
    num_labels = config.get("num_labels")
    if num_labels is not None and (type(num_labels) is not int or not 0 <= num_labels <= MAX_LABELS):
        raise TritongenError(
            f"config.json's num_labels {shown(repr(num_labels))} is not a class count from 0 to {MAX_LABELS}",
            "set num_labels to the number of classes the classifier outputs",
        )
    limit = num_labels or MAX_LABELS
    mapping: dict[int, str] = {}
    for key, value in id2label.items():
        index = check_class_index(key, "config.json's id2label", limit)
        if index in mapping:
            raise TritongenError(f"config.json's id2label names class {index} twice", "give every class index one key")
        mapping[index] = check_label(
            str(value) if isinstance(value, int) and not isinstance(value, bool) else value,
            f"id2label[{index}] in config.json",
        )
    count = max(num_labels or 0, (max(mapping) + 1) if mapping else 0)
    return tuple(mapping.get(i, f"LABEL_{i}") for i in range(count))


# ------------------------------------------------------------------------------------------------ tokenizer


@dataclass(frozen=True)
class TextSettings:
    tokenizer_dir: Path
    model_input_names: tuple[str, ...]  # in forward() order: input_ids, attention_mask[, token_type_ids]
    max_length: int
    tokenizer_outputs: tuple[str, ...] = ()  # every tensor the tokenizer gives (its model_input_names)


def check_tokenizer_gives(inputs: tuple[TensorSpec, ...], tokenizer_outputs: tuple[str, ...]) -> None:
    """Every model input must be one of the tokenizer's outputs, since the pre-processing step (and the parity
    samples) feed the model what the tokenizer gives, by name; else one :class:`TritongenError` naming both."""
    missing = [t.name for t in inputs if t.name not in tokenizer_outputs]
    if missing:
        raise TritongenError(
            f"the tokenizer gives {', '.join(tokenizer_outputs) or 'nothing'} but the model takes "
            f"{', '.join(t.name for t in inputs)} ('{missing[0]}' is not a tokenizer output)",
            "name the model inputs like the tokenizer's outputs (e.g. --input input_ids:INT64:-1 "
            "--input attention_mask:INT64:-1), or pass --preprocess my_pre.py to make the model's inputs yourself",
        )


def tokenizer_from_folder(folder: Path):
    from transformers import AutoTokenizer

    if not _has_tokenizer(Path(folder)):
        raise TritongenError(
            f"{folder} has no tokenizer files (tokenizer.json, vocab.txt, ...)",
            "pass --tokenizer DIR with the model's tokenizer (tokenizer.save_pretrained writes it)",
        )
    files = tokenizer_file_bytes(Path(folder))
    with tempfile.TemporaryDirectory(prefix="tritongen-tokenizer-") as private:
        for name, data in files.items():  # loaded from the checked bytes, in a folder of tritongen's own
            (Path(private) / name).write_bytes(data)
        try:
            # trust_remote_code=False: a folder whose auto_map names its own code is refused, never prompted for
            tokenizer = AutoTokenizer.from_pretrained(private, local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # noqa: BLE001 - transformers raises many types for a broken folder
            why = str(exc).replace(private, str(folder)).splitlines()
            raise TritongenError(
                f"cannot load the tokenizer in {folder}: {(why[0] if why else type(exc).__name__)[:300]}",
                "pass --tokenizer DIR with files written by tokenizer.save_pretrained",
            ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise TritongenError(
            f"the tokenizer in {folder} is not a fast tokenizer", "save it with tokenizer.json (a fast tokenizer)"
        )
    return tokenizer


MAX_CONFIG_COUNT = 1 << 30  # a vocabulary, a number of positions: a count from config.json far past any model's


def _config_count(config: Mapping[str, Any] | None, key: str, folder: Path | None) -> int:
    """A count from the model's config.json (0 where it gives none), a :class:`TritongenError` where it is not one."""
    value = (config or {}).get(key, 0) or 0
    if type(value) is not int or not 0 <= value <= MAX_CONFIG_COUNT:
        where = f"{folder}/config.json" if folder is not None else "the model's config.json"
        raise TritongenError(
            f"{where}: {key} is {shown(repr(value))}, not a count from 0 to {MAX_CONFIG_COUNT}",
            "save the model's config with save_pretrained",
        )
    return value


def check_sentence_transformers_modules(folder: Path) -> None:
    """Where ``folder`` is a sentence-transformers model (``modules.json``), refuse what tritongen's embedding
    step would not compute as it does: pooling other than the mean of the tokens (CLS, max, weighted), a Dense layer
    after it, no Normalize. The step mean-pools and normalizes: such a model built and served other embeddings
    than its own, with nothing said (and ``infer --check`` passing: the reference pools the same way)."""
    modules_path = Path(folder) / "modules.json"
    if not modules_path.is_file():
        return
    fix = "pass --postprocess with a .py file doing what the model's modules do, or --postprocess none (raw tokens)"
    try:
        modules = json_file(modules_path, MAX_CONFIG_BYTES)
    except (OSError, ValueError):
        raise TritongenError(f"{modules_path} cannot be read as JSON", fix) from None
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise TritongenError(f"{modules_path} is not a list of modules", fix)
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    other = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
    if other or "Pooling" not in kinds or "Normalize" not in kinds:
        what = f"a {other[0]} module" if other else "no Pooling module" if "Pooling" not in kinds else "no Normalize"
        raise TritongenError(
            f"the sentence-transformers model in {folder} has {what} (modules.json), and tritongen's embedding step "
            "mean-pools and normalizes: it would serve other embeddings than the model's",
            fix,
        )
    pooling = modules[kinds.index("Pooling")]
    where = str(pooling.get("path") or "")
    if where.startswith(("/", "\\")) or ".." in Path(where).parts:
        raise TritongenError(
            f"{modules_path} names the Pooling module's folder '{shown(where)}', outside the model", fix
        )
    path = Path(folder) / where / "config.json"
    try:
        config = json_file(path, MAX_CONFIG_BYTES) if path.is_file() else {}
    except (OSError, ValueError):
        raise TritongenError(f"{path} cannot be read as JSON", fix) from None
    if not isinstance(config, dict):
        raise TritongenError(f"{path} is not a Pooling module's settings (a JSON object)", fix)
    modes = sorted(k for k, v in config.items() if k.startswith("pooling_mode_") and v is True)
    # the mean over sqrt(length) is the mean scaled per row: the same once normalized
    if (config and not modes) or set(modes) - {"pooling_mode_mean_tokens", "pooling_mode_mean_sqrt_len_tokens"}:
        raise TritongenError(
            f"the sentence-transformers model in {folder} pools with {', '.join(modes) or 'no mode'} ({path.name} "
            "of its Pooling module), and tritongen's embedding step takes the mean of the tokens",
            fix,
        )


MAX_TEXT_TOKENS = 100_000  # a truncation length: past the longest context of any model here


def _default_positions(model_config: Mapping[str, Any] | None) -> int:
    """The position table transformers gives a model whose config.json names none (BERT's 512): a config without
    the key still builds a model of that many positions, and a longer truncation length served texts it fails on."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = (model_config or {}).get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        return 0
    try:  # from the folder's own values: n_positions (GPT-2) is max_position_embeddings by transformers' alias
        value = getattr(CONFIG_MAPPING[model_type].from_dict(dict(model_config or {})), "max_position_embeddings", 0)
    except Exception:  # noqa: BLE001 -- a config its class cannot take: no default to read
        return 0
    return value if type(value) is int and 0 < value <= MAX_CONFIG_COUNT else 0


def max_positions(folder: Path) -> int:
    """The ``max_position_embeddings`` of ``folder``'s config.json: 0 where the folder has no config.json or it
    gives none; a :class:`TritongenError` where the file cannot be read or the value is not a count."""
    if not (Path(folder) / "config.json").is_file():
        return 0
    return _config_count(read_config(Path(folder)), "max_position_embeddings", Path(folder))


def text_settings_from_folder(
    tokenizer_dir: Path,
    model_config: Mapping[str, Any] | None,
    model_folder: Path | None,
    accepts: tuple[str, ...] | None = None,
) -> TextSettings:
    """Which tokenizer outputs the model takes and the truncation length (sentence-transformers' when set)."""
    tokenizer = tokenizer_from_folder(tokenizer_dir)
    names = ["input_ids", "attention_mask"]
    if (
        "token_type_ids" in tokenizer.model_input_names
        and (accepts is None or "token_type_ids" in accepts)
        and _config_count(model_config, "type_vocab_size", model_folder) > 1
    ):
        names.append("token_type_ids")
    limits = []
    positions = _config_count(model_config, "max_position_embeddings", model_folder) or _default_positions(model_config)
    for folder in {p for p in (model_folder, tokenizer_dir) if p is not None}:
        st = Path(folder) / "sentence_bert_config.json"
        if st.is_file():
            try:
                value = json_file(st, MAX_CONFIG_BYTES).get("max_seq_length")
            except (ValueError, TypeError, OSError, AttributeError):
                continue
            # 0, -1, 1e30, 10**30 or text: not a length (0 stopped truncation; 10**30 overflowed the tokenizer)
            if type(value) is int and 0 < value <= MAX_TEXT_TOKENS:
                limits.append(value)
    if not limits:
        model_max = getattr(tokenizer, "model_max_length", DEFAULT_MAX_LENGTH)
        if isinstance(model_max, bool) or not isinstance(model_max, int) or model_max <= 0:
            model_max = DEFAULT_MAX_LENGTH  # "abc", [1], 1e400 in tokenizer_config.json: no length
        limits = [min(v for v in (model_max, positions or model_max, MAX_TEXT_TOKENS) if v > 0)]
    if positions:  # never past the position table (a 1000-token setting served texts a 64-position model fails on)
        limits.append(positions)
    return TextSettings(
        tokenizer_dir=Path(tokenizer_dir),
        model_input_names=tuple(names),
        max_length=min(limits),
        tokenizer_outputs=tuple(str(n) for n in tokenizer.model_input_names),
    )


def copy_tokenizer_files(src: Path, dst: Path) -> list[str]:
    """Copy ``src``'s tokenizer files (:func:`tokenizer_file_bytes`: regular, bounded, read once) into ``dst``."""
    files = tokenizer_file_bytes(src)
    dst.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (dst / name).write_bytes(data)
    return list(files)


SAMPLE_SENTENCES = (
    "Hello",
    "The service was great and the food arrived quickly.",
    "Triton serves many models at once.",
    "A much longer sentence, with commas and clauses, so that the padding in this batch is really used.",
)


def sample_sentences(max_rows: int | None = None) -> tuple[str, ...]:
    """The sentences :func:`text_samples` tokenizes: ``max_rows`` (the model's max batch size, when it batches)
    caps their number, keeping the last ones, so the longest (last) sentence is always among them."""
    return SAMPLE_SENTENCES if max_rows is None else SAMPLE_SENTENCES[-max_rows:]


def text_samples(
    tokenizer_dir: Path, names: tuple[str, ...], max_length: int, max_rows: int | None = None
) -> dict[str, Any]:
    """Real tokenized sentences of different lengths (:func:`sample_sentences`), padded to the longest: samples for
    the parity gate."""
    import numpy as np

    sentences = list(sample_sentences(max_rows))
    encoded = tokenizer_from_folder(tokenizer_dir)(
        sentences, padding="longest", truncation=True, max_length=max_length, return_tensors="np"
    )
    check_tokenizer_gives(tuple(TensorSpec(n, "INT64", (-1,)) for n in names), tuple(encoded.keys()))
    return {n: np.asarray(encoded[n]).astype(np.int64) for n in names}


# ------------------------------------------------------------------------------------------------ images


@dataclass(frozen=True)
class ImageSettings:
    """Decided pre-processing for images, from the model's own ``preprocessor_config.json``."""

    resize: Mapping[str, int] | None  # {"height": h, "width": w} or {"shortest_edge": s}
    crop: tuple[int, int] | None  # (height, width) center crop after the resize
    crop_pct: float | None  # ConvNext: resize shortest edge to size/crop_pct, then crop size
    resample: int
    rescale_factor: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    channels: int = 3

    @property
    def output_hw(self) -> tuple[int, int]:
        if self.crop is not None:
            return self.crop
        if self.resize and "height" in self.resize:
            return int(self.resize["height"]), int(self.resize["width"])
        if self.resize and "shortest_edge" in self.resize and self.crop_pct is not None:
            s = int(self.resize["shortest_edge"])
            return s, s
        raise TritongenError(
            "the image processor settings give no fixed output size",
            "set size {height, width} or crop_size in preprocessor_config.json",
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "resize": dict(self.resize) if self.resize else None,
            "crop": list(self.crop) if self.crop else None,
            "crop_pct": self.crop_pct,
            "resample": self.resample,
            "rescale_factor": self.rescale_factor,
            "mean": list(self.mean) if self.mean else None,
            "std": list(self.std) if self.std else None,
            "channels": self.channels,
            "output_hw": list(self.output_hw),
        }


MAX_PROCESSOR_CONFIG_BYTES = 1 << 20  # preprocessor_config.json: a few hundred bytes
MAX_IMAGE_SIDE = 16384  # pixels: a resize or crop past this is a mistake in the file, not a model's input
MAX_IMAGE_FILE_BYTES = 32 << 20  # one encoded image: a request to the served pre-processing step, a calibration file
MAX_IMAGE_PIXELS = 64 << 20  # width x height of one image decoded (PIL warns past 89 million, refuses past 178)
MAX_IMAGE_CHANNELS = 4  # RGBA at most: the pre-processing step decodes images with PIL
PIL_RESAMPLE_FILTERS = range(6)  # NEAREST, LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING: what Image.resize takes
PROCESSOR_FIX = "write preprocessor_config.json as the model's image processor saves it (save_pretrained)"


def image_settings_from_folder(folder: Path) -> ImageSettings:
    """The image pre-processing of a Hugging Face folder, from its ``preprocessor_config.json`` (read bounded),
    every field it uses checked: sides whole pixels from 1 to :data:`MAX_IMAGE_SIDE`, ``image_mean``/``image_std``
    one or three finite numbers (std above 0), a known PIL filter; anything else is a :class:`TritongenError`
    naming the file and the field."""
    path = Path(folder) / IMAGE_PROCESSOR_FILE
    if not path.is_file():
        raise TritongenError(
            f"{folder} has no {IMAGE_PROCESSOR_FILE}",
            "save the model's image processor with save_pretrained into the folder",
        )
    try:
        cfg = json_file(path, MAX_PROCESSOR_CONFIG_BYTES)
    except OSError as exc:
        raise TritongenError(f"{path} {read_problem(exc)}", PROCESSOR_FIX) from None
    except ValueError as exc:
        raise TritongenError(f"{path} is not valid JSON ({str(exc)[:120]})", PROCESSOR_FIX) from None
    if not isinstance(cfg, dict):
        raise TritongenError(f"{path} is not a JSON object", PROCESSOR_FIX)

    def bad(field: str, what: str) -> TritongenError:
        return TritongenError(f"{path}: {field} is {shown(repr(cfg.get(field)))}, not {what}", PROCESSOR_FIX)

    def side(value: Any) -> bool:
        return type(value) is int and 1 <= value <= MAX_IMAGE_SIDE

    sides = f"a whole number of pixels from 1 to {MAX_IMAGE_SIDE}"

    def hw(key: str, default: dict[str, int] | None = None, shortest_ok: bool = True) -> dict[str, int] | None:
        value = cfg.get(key)
        if value is None:
            return default
        if side(value):
            return {"height": value, "width": value}
        keys = ("height", "width", "shortest_edge") if shortest_ok else ("height", "width")
        if isinstance(value, dict) and all(side(value[k]) for k in keys if k in value):
            out = {k: value[k] for k in keys if k in value}
            if "height" in out and "width" in out:
                return {"height": out["height"], "width": out["width"]}
            if shortest_ok and "shortest_edge" in out and not ("height" in out or "width" in out):
                return {"shortest_edge": out["shortest_edge"]}
        shapes = "{height, width}" + (" or {shortest_edge}" if shortest_ok else "")
        raise bad(key, f"{sides}, or {shapes} of such numbers")

    resize = hw("size") if cfg.get("do_resize", True) else None
    crop_pct = cfg.get("crop_pct") if resize and "shortest_edge" in resize and not cfg.get("do_center_crop") else None
    if crop_pct is not None and not (finite_number(crop_pct) and 0 < crop_pct <= 1):
        raise bad("crop_pct", "a fraction above 0, at most 1")
    if crop_pct is not None and resize is not None and resize["shortest_edge"] >= 384:
        crop_pct = None  # ConvNext warps to a square at 384 and above
        resize = {"height": resize["shortest_edge"], "width": resize["shortest_edge"]}
    crop = None
    if cfg.get("do_center_crop"):
        size = hw("crop_size", shortest_ok=False) or {"height": 224, "width": 224}
        crop = (size["height"], size["width"])
    if resize and "shortest_edge" in resize and crop is None and crop_pct is None:
        raise TritongenError(
            f"{path} resizes the shortest edge but does not crop, so image sizes vary",
            "use a processor with a fixed output size (size {height, width} or a center crop)",
        )

    def channel_values(key: str) -> tuple[float, ...] | None:
        value = cfg.get(key)
        if value is None or value == []:
            return None
        values = value if isinstance(value, list) else [value]
        if len(values) not in (1, 3) or not all(finite_number(v) for v in values):
            raise bad(key, "one or three finite numbers (one per RGB channel)")
        if key == "image_std" and min(values) <= 0:
            raise bad(key, "one or three numbers above 0 (it divides)")
        return tuple(float(v) for v in values)

    mean = channel_values("image_mean") if cfg.get("do_normalize", True) else None
    std = channel_values("image_std") if mean else None
    if mean and std is None:
        raise bad("image_std", "one or three numbers above 0 beside image_mean")
    rescale_value = cfg.get("rescale_factor", 1 / 255)
    if cfg.get("do_rescale", True) and not (finite_number(rescale_value) and 0 < rescale_value <= 255):
        raise bad("rescale_factor", "a number above 0, at most 255 (1/255 scales bytes to 0..1)")
    rescale = float(rescale_value) if cfg.get("do_rescale", True) else None
    resample = cfg.get("resample", 2)
    if type(resample) is not int or resample not in PIL_RESAMPLE_FILTERS:
        raise bad("resample", "a PIL resampling filter (0 to 5; 2 is bilinear, 3 bicubic)")
    return ImageSettings(
        resize=resize,
        crop=crop,
        crop_pct=float(crop_pct) if crop_pct is not None else None,
        resample=resample,
        rescale_factor=rescale,
        mean=mean,
        std=std,
    )


# ------------------------------------------------------------------------------------------------ the model


@dataclass(frozen=True)
class HFModel:
    """What a Hugging Face folder holds, decided once."""

    folder: Path
    task: str
    config: Mapping[str, Any]
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    labels: tuple[str, ...] = ()
    text: TextSettings | None = None
    image: ImageSettings | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def hf_model_from_folder(folder: Path, task: str | None = None, tokenizer_dir: Path | None = None) -> HFModel:
    folder = Path(folder)
    config = read_config(folder)
    task = task_from_name(task) if task else task_from_config(config, folder)
    if not any((folder / w).is_file() for w in WEIGHT_FILES):
        raise TritongenError(
            f"{folder} has no weights ({' or '.join(WEIGHT_FILES[::2])})",
            "save the model with save_pretrained into the folder",
        )
    labels = labels_from_config(config) if task != "feature-extraction" else ()  # before transformers reads them
    if task in TEXT_TASKS:
        text = text_settings_from_folder(tokenizer_dir or folder, config, folder)
        inputs = tuple(TensorSpec(n, "INT64", (-1,)) for n in text.model_input_names)
        if task == "text-classification":
            if not labels:
                raise TritongenError(
                    f"{folder}/config.json has no id2label or num_labels", "save the classifier with its id2label"
                )
            return HFModel(folder, task, config, inputs, ("logits",), labels=labels, text=text)
        return HFModel(folder, task, config, inputs, ("last_hidden_state",), text=text)
    image = image_settings_from_folder(folder)
    channels = config.get("num_channels", 3) or 3
    if type(channels) is not int or not 1 <= channels <= MAX_IMAGE_CHANNELS:
        raise TritongenError(
            f"{folder}/config.json: num_channels is {shown(repr(channels))}, not a channel count from 1 to "
            f"{MAX_IMAGE_CHANNELS}",
            "save the model's config with save_pretrained (3 for RGB images)",
        )
    h, w = image.output_hw
    return HFModel(
        folder,
        task,
        config,
        (TensorSpec("pixel_values", "FP32", (channels, h, w)),),
        ("logits",),
        labels=labels,
        image=image,
    )


@dataclass(frozen=True)
class LoadedHF:
    """Quacks like :class:`tritongen.load.LoadedModel` for :func:`tritongen.build.stage_model`."""

    module: Any
    form: str
    source: Path
    exported_program: Any = None


WEIGHT_SUFFIXES = (".safetensors", ".bin")  # model.safetensors (and its shards), pytorch_model.bin


def _config_object(model: HFModel) -> Any:
    """transformers' config for ``model`` made from the config.json bytes :func:`read_config` read and checked (the
    size check and the load use this one object: the file is not read again, so a config.json swapped after the
    check is not what loads)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = model.config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise TritongenError(
            f"{model.folder}/config.json: model_type is {shown(repr(model_type))}, not a model type transformers knows",
            "save the model's config with save_pretrained",
        )
    return CONFIG_MAPPING[model_type].from_dict(dict(model.config))


MAX_STRUCTURE_COUNT = 4096  # layers, heads, experts, blocks of one kind: the largest models have ~130 layers
# A config key counts repeated modules when it is shaped as a count (num_*, n_*, *_num, or ending in one of these
# words: num_hidden_layers, num_local_experts, num_hidden_groups, inner_group_num, num_codebooks, depths) and names
# no size (shared_expert_intermediate_size, block_size, head_dim, expert_capacity, vocab_size_per_layer_input,
# n_positions_per_head): those are widths or sizes per module, not counts of modules.
_STRUCTURE_WORDS = frozenset(
    {"layer", "layers", "head", "heads", "expert", "experts", "block", "blocks", "group", "groups", "depth",
     "depths", "codebooks", "quantizers", "stages"}
)  # fmt: skip
_NOT_COUNT_WORDS = frozenset({"size", "dim", "eps", "ratio", "prob", "rate", "id", "ids", "idx", "index", "type",
                              "types", "per", "capacity", "dropout"})  # fmt: skip
_LABEL_MAPS = ("id2label", "label2id")  # class names and indices: bounded as labels (tritongen.names.MAX_LABELS)


def _counts_modules(key: str) -> bool:
    words = key.lower().split("_")
    shaped = words[0] in ("num", "n") or words[-1] in ("num", *_STRUCTURE_WORDS)
    return shaped and bool(_STRUCTURE_WORDS & set(words)) and not _NOT_COUNT_WORDS & set(words)


def _check_structure_counts(model: HFModel) -> None:
    """Refuse a config.json counting modules of one kind (layers, heads, experts, groups) past
    :data:`MAX_STRUCTURE_COUNT`, at any depth of it (a vision or text sub-config): building even the meta-device
    skeleton costs time and memory per module (num_hidden_layers 2,000,000 in a 1 kB file ran for an hour toward
    100 GB). A list of counts (Swin's depths) is summed; any other list counts its items."""
    stack: list[tuple[str, Any]] = [("", model.config)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, Mapping):
            if key not in _LABEL_MAPS:
                stack += [(str(k), v) for k, v in value.items()]
            continue
        name = key.lower()
        if not _counts_modules(name):
            continue
        if isinstance(value, list):
            numbers = [v for v in value if type(v) is int and v > 0]
            total = sum(numbers) if name in ("depth", "depths") else len(value)
        else:
            total = value if type(value) is int else 0
        if total > MAX_STRUCTURE_COUNT:
            raise TritongenError(
                f"{model.folder}/config.json: {shown(key, 60)} is {total:,}, past the {MAX_STRUCTURE_COUNT} layers, "
                "heads or experts of one kind tritongen builds",
                "save the model's config with save_pretrained (its config.json describes the model its weights hold)",
            )


MAX_INDEX_BYTES = 64 << 20  # a sharded checkpoint's index: a line per tensor (a few MB for the largest models)


def loaded_weight_files(folder: Path) -> dict[str, int]:
    """The weight files transformers loads from ``folder`` (``model.safetensors``, else the shards its index names,
    else ``pytorch_model.bin`` or its shards), name -> size: each a regular file (through links: a Hugging Face
    cache's snapshot links each to its blob), an index read within :data:`MAX_INDEX_BYTES`. Other files are no
    weights: a 2 GB file of nothing beside the model once let a config.json describe a model that size. A shard
    that is a FIFO (a build that hung in transformers' read), outside the folder, or missing is refused."""
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (folder / single).exists():  # a dangling link (a half-downloaded cache): transformers takes the next
            return {single: _weight_file_size(folder, single)}
        if (folder / index).exists():
            try:
                data = json_file(folder / index, MAX_INDEX_BYTES)
            except (OSError, ValueError) as exc:
                raise TritongenError(
                    f"{folder}/{index} cannot be read as a checkpoint index ({shown(exc, 120)})",
                    "save the model again with save_pretrained",
                ) from None
            weight_map = data.get("weight_map") if isinstance(data, dict) else None
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise TritongenError(f"{folder}/{index} has no weight_map of shard names", "save the model again")
            return {name: _weight_file_size(folder, name) for name in sorted(set(weight_map.values()))}
    return {}


def _weight_file_size(folder: Path, name: str) -> int:
    path = folder / name
    if "/" in name or "\\" in name or name in ("", ".", "..") or not name.endswith(WEIGHT_SUFFIXES):
        raise TritongenError(
            f"{folder}: the checkpoint names the weight file '{shown(name, 120)}', not a weight file beside it",
            "save the model again with save_pretrained",
        )
    try:
        info = path.stat()
    except OSError as exc:
        raise TritongenError(
            f"weight file {path} cannot be read ({exc.strerror or exc})", "save the model again"
        ) from None
    if not stat.S_ISREG(info.st_mode):  # a FIFO: transformers' read would wait forever
        raise TritongenError(f"weight file {path} is not a regular file", "save the model again with save_pretrained")
    return info.st_size


_SKELETON_LOCK = threading.Lock()
MAX_SKELETON_MODULES = 50_000  # modules of one model: BERT-large ~400, Mixtral ~1,100, the largest MoE LLMs ~40,000


@contextlib.contextmanager
def _modules_bounded(folder: Path, limit: int) -> Iterator[None]:
    """Within the block, making more than ``limit`` torch modules raises a :class:`TritongenError`: config keys no
    name rule knows multiply modules too (MobileBERT's num_feedforward_networks 100000 built modules for hours toward
    100 GB before any size was compared; EfficientNet's depth_coefficient, Funnel's block_sizes)."""
    import torch

    with _SKELETON_LOCK:  # one patch at a time: two threads' blocks restored each other's wrapper for good
        original = torch.nn.Module.__init__
        owner = threading.get_ident()
        made = 0

        def counted(self: Any, *args: Any, **kwargs: Any) -> None:
            nonlocal made
            if threading.get_ident() == owner:  # another thread's modules are not this skeleton's
                made += 1
                if made > limit:
                    raise TritongenError(
                        f"{folder}/config.json describes a model of more than {limit:,} modules",
                        "save the fine-tuned model itself with save_pretrained (its config.json describes the model "
                        "its weights hold)",
                    )
            original(self, *args, **kwargs)

        torch.nn.Module.__init__ = counted  # type: ignore[method-assign]
        try:
            yield
        finally:
            torch.nn.Module.__init__ = original  # type: ignore[method-assign]


def _check_size_against_weights(model: HFModel, auto: Any, config: Any) -> None:
    """Refuse, before anything is allocated, a config.json describing a model larger than its weight files could
    hold (at 2 bytes a weight): a vocab_size of 10**8 made the build allocate 13 GB for weights the folder never
    had. The model is built on PyTorch's meta device, which allocates nothing, to count its weights. Weight files
    are counted through links (a Hugging Face cache's snapshot folder links each to its blob: what loads)."""
    import torch

    weight_bytes = sum(loaded_weight_files(Path(model.folder)).values())
    _check_structure_counts(model)
    with torch.device("meta"), _modules_bounded(model.folder, MAX_SKELETON_MODULES):
        skeleton = auto.from_config(config, attn_implementation="eager", trust_remote_code=False)
    count = sum(p.numel() for p in skeleton.parameters())
    if 2 * count > weight_bytes * 1.05 + (16 << 20):
        raise TritongenError(
            f"{model.folder}/config.json describes a model of {count:,} weights ({2 * count / 1e6:,.0f} MB at 16 bits "
            f"or more), but the folder's weight files hold {weight_bytes / 1e6:,.0f} MB",
            "save the fine-tuned model itself with save_pretrained (its config.json describes the model its weights "
            "hold)",
        )


def _unused_weight(model: HFModel, hf: Any, key: str) -> bool:
    """Whether a weight the checkpoint lacks never reaches what the build serves: a pooler's where the model serves
    its token embeddings (``last_hidden_state``: a RobertaForMaskedLM checkpoint, roberta-base itself, saves no
    pooler), or one the model class itself lists as fine to lack (``_keys_to_ignore_on_load_missing``)."""
    import re

    if model.task == "feature-extraction" and model.output_names[:1] == ("last_hidden_state",):
        if key.startswith("pooler.") or ".pooler." in key:
            return True
    patterns = getattr(type(hf), "_keys_to_ignore_on_load_missing", None) or ()
    return any(isinstance(p, str) and re.search(p, key) for p in patterns)


def loaded_from_hf(model: HFModel) -> LoadedHF:
    """Load the weights with transformers (offline, safe unpickling) and wrap them to take/return tensors."""
    import torch
    import transformers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    auto = {
        "text-classification": transformers.AutoModelForSequenceClassification,
        "feature-extraction": transformers.AutoModel,
        "image-classification": transformers.AutoModelForImageClassification,
    }[model.task]
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # a raw tqdm bar would break the build's stage output
    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()  # its load report (with terminal escapes): our error says it
    try:
        config = _config_object(model)
        _check_size_against_weights(model, auto, config)
        hf, info = auto.from_pretrained(
            str(model.folder),
            config=config,
            local_files_only=True,
            attn_implementation="eager",
            trust_remote_code=False,
            output_loading_info=True,
        )  # a config whose auto_map names code of its own is refused, not prompted for ("run the custom code? [y/N]")
    except TritongenError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise TritongenError(
            f"cannot load the {model.task} model in {model.folder}: {str(exc).strip().splitlines()[0][:300]}",
            "check the folder was written by save_pretrained, or pass --task with the right task",
        ) from None
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()
    missing = sorted(k for k in map(str, info.get("missing_keys") or ()) if not _unused_weight(model, hf, k))
    if missing:  # transformers fills them with random numbers: the model would answer, wrongly
        raise TritongenError(
            f"the weights in {model.folder} lack {len(missing)} tensor(s) the {model.task} model needs "
            f"({', '.join(shown(k, 80) for k in missing[:3])}{', ...' if len(missing) > 3 else ''}); loading would "
            "fill them with random numbers",
            "save the fine-tuned model itself with save_pretrained (its config.json describes the model its "
            "weights hold), or pass --task matching the head it was trained with",
        )
    # a config.json saying "torch_dtype": "float16" (many checkpoints do) loads the model in FP16: the export and
    # its parity gate are FP32's (precision variants are the build's own, behind its guard)
    hf = hf.float().eval()
    names = tuple(t.name for t in model.inputs)

    class TextModel(torch.nn.Module):
        def __init__(self, inner, output: str) -> None:
            super().__init__()
            self.inner = inner
            self.output = output

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)[self.output]

    class TextModelWithTypes(TextModel):
        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True
            )[self.output]

    class ImageModel(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values):
            return self.inner(pixel_values=pixel_values, return_dict=True).logits

    if model.task == "image-classification":
        wrapped: torch.nn.Module = ImageModel(hf)
    else:
        wrapped = (TextModelWithTypes if "token_type_ids" in names else TextModel)(hf, model.output_names[0])
    return LoadedHF(module=wrapped.eval(), form="huggingface", source=model.folder)
