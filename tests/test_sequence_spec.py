"""Stateful models without a server: ``--state`` pairs, ``--state-from-attributes``, the sequence_batching config
(parsed back with tritonclient's ModelConfig protobuf), the validator's state rules, and bad input."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import factories
from tests.test_bad_input import _assert_one_clean_line, _run
from tritongen.parity import onnx_session
from tritongen.validate import config_from_file, config_from_text, problems_in_config

ACC = ["--input", "x:FP32:4", "--input", "acc:FP32:4", "--state", "acc:acc_out", "--output", "y", "--output", "acc_out"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stateful")
    return {
        "acc": factories.save_model(factories.Accumulator(), root / "acc.pt", "torchscript"),
        "retype": factories.save_model(factories.StateChangesType(), root / "retype.pt", "torchscript"),
        "sum_eager": factories.save_model(factories.RunningSum(), root / "sum.pt", "pickled_module"),
        "sum_script": factories.save_model(factories.RunningSum(), root / "sum_ts.pt", "torchscript"),
        "list": factories.save_model(factories.KeepsAList(), root / "list.pt", "pickled_module"),
        "counter": factories.save_model(factories.GlobalCounter(), root / "counter.pt", "pickled_module"),
        "buffer": factories.save_model(factories.DecayingBuffer(), root / "buffer.pt", "pickled_module"),
        "growing": factories.save_model(factories.GrowingHistory(), root / "growing.pt", "pickled_module"),
        "branchy": factories.save_model(factories.BranchyState(), root / "branchy.pt", "torchscript"),
    }


@pytest.mark.parametrize("target", ["local", "onnxruntime"])
def test_a_state_pair_makes_a_sequence_model(files, tmp_path, target):
    code, out, err = _run(
        ["build", str(files["acc"]), "--name", "acc", *ACC, "--target", target, "--repo", str(tmp_path)]
    )
    assert code == 0, err
    config = config_from_file(tmp_path / "acc" / "config.pbtxt")
    assert config.WhichOneof("scheduling_choice") == "sequence_batching"
    assert [t.name for t in config.input] == ["x"] and [t.name for t in config.output] == ["y"]
    batcher = config.sequence_batching
    assert batcher.oldest.preferred_batch_size == [8]
    assert not config.model_warmup  # a warm-up request belongs to no sequence
    if target == "local":
        assert {c.name for c in batcher.control_input} == {"START", "END", "READY", "CORRID"}
        assert config.parameters["tritongen_states"].string_value == "acc:acc_out"
        assert not batcher.state
    else:  # Triton keeps the state (implicit state), zeros at a sequence's start
        (state,) = batcher.state
        assert (state.input_name, state.output_name, list(state.dims)) == ("acc", "acc_out", [4])
        assert state.initial_state[0].zero_data and list(state.initial_state[0].dims) == [4]
        assert not batcher.control_input
    assert problems_in_config(config, tmp_path / "acc") == []


def test_a_state_the_exporter_leaves_symbolic_is_measured_on_the_samples(tmp_path):
    """A streaming conv over chunks of any length (state: the last 2 frames) was refused: "state changes dims:
    input [8, 2], output [8, -1]" (the TorchScript exporter loses a slice's size), although it returns [8, 2]. The
    state's shape is now read off the graph's answers; one that really changes (3 frames kept) is refused, as an
    attribute (the stream check) and as an explicit --state pair (the samples), in one line each."""
    common = ["--input", "x:FP32:8,-1", "--dim-range", "x:1:1:16:64", "--allow-pickle", "--repo", str(tmp_path)]
    for keep, name in ((2, "stream"), (3, "broken")):
        path = factories.save_model(factories.StreamingConv(keep), tmp_path / f"{name}.pt", "pickled_module")
        code, out, err = _run(["build", str(path), "--name", name, *common, "--state-from-attributes", "auto"])
        if keep == 2:
            assert code == 0, err
            config = config_from_file(tmp_path / name / "config.pbtxt")
            assert config.parameters["tritongen_states"].string_value == "cache_in:cache_out"
        else:
            _assert_one_clean_line(name, code, out, err, ("a state attribute changes shape between calls",))
        # scripted: the TorchScript exporter loses the slice's size, so only the samples can tell
        path = factories.save_model(factories.StreamingConvExplicit(keep), tmp_path / f"e{name}.pt", "torchscript")
        explicit = ["--input", "cache:FP32:8,2", "--state", "cache:next", "--output", "y", "--output", "next"]
        code, out, err = _run(["build", str(path), "--name", f"e{name}", *common, *explicit])
        if keep == 2:
            assert code == 0, err
        else:
            _assert_one_clean_line(name, code, out, err, ("state 'cache:next' changes shape on the", "[1, 8, 3]"))


def test_an_onnx_file_pairs_its_state_with_the_graphs_own_output_names(tmp_path):
    """`build lstm.onnx --state h:h_next` said "name every output forward() returns with --output", and naming
    them in another order said "drop --output (the names are read from the graph)": the graph names them."""
    path = tmp_path / "acc.onnx"
    torch.onnx.export(
        factories.Accumulator(), (torch.zeros(2, 4), torch.zeros(2, 4)), str(path), input_names=["x", "acc"],
        output_names=["y", "acc_out"], dynamic_axes={n: {0: "b"} for n in ("x", "acc", "y", "acc_out")},
        opset_version=17, dynamo=False,
    )  # fmt: skip
    code, out, err = _run(["build", str(path), "--state", "acc:acc_out", "--repo", str(tmp_path / "repo")])
    assert code == 0, err
    config = config_from_file(tmp_path / "repo" / "acc" / "config.pbtxt")
    assert [t.name for t in config.input] == ["x"] and [t.name for t in config.output] == ["y"]
    assert config.parameters["tritongen_states"].string_value == "acc:acc_out"


def test_a_new_version_with_other_state_tensors_is_refused(files, tmp_path):
    """Only the presence of sequence batching was compared: renamed state tensors rewrote the shared config's
    state for every version, and version 1's graph (acc/acc_out) no longer loaded with it."""
    argv = ["build", str(files["acc"]), "--name", "acc", "--target", "onnxruntime", "--repo", str(tmp_path)]
    assert _run([*argv, *ACC])[0] == 0
    renamed = [a.replace("acc", "h2") for a in ACC]
    code, out, err = _run([*argv, *renamed, "--new-version"])
    assert code == 1 and "sequence state [('acc', 'acc_out')] -> [('h2', 'h2_out')]" in err, err
    assert not (tmp_path / "acc" / "2").exists()


