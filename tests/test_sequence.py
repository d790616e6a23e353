"""Stateful streaming models: silero-vad (from its PyPI package) served on Triton's sequence batcher.

The packaged TorchScript model keeps its recurrent state and audio context in attributes between calls;
``--state-from-attributes auto`` makes them state tensors, and the local target's model keeps one state per
sequence. Served answers are compared, chunk by chunk, with the packaged model run in-process on the same stream.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import free_ports
from tritongen.sequence import StatePair

pytestmark = pytest.mark.server

SAMPLE_RATE = 16_000
CHUNK = 512  # samples per call silero-vad takes at 16 kHz
STREAMS = 8
CHUNKS_PER_STREAM = 40  # 1.28 s of audio each
TOLERANCE = 1e-4


def speech_like(seed: int, seconds: float) -> np.ndarray:
    """Deterministic speech-like audio: voiced syllables (a 100-220 Hz pitch with harmonics under a syllable-rate
    envelope) between pauses, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = rng.uniform(100, 220)
    voiced = sum(np.sin(2 * np.pi * pitch * k * t + rng.uniform(0, 6.28)) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(2.5, 4.5) * t), 0, None) ** 2
    pause = (t % 1.0) < rng.uniform(0.5, 0.8)
    audio = 0.3 * voiced * envelope * pause + 0.005 * rng.standard_normal(t.size)
    return audio.astype(np.float32)


def packaged_probabilities(chunks: list[np.ndarray]) -> np.ndarray:
    """The packaged stateful model, in-process, over one stream (a fresh model per stream)."""
    import silero_vad
    import torch

    model = silero_vad.load_silero_vad()
    with torch.inference_mode():
        return np.array([float(model(torch.from_numpy(c)[None], SAMPLE_RATE)) for c in chunks])


@pytest.fixture(scope="module")
def vad_server(server_install, tmp_path_factory):
    silero_vad = pytest.importorskip("silero_vad")
    import torch

    import tritongen
    from tritongen.server import ServeSpec, server_from_repository

    work = tmp_path_factory.mktemp("vad")
    model_file = work / "silero_vad.pt"
    torch.jit.save(silero_vad.load_silero_vad(), str(model_file))
    repo = work / "repo"
    result = tritongen.build(
        model_file,
        name="vad",
        inputs=[f"x:FP32:{CHUNK}"],
        consts=[f"sr={SAMPLE_RATE}"],
        state_from_attributes="auto",
        max_batch_size=STREAMS,
        repo=repo,
    )
    from tests import factories

    acc_file = factories.save_model(factories.Accumulator(), work / "acc.pt", "torchscript")
    tritongen.build(
        acc_file,
        name="acc",
        inputs=["x:FP32:2", "acc:FP32:2"],
        outputs=["y", "acc_out"],
        states=["acc:acc_out"],
        repo=repo,
    )
    http, grpc, metrics = free_ports(3)
    server = server_from_repository(
        ServeSpec(repo=repo, http_port=http, grpc_port=grpc, metrics_port=metrics, ready_timeout_s=180)
    )
    yield result, server
    server.stop(timeout_s=20)


def _send(server, sequence_id, value, start=False, end=False):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        tensor = grpcclient.InferInput("x", [1, 2], "FP32")
        tensor.set_data_from_numpy(np.full((1, 2), value, np.float32))
        result = client.infer("acc", [tensor], sequence_id=sequence_id, sequence_start=start, sequence_end=end)
        return float(result.as_numpy("y")[0, 0])
    finally:
        client.close()


def test_build_makes_the_attributes_state(vad_server):
    result, _ = vad_server
    assert result.spec.states == (StatePair("state_in", "state_out"), StatePair("context_in", "context_out"))
    from tritongen.validate import config_from_file

    config = config_from_file(result.model_dir / "config.pbtxt")  # tritonclient's ModelConfig protobuf
    assert config.WhichOneof("scheduling_choice") == "sequence_batching"
    assert [t.name for t in config.input] == ["x"] and [t.name for t in config.output] == ["output"]
    controls = {c.name for c in config.sequence_batching.control_input}
    assert controls == {"START", "END", "READY", "CORRID"}
    # the hand-off script drives sequences as tritongen perf --engine perf_analyzer does (it sent 8 per sequence)
    script = (result.handoff_dir / "perf_analyzer.sh").read_text()
    assert "--sequence-length 20 --sequence-length-variation 0 --serial-sequences" in script


