"""Request-side input that once crashed or misled ``infer`` and ``perf``: each is one ``error:`` line now, or the
figures stay ones the results reader takes back. No server is needed: every check runs before a request is sent."""

from __future__ import annotations

import numpy as np
import pytest

from tritongen.errors import TritongenError

METADATA = {
    "name": "m",
    "max_batch_size": 8,
    "inputs": [
        {"name": "t", "datatype": "BYTES", "shape": [-1, 1]},
        {"name": "x", "datatype": "FP32", "shape": [-1, 2]},
    ],
}


def test_text_utf8_cannot_encode_is_refused_before_sending():
    """``--text $'\\xff'`` reaches Python as a lone surrogate: str.encode raised UnicodeEncodeError (a traceback)."""
    from tritongen.infer import ensemble_inputs_from_files

    with pytest.raises(TritongenError, match="is not valid UTF-8 text") as caught:
        ensemble_inputs_from_files(texts=("ok", "bad \udcff"))
    assert "\n" not in str(caught.value)
    assert ensemble_inputs_from_files(texts=("ünïcode",))["TEXT"][0, 0] == "ünïcode".encode()


def test_an_input_array_holding_a_lone_surrogate_is_refused_where_inputs_are_checked():
    """A '<U' array in ``perf --input-data`` failed in tritonclient's serialize_byte_tensor, mid-level."""
    from tritongen.perf.inputs import check_arrays_against_metadata

    good = {"t": np.array([["fine"]]), "x": np.zeros((1, 2), np.float32)}
    check_arrays_against_metadata(good, METADATA, "f.npz")
    bad = {**good, "t": np.array([["a\udcff"]])}
    with pytest.raises(TritongenError, match="input 't' from f.npz holds text UTF-8 cannot encode"):
        check_arrays_against_metadata(bad, METADATA, "f.npz")


def test_an_empty_batch_is_named_as_one_not_as_differing_batch_sizes():
    from tritongen.perf.inputs import check_arrays_against_metadata, request_set_from_arrays

    empty = {"t": np.zeros((0, 1), "S1"), "x": np.zeros((0, 2), np.float32)}
    with pytest.raises(TritongenError, match="input 't' from e.npz holds no rows"):
        check_arrays_against_metadata(empty, METADATA, "e.npz")
    with pytest.raises(TritongenError, match="array 'x' in e.npz holds no rows"):
        request_set_from_arrays({"x": np.zeros((0, 2), np.float32)}, True, "e.npz")
    with pytest.raises(TritongenError, match=r"array 'x' in e.npz is a single value \(0-d\)"):
        request_set_from_arrays({"x": np.float32(1)}, True, "e.npz")


def test_stacking_no_answers_or_answers_of_different_shapes_is_one_error():
    """An empty batch to a sequence model reached stacked([]): IndexError; variable-size outputs a ValueError."""
    from tritongen.infer_sequence import stacked

    with pytest.raises(TritongenError, match="the input holds no rows"):
        stacked([])
    with pytest.raises(TritongenError, match=r"output 'y' came back in different shapes per request \(\[2\], \[3\]\)"):
        stacked([{"y": np.zeros((1, 2))}, {"y": np.zeros((1, 3))}])
    assert stacked([{"y": np.zeros((1, 2))}, {"y": np.ones((1, 2))}])["y"].shape == (2, 2)


def test_a_chunk_size_past_any_request_is_refused_before_a_padded_chunk_is_made():
    """``--chunk-size 1099511627776`` allocated 4 TiB of zero padding (ArrayMemoryError) before the shape check."""
    from tritongen.infer_sequence import MAX_REQUEST_BYTES, chunks_from_arrays

    samples = np.zeros(1000, np.float32)
    f32 = {"x": np.dtype(np.float32)}
    with pytest.raises(TritongenError, match="bytes, over the 512 MiB tritongen sends in one"):
        chunks_from_arrays({"x": samples}, 2**40, f32, {"x": [-1]})
    assert MAX_REQUEST_BYTES // 4 < 2**40
    with pytest.raises(TritongenError, match=r"would be \[4096\], and the model takes \[512\]"):
        chunks_from_arrays({"x": samples}, 4096, f32, {"x": [512]})  # refused from the shape, before padding
    assert [c["x"].shape for c in chunks_from_arrays({"x": samples}, 600, f32, {"x": [-1]})] == [(1, 600)] * 2