def _stream(module, chunks):
    module = copy.deepcopy(module)
    with torch.inference_mode():
        return [module(torch.from_numpy(c)).numpy() for c in chunks]


@pytest.mark.parametrize("form", ["sum_eager", "sum_script"])
def test_state_attributes_become_state_tensors(files, tmp_path, form):
    code, out, err = _run(
        [
            "build",
            str(files[form]),
            "--name",
            "sum",
            "--input",
            "x:FP32:3",
            "--allow-pickle",
            "--state-from-attributes",
            "auto",
            "--repo",
            str(tmp_path),
        ]
    )
    assert code == 0, err
    assert "state: _sum -> sum_in/sum_out FP32[3]" in err
    session = onnx_session(tmp_path / "sum" / "1" / "model.onnx")
    assert [i.name for i in session.get_inputs()] == ["x", "sum_in"]
    rng = np.random.default_rng(0)
    chunks = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(5)]
    expected = _stream(factories.RunningSum(), chunks)
    state = np.zeros((2, 3), np.float32)
    for chunk, want in zip(chunks, expected):
        got, state = session.run(["output", "sum_out"], {"x": chunk, "sum_in": state})
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_a_buffer_with_the_batch_on_axis_1_becomes_batch_first_state(files, tmp_path):
    code, out, err = _run(
        [
            "build",
            str(files["buffer"]),
            "--name",
            "decay",
            "--input",
            "x:FP32:3",
            "--allow-pickle",
            "--state-from-attributes",
            "auto",
            "--repo",
            str(tmp_path),
        ]
    )
    assert code == 0, err
    assert "state: h -> h_in/h_out FP32[1, 3]" in err  # [1, B, 3] inside, [B, 1, 3] outside
    session = onnx_session(tmp_path / "decay" / "1" / "model.onnx")
    rng = np.random.default_rng(1)
    chunks = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(4)]
    state = np.zeros((4, 1, 3), np.float32)
    for chunk, want in zip(chunks, _stream(factories.DecayingBuffer(), chunks)):
        got, state = session.run(["output", "h_out"], {"x": chunk, "h_in": state})
        np.testing.assert_allclose(got, want, rtol=1e-6)