def test_served_streams_match_the_packaged_model_and_batch(vad_server):
    from tritongen.client import infer_sequences_concurrently, model_statistics

    _, server = vad_server
    streams = [
        np.split(speech_like(seed, CHUNKS_PER_STREAM * CHUNK / SAMPLE_RATE), CHUNKS_PER_STREAM)
        for seed in range(STREAMS)
    ]
    before = model_statistics(server.grpc_url, "vad")
    answers = infer_sequences_concurrently(
        server.grpc_url, "vad", [[{"x": c[None]} for c in chunks] for chunks in streams], first_sequence_id=101
    )
    after = model_statistics(server.grpc_url, "vad")
    worst = 0.0
    for chunks, answer in zip(streams, answers):
        served = np.array([float(a["output"].ravel()[0]) for a in answer])
        expected = packaged_probabilities(chunks)
        worst = max(worst, float(np.abs(served - expected).max()))
        assert served.max() - served.min() > 0.05  # the audio moves the probability: the state matters
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    print(f"max |served - packaged| = {worst:.2e}; {inferences} inferences in {executions} executions")
    assert worst <= TOLERANCE
    assert inferences == STREAMS * CHUNKS_PER_STREAM
    assert executions < inferences  # chunks of different streams ran together


def test_a_stream_restarts_from_zero_state(vad_server):
    """START resets: the same audio sent twice under one correlation ID gives the same answers both times."""
    from tritongen.client import infer_sequence_from_chunks

    _, server = vad_server
    chunks = [{"x": c[None]} for c in np.split(speech_like(99, 8 * CHUNK / SAMPLE_RATE), 8)]
    first = infer_sequence_from_chunks(server.grpc_url, "vad", chunks, sequence_id=7)
    second = infer_sequence_from_chunks(server.grpc_url, "vad", chunks, sequence_id=7)
    np.testing.assert_allclose([a["output"] for a in first], [a["output"] for a in second], atol=1e-6)
    # and a chunk outside any started sequence is refused, not answered from someone else's state
    from tritongen.client import infer_from_arrays
    from tritongen.errors import TritongenError

    with pytest.raises(TritongenError):
        infer_from_arrays(server.grpc_url, "vad", chunks[0])


def test_explicit_state_pairs_follow_start_and_end(vad_server):
    """--state acc:acc_out: the running sum is per sequence; START starts it from zero; after END it is gone."""
    from tritonclient.utils import InferenceServerException

    _, server = vad_server
    assert [_send(server, 11, 1.0, start=True), _send(server, 12, 10.0, start=True)] == [1.0, 10.0]
    assert [_send(server, 11, 2.0), _send(server, 12, 20.0), _send(server, 11, 3.0, end=True)] == [3.0, 30.0, 6.0]
    assert _send(server, 11, 5.0, start=True) == 5.0  # the same ID again: a new sequence from zero
    _send(server, 11, 0.0, end=True)
    with pytest.raises(InferenceServerException, match="START"):  # Triton refuses it first
        _send(server, 11, 1.0)  # after END, without START: refused, never answered from a stale state


def test_infer_check_and_streaming_a_wav(vad_server, tmp_path):
    import wave

    import tritongen
    from tests.test_bad_input import _run

    result, server = vad_server
    checked = tritongen.infer("vad", url=server.grpc_url, repo=result.model_dir.parent, check=True)
    assert checked.check is not None and checked.check.ok  # zero state at a sequence's start, as PyTorch
    audio = speech_like(5, 20 * CHUNK / SAMPLE_RATE + 0.01)  # 20 chunks and a bit: the last one is padded
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(tmp_path / "speech.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm.tobytes())
    code, out, err = _run(
        [
            "infer",
            "vad",
            "--sequence",
            "--input-file",
            str(tmp_path / "speech.wav"),
            "--url",
            server.grpc_url,
            "--repo",
            str(result.model_dir.parent),
            "--sequence-id",
            "42",
        ]
    )
    assert code == 0, err
    assert "output: float32 [21, 1]" in out
    streamed = tritongen.infer(
        "vad",
        url=server.grpc_url,
        repo=result.model_dir.parent,
        sequence=True,
        input_file=tmp_path / "speech.wav",
        sequence_id=43,
    )
    samples = pcm.astype(np.float32) / 32768.0
    chunks = np.split(np.concatenate([samples, np.zeros(21 * CHUNK - samples.size, np.float32)]), 21)
    np.testing.assert_allclose(streamed.outputs["output"].ravel(), packaged_probabilities(chunks), atol=TOLERANCE)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_perf_drives_concurrent_sequences(vad_server, protocol):
    from tritongen.perf import PerfSpec, perf_from_spec

    result, server = vad_server
    url = server.grpc_url if protocol == "grpc" else server.http_url
    run = perf_from_spec(
        PerfSpec(
            model="vad",
            url=url,
            protocol=protocol,
            repo=result.model_dir.parent,
            concurrency=(4,),
            duration_s=1.5,
            warmup_s=0.3,
            max_windows=4,
            stability_pct=50.0,
            sequence_length=10,
            metrics_url=server.metrics_url,
        )
    )
    assert run.settings["sequence_length"] == 10
    (point,) = run.points
    assert not point.errors, point.errors  # every request belonged to a started sequence
    assert point.requests > 0 and point.server.avg_batch > 1.0  # the 4 streams were batched together