def test_a_stream_whose_values_the_models_type_would_change_is_refused():
    """Float32 [0.7, 1.9, nan] to an INT64 input went as [0, 1, -9223372036854775808] with a RuntimeWarning."""
    from tritongen.infer_sequence import chunks_from_arrays

    i64 = {"x": np.dtype(np.int64)}
    for bad in (np.array([0.7, 1.9, 3.0], np.float32), np.array([1.0, np.nan], np.float32), np.array([2**40])):
        want = i64 if bad.dtype != np.int64 else {"x": np.dtype(np.int16)}
        with pytest.raises(TritongenError, match="some would change"):
            chunks_from_arrays({"x": bad}, 1, want, {"x": [1]})
    whole = chunks_from_arrays({"x": np.array([1.0, 2.0], np.float32)}, 1, i64, {"x": [1]})
    assert [int(c["x"][0, 0]) for c in whole] == [1, 2] and whole[0]["x"].dtype == np.int64
    halves = chunks_from_arrays({"x": np.array([0.5, 0.25])}, 1, {"x": np.dtype(np.float32)}, {"x": [1]})
    assert halves[1]["x"].dtype == np.float32  # float64 to FP32: a float file to a float input is rounding only
    # wrap-around a round trip hides, and finite values a narrower float makes infinite (a reviewer's cases)
    for bad, want in (
        (np.array([2**64 - 1], np.uint64), np.int64),
        (np.array([-1], np.int32), np.uint32),
        (np.array([1e300]), np.float32),
        (np.array([1e6], np.float32), np.float16),
        (np.array([2.0**63]), np.int64),
    ):
        with pytest.raises(TritongenError, match="some would change"):
            chunks_from_arrays({"x": bad}, 1, {"x": np.dtype(want)}, {"x": [1]})
    edge = chunks_from_arrays({"x": np.array([2**63 - 1, -(2**63)], np.int64)}, 1, i64, {"x": [1]})
    assert int(edge[0]["x"][0, 0]) == 2**63 - 1


def test_sequence_ids_past_int64_are_refused_by_the_spec_and_by_the_client():
    """--sequence-id 99999999999999999999 was reported as the server rejecting the request, with nothing listening."""
    from tritongen.client import MAX_SEQUENCE_ID, infer_sequence_from_chunks
    from tritongen.infer import InferSpec

    with pytest.raises(TritongenError, match="--sequence-id 99999999999999999999 is over"):
        InferSpec(name="m", sequence_id=99999999999999999999)
    assert InferSpec(name="m", sequence_id=MAX_SEQUENCE_ID).sequence_id == MAX_SEQUENCE_ID
    with pytest.raises(TritongenError, match="outside 1.."):  # the per-row path adds the row's index
        infer_sequence_from_chunks("127.0.0.1:1", "m", [{"x": np.zeros((1, 1))}], MAX_SEQUENCE_ID + 1)


def test_statistics_whose_counts_went_down_give_no_breakdown_rather_than_negative_figures():
    """A version unloaded mid-level resets its counts: the table showed batch -1.00 and perf --compare then refused
    the results.json perf had just written (executions -3000)."""
    from tritongen.client import _statistics_from_answer
    from tritongen.perf.results import server_breakdown_from_stats

    def answer(success, executions):
        stats = {"success": {"count": success, "ns": 1000 * success}}
        for key in ("queue", "compute_input", "compute_infer", "compute_output"):
            stats[key] = {"count": success, "ns": 100 * success}
        return {"model_stats": [{"execution_count": executions, "inference_count": success, "inference_stats": stats}]}

    before = _statistics_from_answer(answer(4000, 4000), "m")
    after = _statistics_from_answer(answer(5000, 1000), "m")
    assert server_breakdown_from_stats(before, after).requests == 0
    good = server_breakdown_from_stats(before, _statistics_from_answer(answer(5000, 4500), "m"))
    assert (good.requests, good.executions) == (1000, 500)
    with pytest.raises(ValueError, match="is not a count"):
        _statistics_from_answer(answer(-5, 1), "m")