BAD = [
    (
        "unknown state tensor",
        "acc",
        ["--input", "x:FP32:4", "--state", "h:h_out", "--output", "y"],
        ("state input 'h' is not a declared input",),
    ),
    (
        "state output not named",
        "acc",
        ["--input", "x:FP32:4", "--input", "acc:FP32:4", "--state", "acc:next", "--output", "y", "--output", "acc_out"],
        ("state output 'next'",),
    ),
    ("dtype mismatch", "retype", ACC, ("changes data type", "FP32", "FP64")),
    ("dynamic batching flags", "acc", [*ACC, "--preferred-batch-size", "4"], ("--preferred-batch-size",)),
    ("no batching", "acc", [*ACC, "--max-batch-size", "0"], ("--max-batch-size 1 or more",)),
    (
        "state in a list",
        "list",
        ["--input", "x:FP32:4", "--state-from-attributes", "auto", "--allow-pickle"],
        ("attribute '_seen'", "list"),
    ),
    (
        "state without a batch axis",
        "counter",
        ["--input", "x:FP32:4", "--state-from-attributes", "_count", "--allow-pickle"],
        ("attribute '_count'", "batch"),
    ),
    (
        "attribute the module lacks",
        "counter",
        ["--input", "x:FP32:4", "--state-from-attributes", "_h", "--allow-pickle"],
        ("'_h'", "_count"),
    ),
    (
        "branch on a tensor value",
        "branchy",
        ["--input", "x:FP32:4", "--state-from-attributes", "auto"],
        ("forward() turns a tensor's values into a Python number", "x.sum()"),
    ),
    (
        "a growing state",
        "growing",
        ["--input", "x:FP32:4", "--state-from-attributes", "auto", "--allow-pickle"],
        ("attribute '_history'", "changes shape"),
    ),
    (
        "bookkeeping named as state",
        "sum_eager",
        ["--input", "x:FP32:3", "--state-from-attributes", "_last_batch", "--allow-pickle"],
        ("'_last_batch' is a int",),
    ),
]


@pytest.mark.parametrize("case, model, argv, words", BAD, ids=[c[0] for c in BAD])
def test_bad_state_input_gets_one_clean_line(files, tmp_path, case, model, argv, words):
    repo = tmp_path / "repo"
    code, out, err = _run(["build", str(files[model]), "--name", "m", *argv, "--repo", str(repo)])
    _assert_one_clean_line(case, code, out, err, words)
    assert not (repo / "m").exists()


def test_tune_refuses_a_sequence_model(files, tmp_path):
    code, _, err = _run(["build", str(files["acc"]), "--name", "acc", *ACC, "--repo", str(tmp_path)])
    assert code == 0, err
    code, out, err = _run(["tune", str(tmp_path / "acc"), "--max-p99-ms", "10", "--url", "127.0.0.1:1"])
    _assert_one_clean_line("tune a sequence model", code, out, err, ("sequence model", "tritongen perf"))


def test_a_spec_file_declares_states(files, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "inputs: [{name: x, dims: [4]}, {name: acc, dims: [4]}]\noutputs: [y, acc_out]\nstates: ['acc:acc_out']\n"
    )
    code, out, err = _run(
        ["build", str(files["acc"]), "--name", "acc", "--spec", str(spec), "--repo", str(tmp_path / "repo")]
    )
    assert code == 0, err
    assert "tritongen_states" in (tmp_path / "repo" / "acc" / "config.pbtxt").read_text()


IMPLICIT = """
name: "m"
backend: "onnxruntime"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
sequence_batching {
  oldest { max_candidate_sequences: 8 }
  state {
    input_name: "acc" output_name: "acc_out" data_type: TYPE_FP32 dims: [ 4 ]
    initial_state { name: "zeros" data_type: TYPE_FP32 dims: [ 4 ] zero_data: true }
  }
}
"""


@pytest.mark.parametrize(
    "edit, words",
    [
        (
            ('{ name: "zeros" data_type: TYPE_FP32', '{ name: "zeros" data_type: TYPE_INT32'),
            "does not match the state data type",
        ),
        (('name: "zeros" ', ""), "Field 'name' must be set"),
        (("dims: [ 4 ] zero_data", "dims: [ 5 ] zero_data"), "doesn't match 'state' dim description. 5 != 4"),
        (("dims: [ 4 ] zero_data", "dims: [ -1 ] zero_data"), "contains variable dimensions"),
        (('input [ { name: "x"', 'input [ { name: "acc"'), "also listed under input"),
        (('backend: "onnxruntime"', 'backend: "python"'), "needs a backend that keeps it"),
    ],
)
def test_the_validator_applies_tritons_state_rules(edit, words):
    config = config_from_text(IMPLICIT.replace(*edit))
    problems = problems_in_config(config)
    assert any(words in p for p in problems), problems


