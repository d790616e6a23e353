"""The bounded .npz/.npy reader (tritongen/npz.py): a header that disagrees with its data is one error line."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from tests.test_bad_input import _assert_one_clean_line, _run
from tritongen.errors import TritongenError
from tritongen.npz import arrays_from_npz


def _npy(descr: object, shape: tuple[int, ...], payload: bytes) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + payload


# shape (2,) of '(2,)<f4' is 16 bytes, as the data holds: each item is itself an array of 2, so np.frombuffer made 4
# items and the reshape to (2,) raised ValueError
SUBARRAY = _npy("(2,)<f4", (2,), np.arange(4, dtype="<f4").tobytes())


def test_a_subarray_dtype_is_refused_in_an_npz_and_an_npy(tmp_path):
    with zipfile.ZipFile(tmp_path / "sub.npz", "w") as zf:
        zf.writestr("x.npy", SUBARRAY)
    (tmp_path / "sub.npy").write_bytes(SUBARRAY)
    for name in ("sub.npz", "sub.npy"):
        with pytest.raises(TritongenError, match=r"has the subarray dtype \('<f4', \(2,\)\)"):
            arrays_from_npz(tmp_path / name)
    plain = _npy("<f4", (2, 2), np.arange(4, dtype="<f4").tobytes())  # the same bytes as the plain array they are
    (tmp_path / "plain.npy").write_bytes(plain)
    np.testing.assert_array_equal(arrays_from_npz(tmp_path / "plain.npy")["input"], np.arange(4.0).reshape(2, 2))


def test_infer_with_a_subarray_dtype_sample_is_one_error_line(tmp_path):
    with zipfile.ZipFile(tmp_path / "sub.npz", "w") as zf:
        zf.writestr("x.npy", SUBARRAY)
    code, out, err = _run(["infer", "double", "--url", "127.0.0.1:9", "--input-file", str(tmp_path / "sub.npz")])
    _assert_one_clean_line("subarray dtype", code, out, err, ("sub.npz", "subarray dtype", "plain dtype"))


def test_a_folder_given_as_a_sample_file_is_named_a_folder(tmp_path):
    """It was "does not exist" for a folder that plainly does."""
    with pytest.raises(TritongenError, match=f"sample file {tmp_path} is a folder: pass an .npz"):
        arrays_from_npz(tmp_path)


def test_an_empty_array_whose_other_dimensions_are_huge_is_refused(tmp_path):
    """Shape (10**12, 0) is zero bytes, so the byte bound passed it: 256 bytes of .npz claimed 10**12 rows."""
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as zf:
        zf.writestr("x.npy", _npy("<f4", (10**12, 0), b""))
    with pytest.raises(TritongenError, match=r"empty shape \[1000000000000, 0\].* more than the \d+ tritongen reads"):
        arrays_from_npz(tmp_path / "huge.npz")
    np.savez(tmp_path / "empty.npz", a=np.zeros((0, 4), np.float32), b=np.zeros((8, 0)), c=np.zeros((0,)))
    arrays = arrays_from_npz(tmp_path / "empty.npz")
    assert {k: v.shape for k, v in arrays.items()} == {"a": (0, 4), "b": (8, 0), "c": (0,)}


def test_arrays_of_any_name_are_written_and_read_back(tmp_path):
    """numpy.savez(f, **arrays) took a tensor named 'file' for its own argument (a TypeError after the inference
    ran, and a build with an output named file failed); a BYTES tensor comes back as bytes, not a pickle."""
    from tritongen.npz import arrays_from_npz, write_npz

    arrays = {
        "file": np.arange(6, dtype=np.float32).reshape(2, 3),
        "allow_pickle": np.array([1, 2], np.int64),
        "text": np.array([b"a", b"bc"], dtype=object),
    }
    write_npz(tmp_path / "x.npz", arrays)
    back = arrays_from_npz(tmp_path / "x.npz")
    np.testing.assert_array_equal(back["file"], arrays["file"])
    np.testing.assert_array_equal(back["allow_pickle"], arrays["allow_pickle"])
    assert back["text"].tolist() == [b"a", b"bc"]
    loaded = np.load(tmp_path / "x.npz")  # numpy reads it as its own
    assert sorted(loaded.files) == ["allow_pickle", "file", "text"]


def test_a_build_whose_input_and_output_are_named_file(tmp_path):
    torch = pytest.importorskip("torch")
    import tritongen

    class Double(torch.nn.Module):
        def forward(self, x):
            return x * 2

    result = tritongen.build(
        Double(), example_inputs={"file": torch.randn(2, 3)}, outputs=["allow_pickle"], name="f", repo=tmp_path
    )
    assert result.parity.ok and (result.model_dir / "1" / "tritongen").is_dir()


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", "a\nb", ".", ""])
def test_a_name_no_npz_member_can_hold_is_refused_before_writing(tmp_path, name):
    """A server's output named '../x' was saved as the member '../x.npy' (a path traversal for whoever unpacks it),
    which tritongen's own reader then refused."""
    from tritongen.errors import TritongenError
    from tritongen.npz import write_npz

    with pytest.raises(TritongenError, match="cannot name an array of an .npz file"):
        write_npz(tmp_path / "o.npz", {"ok": np.zeros(2), name: np.zeros(2)})
    with pytest.raises(TritongenError, match="or another name equal but for case"):
        write_npz(tmp_path / "o.npz", {"X": np.zeros(2), "x": np.zeros(2)})
    assert not (tmp_path / "o.npz").exists()