def test_distinct_error_kinds_per_level_are_bounded():
    """A server naming every failure differently made one results.json key per failure, past the reader's 4 MiB."""
    from tritongen.perf.loadgen import MAX_ERROR_KIND_CHARS, MAX_ERROR_KINDS, OTHER_ERRORS, Recorder

    rec = Recorder()
    for i in range(3 * MAX_ERROR_KINDS):
        rec.add(float(i), 0.001, f"rejected: request {i} " + "x" * 1000)
    rec.add(99.0, 0.001, None)
    kinds = {e for e in rec.errors if e is not None}
    assert len(kinds) == MAX_ERROR_KINDS + 1 and OTHER_ERRORS in kinds
    assert max(len(k) for k in kinds) <= MAX_ERROR_KIND_CHARS
    assert rec.errors.count(OTHER_ERRORS) == 2 * MAX_ERROR_KINDS and rec.errors[-1] is None


def test_an_output_file_keeps_text_exactly_or_refuses():
    """b'a\\x00' came back as b'a' (numpy's fixed-width bytes drop trailing NULs); an empty output became float64."""
    from tritongen.npz import arrays_from_npz, npz_bytes

    with pytest.raises(TritongenError, match="holds bytes ending in NUL"):
        npz_bytes({"y": np.array([b"a\x00"], dtype=object)})
    import io
    import zipfile

    data = npz_bytes({"e": np.array([], dtype=object).reshape(0, 1), "t": np.array([[b"ab"], [b""]], dtype=object)})
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == ["e.npy", "t.npy"]
    import pathlib
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "o.npz"
        path.write_bytes(data)
        read = arrays_from_npz(path)
    assert read["e"].dtype.kind == "S" and read["e"].shape == (0, 1)
    assert read["t"].tolist() == [[b"ab"], [b""]]


def test_perf_analyzer_input_data_refuses_binary_bytes_it_cannot_carry():
    """An image ensemble's JPEG bytes went through bytes.decode(): a UnicodeDecodeError traceback."""
    from tritongen.perf.inputs import RequestSet
    from tritongen.perf.perf_analyzer import input_data_from_requests

    text = RequestSet(({"t": np.array([[b"hello"]], dtype=object)},), True, "f")
    assert input_data_from_requests(text)["data"][0]["t"]["content"] == ["hello"]
    image = RequestSet(({"IMAGE": np.array([[b"\xff\xd8\xff\xe0"]], dtype=object)},), True, "f")
    with pytest.raises(TritongenError, match="input 'IMAGE' holds binary bytes"):
        input_data_from_requests(image)


def test_big_endian_arrays_get_the_conversion_that_fixes_them():
    from tritongen.dtypes import triton_from_numpy

    with pytest.raises(TritongenError, match=r"array.astype\('<f4'\)"):
        triton_from_numpy(np.dtype(">f4"))
    with pytest.raises(TritongenError, match="or to bytes") as caught:
        triton_from_numpy(np.dtype("V4"))
    assert "object" not in caught.value.fix  # object arrays are pickles, which no sample file may hold


def test_a_wav_is_read_once_and_its_rate_checked_from_those_bytes(tmp_path, monkeypatch):
    """The rate check opened the file, then the reader opened it again: a file swapped in between went unchecked."""
    import wave

    from tritongen import infer_sequence

    with wave.open(str(tmp_path / "a.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(44100)
        wav.writeframes(np.zeros(10, "<i2").tobytes())
    opened = []
    real_open = wave.open
    monkeypatch.setattr(infer_sequence.wave, "open", lambda f, mode: opened.append(f) or real_open(f, mode))
    with pytest.raises(TritongenError, match="44100 Hz audio, and the model was built for sr=16000"):
        infer_sequence.arrays_from_stream_file(tmp_path / "a.wav", ["x"], {"sr": 16000})
    assert len(opened) == 1 and not isinstance(opened[0], str)  # parsed from the bytes read, not the path