def test_the_validator_checks_state_tensors_against_the_graph(files, tmp_path):
    code, _, err = _run(
        ["build", str(files["acc"]), "--name", "acc", *ACC, "--target", "onnxruntime", "--repo", str(tmp_path)]
    )
    assert code == 0, err
    config_path = tmp_path / "acc" / "config.pbtxt"
    text = config_path.read_text()
    state_block = text[text.index("  state {") :]
    config_path.write_text(text.replace(state_block, state_block.replace("TYPE_FP32", "TYPE_INT32")))
    problems = problems_in_config(config_from_file(config_path), tmp_path / "acc")
    assert any("state input 'acc' of model acc is FP32 in the graph but TYPE_INT32" in p for p in problems), problems
    config_path.write_text(text.replace('input_name: "acc"', 'input_name: "hidden"'))
    problems = problems_in_config(config_from_file(config_path), tmp_path / "acc")
    assert any("state input 'hidden' of model acc is not an input of 1/model.onnx" in p for p in problems), problems


def test_one_scheduler_only(tmp_path):
    text = IMPLICIT.replace("sequence_batching {", "dynamic_batching { }\nsequence_batching {")
    folder = tmp_path / "repo" / "m"
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(text)
    code, out, err = _run(["validate", str(tmp_path / "repo")])
    _assert_one_clean_line("two schedulers", code, out, err, ("1 problem",))
    assert "keep one scheduler: dynamic_batching, sequence_batching" in err


def test_sequence_tracker_starts_and_ends_each_streams_sequences():
    from tritongen.perf.sequences import SequenceTracker

    tracker = SequenceTracker(3)
    sent = [tracker.next(worker) for _ in range(4) for worker in (0, 1)]
    assert [s for s in sent if s[0] == 1] == [(1, True, False), (1, False, False), (1, False, True)]
    assert [s for s in sent if s[0] == 2] == [(2, True, False), (2, False, False), (2, False, True)]
    assert sent[-2:] == [(3, True, False), (4, True, False)]  # a new ID per new sequence, never reused


def test_sequence_parameters_on_the_wire():
    import json

    from tritonclient.grpc import service_pb2

    from tritongen.perf.rawgrpc import grpc_request_bytes
    from tritongen.perf.sequences import grpc_sequence_bytes, http_sequence_body

    message = service_pb2.ModelInferRequest()
    message.ParseFromString(
        grpc_request_bytes("vad", {"x": np.zeros((1, 4), np.float32)}) + grpc_sequence_bytes(7, True, False)
    )
    assert message.model_name == "vad" and message.inputs[0].name == "x"
    assert message.parameters["sequence_id"].int64_param == 7
    assert message.parameters["sequence_start"].bool_param and not message.parameters["sequence_end"].bool_param
    header = json.dumps({"inputs": [{"name": "x"}]}).encode()
    body, headers = http_sequence_body(
        header + b"\0" * 16, {"Inference-Header-Content-Length": str(len(header))}, 9, False, True
    )
    size = int(headers["Inference-Header-Content-Length"])
    assert json.loads(body[:size])["parameters"] == {"sequence_id": 9, "sequence_start": False, "sequence_end": True}
    assert body[size:] == b"\0" * 16


def test_perf_analyzer_gets_the_sequence_options(tmp_path):
    from tritongen.perf import PerfSpec
    from tritongen.perf.inputs import RequestSet
    from tritongen.perf.perf_analyzer import PerfAnalyzerInstall, command_from_spec

    requests = RequestSet(
        requests=({"x": np.zeros((1, 512), np.float32)},), batched=True, source="test", sequence_length=20
    )
    spec = PerfSpec(model="vad", url="127.0.0.1:8001", concurrency=(4,))
    command = command_from_spec(
        PerfAnalyzerInstall(tmp_path / "perf_analyzer", {}),
        spec,
        "concurrency",
        4,
        tmp_path / "data.json",
        tmp_path / "out.csv",
        requests,
    )
    at = command.index("--sequence-length")
    assert command[at + 1] == "20" and "--serial-sequences" in command
    assert command[command.index("--sequence-length-variation") + 1] == "0"


