"""tritongen.fields: values checked and converted against their annotations (the specs' and the API's)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest

from tritongen.errors import TritongenError
from tritongen.fields import check_fields, check_value


class _Place(os.PathLike):
    def __fspath__(self) -> str:
        return "/tmp/place"


@pytest.mark.parametrize(
    "value, annotation, want",
    [
        (3, float, 3.0),
        (np.int64(3), int, 3),
        ("a.npz", Path | None, Path("a.npz")),
        (_Place(), Path, Path("/tmp/place")),
        (PurePosixPath("x"), str | Path, Path("x")),
        ("hello", tuple[str, ...], ("hello",)),  # one text, not its letters
        ([[1], {"a": 1}], Sequence[Any], ([1], {"a": 1})),  # a list of anything: its items, not one item
        ("x", Sequence[Any], ("x",)),
        ({"sr": 1}, Iterable[Any] | Mapping[str, Any], {"sr": 1}),  # a mapping goes to the union's Mapping
        ("sr=1", Iterable[Any] | Mapping[str, Any], ("sr=1",)),
        ("cat.jpg", tuple[Path, ...], (Path("cat.jpg"),)),
        (4, tuple[int, ...], (4,)),
        ([1, 2], tuple[int, ...], (1, 2)),
        ("abc", Sequence[str], ("abc",)),
        ([("1", 90)], tuple[tuple[str, int], ...], (("1", 90),)),
        ({"a": "b"}, Mapping[str, str], {"a": "b"}),
        (None, int | None, None),
    ],
)
def test_values_are_converted_to_their_annotation(value, annotation, want):
    assert check_value(value, annotation, "x", "test") == want


@pytest.mark.parametrize(
    "value, annotation, message",
    [
        ("5", float, r"test option x='5' is a str, not a number: pass the number itself, not text: x=5$"),
        (True, int, r"x=True is a bool, not a whole number"),
        (1.5, int, r"x=1.5 is a float, not a whole number"),
        (1, bool, r"x=1 is an int, not True or False"),
        (8001, str | None, r"x=8001 is an int, not text \(a str\) or None"),
        (5, Path, r"x=5 is an int, not a path \(str or os.PathLike\)"),
        ([1, "2"], tuple[int, ...], r"x item '2' is a str, not a whole number: .*not text: 2$"),
        (["a=b"], Mapping[str, str], r"x=\['a=b'\] is a list, not a mapping"),
        ({"a": 1}, tuple[str, ...], r"is a dict"),
    ],
)
def test_a_wrong_type_is_one_line_naming_the_field(value, annotation, message):
    with pytest.raises(TritongenError, match=message) as caught:
        check_value(value, annotation, "x", "test")
    assert "\n" not in str(caught.value)


def test_check_fields_converts_in_place_and_parses_text_forms():
    @dataclass(frozen=True)
    class Spec:
        levels: tuple[int, ...] = ()
        path: Path | None = None
        name: str = ""

        def __post_init__(self) -> None:
            check_fields(
                self, "spec", parse={"levels": lambda v: tuple(map(int, v.split(","))) if isinstance(v, str) else v}
            )

    spec = Spec(levels="1,4", path="a")  # type: ignore[arg-type]
    assert spec.levels == (1, 4) and spec.path == Path("a")
    with pytest.raises(TritongenError, match="spec option name=3 is an int"):
        Spec(name=3)  # type: ignore[arg-type]


def test_a_whole_number_too_large_for_a_float_is_refused_cleanly():
    with pytest.raises(TritongenError, match="is an int, not a number"):
        check_value(10**400, float, "max_p99_ms", "tune")


def test_in_api_words_names_keywords_and_keeps_command_lines():
    from tritongen.fields import in_api_words

    options = {"force": bool, "warmup": bool | None, "max_batch_size": int | None, "name": str | None}
    spellings = {"instances": "instance_count=N", "compare": "the runs to tritongen.report(...) instead"}
    cases = [
        ("pass --force to replace it", "pass force=True to replace it"),
        ("--max-batch-size -1 is negative", "max_batch_size -1 is negative"),
        ("drop --no-warmup, or choose another --name", "drop warmup=False, or choose another name"),
        ("pass --instances 2", "pass instance_count 2"),
        (
            "rebuild it with tritongen build --force, or pass --force",
            "rebuild it with tritongen build --force, or pass force=True",
        ),
        ("(tritongen build SOURCE --name m --force)", "(tritongen build SOURCE --name m --force)"),
        ("--compare and --unknown-flag stay", "--compare and --unknown-flag stay"),  # no keyword for either
        ("--perf-analyzer-args sets '--force'", "--perf-analyzer-args sets '--force'"),  # quoted: another tool's
        ("--forceful is no option", "--forceful is no option"),
    ]
    for text, want in cases:
        assert in_api_words(text, options, spellings) == want, text


def _spec(kind: str, tmp_path: Path, **given: Any) -> Any:
    from tritongen.infer import InferSpec
    from tritongen.perf.spec import PerfSpec
    from tritongen.server import ServeSpec

    if kind == "perf":
        return PerfSpec(model="m", concurrency=(1,), **given)
    if kind == "infer":
        return InferSpec(name="m", **given)
    return ServeSpec(repo=tmp_path, **given)


@pytest.mark.parametrize(
    "kind, given, words",
    [
        ("perf", {"duration_s": float("nan")}, "perf option duration_s=nan is not a finite number"),
        ("perf", {"warmup_s": float("inf")}, "perf option warmup_s=inf is not a finite number"),
        ("perf", {"request_rates": (10.0, float("nan"))}, "perf option request_rates item nan is not a finite"),
        ("perf", {"stability_pct": -1.0}, "perf option stability_pct=-1.0 is negative"),
        ("perf", {"max_in_flight": 0}, "perf option max_in_flight=0 is below 1"),
        ("infer", {"timeout_s": -1.0}, "infer option timeout_s=-1.0 is not above 0"),
        # past ~9.2e9 s a socket's timeout overflowed: every request failed as a "bad response" from the server
        ("perf", {"timeout_s": 1e10}, "perf option timeout_s=10000000000.0 is more than a day"),
        ("serve", {"ready_timeout_s": 1e6}, "serve option ready_timeout_s=1000000.0 is more than a day"),
        ("infer", {"chunk_size": -1, "sequence": True}, "--chunk-size -1 is below 1"),
        ("infer", {"sequence_id": -1}, "--sequence-id -1 is below 1"),
        ("serve", {"ready_timeout_s": float("nan")}, "serve option ready_timeout_s=nan is not a finite number"),
        ("serve", {"log_verbose": -1}, "serve option log_verbose=-1 is negative"),
    ],
)
def test_numbers_no_run_can_use_are_refused_where_they_enter(tmp_path, kind, given, words):
    """Each was accepted: a NaN request rate ran a level of 0 requests and reported it, a negative timeout sent the
    request and then called it timed out after -1 s."""
    with pytest.raises(TritongenError, match=re.escape(words)):
        _spec(kind, tmp_path, **given)


@pytest.mark.parametrize(
    "given, words",
    [
        ({"atol": float("nan")}, "tolerances must be finite and not negative"),
        ({"rtol": float("inf")}, "tolerances must be finite and not negative"),
        ({"max_queue_delay_us": -5}, "--queue-delay-us -5 is outside 0..60000000"),
        ({"max_queue_delay_us": 2**70}, f"--queue-delay-us {2**70} is outside"),
    ],
)
def test_build_numbers_no_build_can_use_are_refused_before_the_export(tmp_path, given, words):
    from tests import factories
    from tritongen.spec import build_spec_from_options

    path = factories.save_model(factories.make_tiny_linear(), tmp_path / "lin.pt", "torchscript")
    with pytest.raises(TritongenError, match=re.escape(words)):
        build_spec_from_options(path, inputs=["x:FP32:4"], repo=tmp_path / "repo", **given)


def test_top_k_below_1_is_refused(tmp_path):
    from tests import factories
    from tritongen.spec import build_spec_from_options

    path = factories.save_model(factories.make_tiny_linear(), tmp_path / "lin.pt", "torchscript")
    with pytest.raises(TritongenError, match=re.escape("--top-k -1 is below 1")):
        build_spec_from_options(path, inputs=["x:FP32:4"], repo=tmp_path / "repo", top_k=-1)


def test_a_chunk_size_without_sequence_is_refused_not_ignored(capsys):
    """infer --chunk-size 512 without --sequence ran and ignored it (--atol without --expected is refused)."""
    from tests.conftest import run_cli

    code, _, err = run_cli(["infer", "m", "--url", "127.0.0.1:9", "--chunk-size", "512"], capsys)
    assert code == 1 and err.startswith("error: --chunk-size cuts --sequence's input into requests"), err