def test_more_dimensions_than_an_array_may_have_is_one_error_line(tmp_path):
    """A header of 41 dims passed every check, then numpy's reshape raised ValueError (a traceback out of build,
    --calib-data and infer --input-file)."""
    deep = _npy("<f4", (2,) + (1,) * 39 + (4,), np.zeros(8, "<f4").tobytes())
    (tmp_path / "deep.npy").write_bytes(deep)
    with zipfile.ZipFile(tmp_path / "deep.npz", "w") as zf:
        zf.writestr("x.npy", deep)
    for name in ("deep.npy", "deep.npz"):
        with pytest.raises(TritongenError, match="claims 41 dimensions, more than the 32 an array may have"):
            arrays_from_npz(tmp_path / name)
    code, out, err = _run(["infer", "double", "--url", "127.0.0.1:9", "--input-file", str(tmp_path / "deep.npz")])
    _assert_one_clean_line("41 dims", code, out, err, ("deep.npz", "41 dimensions"))
    flat = _npy("<f4", (1,) * 32, np.zeros(1, "<f4").tobytes())  # numpy's most
    (tmp_path / "flat.npy").write_bytes(flat)
    assert arrays_from_npz(tmp_path / "flat.npy")["input"].ndim == 32


def test_calibration_rows_past_the_bound_are_refused_before_they_are_split(tmp_path):
    """236 bytes of .npz claiming shape (100000000, 0) made 10**8 calibration rows: 23 GB, then the OOM killer. An
    empty variable dimension stays a valid sample (an empty cache)."""
    from tritongen.precision.calibration import MAX_CALIB_SAMPLES, calibration_data_from_path
    from tritongen.spec import TensorSpec

    with zipfile.ZipFile(tmp_path / "rows.npz", "w") as zf:
        zf.writestr("x.npy", _npy("<f4", (100_000_000, 0), b""))
    inputs = (TensorSpec("x", "FP32", (-1,)),)
    with pytest.raises(TritongenError, match=f"holds more than {MAX_CALIB_SAMPLES} samples"):
        calibration_data_from_path(tmp_path / "rows.npz", inputs, True, 8)
    np.savez(tmp_path / "empty.npz", x=np.zeros((32, 0), np.float32))
    assert calibration_data_from_path(tmp_path / "empty.npz", inputs, True, 8).calib_samples == 24


def test_a_wav_given_as_samples_points_at_infer_sequence(tmp_path):
    """infer vad --input-file speech.wav (without --sequence) said only 'save the samples with numpy.savez'."""
    import wave

    with wave.open(str(tmp_path / "speech.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(1600, np.int16).tobytes())
    with pytest.raises(TritongenError) as err:
        arrays_from_npz(tmp_path / "speech.wav")
    assert "it is a WAV audio file" in err.value.problem and "--sequence --input-file" in err.value.fix


def test_a_shape_of_booleans_is_one_error_line(tmp_path):
    """Found by an attacker: numpy's header parser takes (True, 16) (a bool is an int to isinstance), and the
    reshape then raised TypeError out of build --calib-data, perf --input-data, infer --input-file and
    build --sample-inputs."""
    odd = _npy("<f4", (True, 16), np.zeros(16, "<f4").tobytes())  # type: ignore[arg-type]
    (tmp_path / "bool.npy").write_bytes(odd)
    with zipfile.ZipFile(tmp_path / "bool.npz", "w") as zf:
        zf.writestr("x.npy", odd)
    for name in ("bool.npy", "bool.npz"):
        with pytest.raises(TritongenError, match=r"has a shape that is not whole numbers \(\(True, 16\)\)"):
            arrays_from_npz(tmp_path / name)
    code, out, err = _run(["infer", "double", "--url", "127.0.0.1:9", "--input-file", str(tmp_path / "bool.npz")])
    _assert_one_clean_line("bool shape", code, out, err, ("bool.npz", "not whole numbers"))