def test_streams_are_cut_into_padded_chunks(tmp_path):
    import wave

    from tritongen.errors import TritongenError
    from tritongen.infer_sequence import arrays_from_stream_file, chunks_from_arrays

    pcm = (np.arange(1000) - 500).astype("<i2")
    with wave.open(str(tmp_path / "a.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(pcm.tobytes())
    (samples,) = arrays_from_stream_file(tmp_path / "a.wav", ["x"]).values()
    np.testing.assert_allclose(samples, pcm / 32768.0, rtol=1e-6)
    chunks = chunks_from_arrays({"x": samples}, 512, {"x": np.dtype(np.float32)})
    assert [c["x"].shape for c in chunks] == [(1, 512), (1, 512)]
    assert np.all(chunks[1]["x"][0, 1000 - 512 :] == 0)  # the last chunk zero-padded
    with wave.open(str(tmp_path / "stereo.wav"), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(np.zeros(20, "<i2").tobytes())
    with pytest.raises(TritongenError, match="2 channels"):
        arrays_from_stream_file(tmp_path / "stereo.wav", ["x"])
    with pytest.raises(TritongenError, match="takes 2 inputs"):
        arrays_from_stream_file(tmp_path / "a.wav", ["x", "y"])


def test_a_stream_is_cut_as_the_models_dims_say_and_checked_before_sending():
    """A newcomer's frame-wise model (dims [4]) got its natural [T, 4] file as [1, 4, 4] requests and a channel-
    first one (dims [8, -1]) its [8, 60] file as [1, 8, 60]: both refused by Triton with its long message."""
    from tritongen.errors import TritongenError
    from tritongen.infer_sequence import chunks_from_arrays

    f32 = {"x": np.dtype(np.float32)}
    frames = np.arange(20, dtype=np.float32).reshape(5, 4)
    chunks = chunks_from_arrays({"x": frames}, None, f32, {"x": [4]})  # one request per step
    assert [c["x"].shape for c in chunks] == [(1, 4)] * 5 and np.array_equal(chunks[2]["x"][0], frames[2])
    with pytest.raises(TritongenError, match="one request per step of \\[4\\], so --chunk-size 2 cannot apply"):
        chunks_from_arrays({"x": frames}, 2, f32, {"x": [4]})
    channels = np.arange(8 * 60, dtype=np.float32).reshape(8, 60)
    chunks = chunks_from_arrays({"x": channels}, 25, f32, {"x": [8, -1]})  # along the variable (time) axis
    assert [c["x"].shape for c in chunks] == [(1, 8, 25)] * 3 and np.array_equal(chunks[1]["x"][0], channels[:, 25:50])
    assert np.all(chunks[2]["x"][0, :, 10:] == 0)  # 60 = 25 + 25 + 10, zero-padded
    with pytest.raises(TritongenError, match="so the chunk size is not fixed"):
        chunks_from_arrays({"x": channels}, None, f32, {"x": [8, -1]})
    with pytest.raises(TritongenError, match=r"would be \[4, 1, 4\], and the model takes \[4\]"):
        chunks_from_arrays({"x": frames.reshape(5, 1, 4)}, 4, f32, {"x": [4]})
    # a value per step beside frames ([T] for dims [1]: as a scalar per item is sent) steps with them
    flags = np.arange(5, dtype=np.float32)
    both = chunks_from_arrays({"x": frames, "f": flags}, None, {**f32, "f": f32["x"]}, {"x": [4], "f": [1]})
    assert [(c["x"].shape, c["f"].shape) for c in both] == [((1, 4), (1, 1))] * 5 and both[3]["f"][0, 0] == 3
    with pytest.raises(TritongenError, match="'x' is a single value"):
        chunks_from_arrays({"x": np.float32(1.0)}, None, f32, {"x": [1]})
    for bad in (np.array([["abc"] * 4] * 3), np.zeros((3, 4), np.complex64), np.zeros(3, "V4")):
        with pytest.raises(TritongenError, match="the stream's 'x' is .* values, and the model takes float32"):
            chunks_from_arrays({"x": bad}, None, f32, {"x": [4]})  # a ValueError traceback, or the imaginary part lost
    samples = np.zeros(1000, np.float32)  # audio for dims [512]: 512 per request, as before
    assert [c["x"].shape for c in chunks_from_arrays({"x": samples}, None, f32, {"x": [512]})] == [(1, 512)] * 2


def test_a_wav_at_another_rate_than_the_models_sr_is_refused(tmp_path):
    """A 44.1 kHz file streamed to a VAD built with --const sr=16000 was answered, for audio at the wrong speed."""
    import wave

    from tritongen.errors import TritongenError
    from tritongen.infer_sequence import arrays_from_stream_file

    for rate in (16000, 44100):
        with wave.open(str(tmp_path / f"{rate}.wav"), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(rate)
            wav.writeframes(np.zeros(100, "<i2").tobytes())
    assert arrays_from_stream_file(tmp_path / "16000.wav", ["x"], {"sr": 16000})["x"].shape == (100,)
    arrays_from_stream_file(tmp_path / "44100.wav", ["x"], {})  # no rate recorded: nothing to hold it to
    for sr in (16000, 16000.0):  # --const sr=16000.0 is a float
        with pytest.raises(TritongenError, match="44100.wav is 44100 Hz audio, and the model was built for sr=16000"):
            arrays_from_stream_file(tmp_path / "44100.wav", ["x"], {"sr": sr})


def test_a_wav_whose_data_is_not_whole_samples_is_one_error(tmp_path):
    """A 16-bit PCM .wav whose data chunk declares 4 bytes and holds 3 (cut short): wave reads the 3 and numpy's
    frombuffer raised "buffer size must be a multiple of element size"."""
    import struct

    from tritongen.errors import TritongenError
    from tritongen.infer_sequence import arrays_from_stream_file

    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)  # PCM, mono, 16 kHz, 16-bit
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", 4) + b"\x01\x02\x03"
    path = tmp_path / "odd.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(TritongenError, match="odd.wav holds 3 bytes of 16-bit samples, not a whole number of samples"):
        arrays_from_stream_file(path, ["x"])


def test_a_npy_whose_header_claims_terabytes_is_refused_before_any_array_exists(tmp_path):
    from tritongen.errors import TritongenError
    from tritongen.infer_sequence import arrays_from_stream_file

    path = tmp_path / "claim.npy"
    with open(path, "wb") as fh:  # 8 KB on disk; np.load would allocate the 1.6 TB its header claims
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": (200_000_000_000,)})
        fh.write(bytes(8192))
    with pytest.raises(TritongenError) as caught:
        arrays_from_stream_file(path, ["x"])
    assert "claims shape [200000000000]" in caught.value.problem
    np.save(path, np.arange(5, dtype=np.float32))
    (samples,) = arrays_from_stream_file(path, ["x"]).values()
    assert samples.tolist() == [0, 1, 2, 3, 4]


def test_an_npz_under_an_npy_name_is_one_error(tmp_path):
    from tritongen.errors import TritongenError
    from tritongen.infer_sequence import arrays_from_stream_file

    np.savez(tmp_path / "two.npz", a=np.zeros(3, np.float32), b=np.ones(3, np.float32))
    (tmp_path / "two.npz").rename(tmp_path / "two.npy")
    with pytest.raises(TritongenError, match="holds 2 arrays"):
        arrays_from_stream_file(tmp_path / "two.npy", ["x"])


def test_a_state_output_is_judged_on_the_shape_the_graph_computes(tmp_path):
    """The graph declares the state output without a shape; shape inference computes [batch, 4, 8] from the state
    input: a state whose dims differ is refused with the computed dims, one that fits passes; an output nothing tells
    the shape of is not judged."""
    import onnx
    from onnx import TensorProto, helper

    from tritongen.validate_sequence import _onnx_problems

    def graph(name: str, node) -> Path:
        state = helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", 4, 8])
        model = helper.make_model(
            helper.make_graph([node], "g", [state], [helper.make_empty_tensor_value_info("next")]),
            opset_imports=factories.declared_opsets(),
        )
        onnx.save(model, tmp_path / f"{name}.onnx")
        return tmp_path / f"{name}.onnx"

    path = graph("inferred", helper.make_node("Identity", ["h"], ["next"]))
    assert _onnx_problems(path, [("h", "next", None, [4, 8])], "s", True) == []
    assert _onnx_problems(path, [("h", "next", None, [4, -1])], "s", True) == []
    assert _onnx_problems(path, [("h", "next", None, [-1])], "s", True) == [
        "state input 'h' of model s has dims [4, 8] in the graph but [-1] in sequence_batching.state: set its dims: "
        "[4, 8]",
        "state output 'next' of model s has dims [4, 8] in the graph but [-1] in sequence_batching.state: set its "
        "dims: [4, 8]",
    ]
    unknown = graph("unknown", helper.make_node("Declared", ["h"], ["next"], domain=factories.DECLARED_DOMAIN))
    assert _onnx_problems(unknown, [("h", "next", None, [4, 8])], "s", True) == []  # next: no shape, not judged


class _OnePerStream(torch.nn.Module):
    """A per-stream count kept in an attribute of shape [batch]: one value per stream."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)
        self.n = torch.zeros(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.n.shape[0] != x.shape[0]:
            self.n = torch.zeros(x.shape[0])
        self.n = self.n + self.lin(x)[:, 0]
        return x * self.n[:, None]


def test_a_state_of_one_value_per_stream_is_carried_locally_and_refused_where_triton_carries_it(tmp_path):
    """Its explicit state crashed the stream check with a raw RuntimeError (a [batch, 1] zero state for a [batch]
    attribute); on the onnxruntime target it failed after the export naming a staging folder. Triton's implicit
    state has no reshape: refused before the export there, built for the local target (tritongen's runner)."""
    import tritongen
    from tritongen.errors import TritongenError

    model = _OnePerStream().eval()
    example = {"x": torch.randn(2, 4)}
    result = tritongen.build(model, example_inputs=example, repo=tmp_path / "r", state_from_attributes="auto")
    assert result.parity.ok and any(t.scalar for t in result.spec.inputs)
    with pytest.raises(TritongenError, match=r"is a scalar per item .* the onnxruntime target uses, has no reshape"):
        tritongen.build(
            model, example_inputs=example, repo=tmp_path / "r2", state_from_attributes="auto", target="onnxruntime"
        )
    acc = factories.save_model(factories.Accumulator(), tmp_path / "acc.pt", "torchscript")
    with pytest.raises(TritongenError, match=r"state 'acc:acc_out' is a scalar per item"):  # before any export
        tritongen.build(
            acc,
            inputs=["x:FP32:", "acc:FP32:"],
            outputs=["y", "acc_out"],
            states=["acc:acc_out"],
            repo=tmp_path / "r3",
            target="onnxruntime",
        )


class _ResetsOnNewBatch(torch.nn.Module):
    """Resets its state when the batch size changes, as silero-vad does: made with a state of 0.5 at batch 1."""

    def __init__(self, init: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 4)
        self.h = torch.zeros(1, 4) + init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.h.shape[0] != x.shape[0]:
            self.h = torch.zeros(x.shape[0], 4)
        self.h = torch.tanh(self.lin(x) + self.h)
        return self.h * 2


@pytest.mark.parametrize("init, refused", [(0.5, True), (0.0, False)])
def test_a_fresh_state_other_than_zeros_is_refused_even_where_a_new_batch_size_resets_it(tmp_path, init, refused):
    """The stream check ran at batch 2 only, where such a module starts from zeros: built, it served a batch-1
    stream 0.97 off its own answers."""
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(_ResetsOnNewBatch(init)), str(path))
    argv = ["build", str(path), "--input", "x:FP32:4", "--state-from-attributes", "auto", "--repo", str(tmp_path / "r")]
    code, out, err = _run(argv)
    if refused:
        assert code == 1 and "starting from zeros, the module's output differs from its own" in err, err
    else:
        assert code == 0, err


def test_the_local_runner_drops_the_state_of_sequences_triton_has_released(monkeypatch):
    """A client gone mid-stream (no END) left its sequence's state in the runner for good: Triton releases an idle
    sequence without telling the model."""
    import importlib.util
    import sys
    import types

    from tritongen.templates import template_dir

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    spec = importlib.util.spec_from_file_location("sequence_runner", template_dir() / "python" / "sequence_runner.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    model = runner.TritonPythonModel.__new__(runner.TritonPythonModel)
    model.idle_s, model.swept = 2.0, 100.0  # twice Triton's default 1 s idle
    model.sequences = {1: (100.0, []), 2: (102.5, []), 3: (103.5, [])}
    model._drop_idle(101.0)  # within one idle span of the last sweep: nothing looked at
    assert set(model.sequences) == {1, 2, 3}
    model._drop_idle(104.0)
    assert set(model.sequences) == {2, 3}  # 1 unused for 4 s: Triton released it after 1
