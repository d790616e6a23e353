"""The built-in engine's gRPC sender (tritongen.perf.rawgrpc): HTTP/2 framed by hand. Its request headers as an
HPACK decoder reads them; against a scripted HTTP/2 server: answers, gRPC errors, resets, GOAWAY, flow control,
CONTINUATION, PINGs, oversize frames, hangs; and against a real Triton (answers, errors, a request larger than
the server's window, many calls at once on one connection, sequence parameters)."""

from __future__ import annotations

import asyncio
import struct

import numpy as np
import pytest

from tests.conftest import LoopbackServer
from tritongen.perf.inputs import RequestSet
from tritongen.perf.rawgrpc import (
    CONTINUATION,
    DATA,
    FLAG_ACK,
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    RawGrpcSender,
    frame,
    grpc_message,
    grpc_request_bytes,
    hpack_int,
    kind_name,
    request_header_block,
    status_from_headers,
)
from tritongen.perf.rawhttp import REASON_CHARS

REQUESTS = RequestSet(({"X": np.arange(4, dtype=np.float32).reshape(1, 4)},), batched=True, source="test")


# --------------------------------------------------------------------------------------------- encoding


def test_the_request_headers_decode_as_grpc_requires():
    from hpack import Decoder

    headers = Decoder().decode(request_header_block("127.0.0.1:8001"))
    assert headers == [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/inference.GRPCInferenceService/ModelInfer"),
        (":authority", "127.0.0.1:8001"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]


def test_hpack_integers_and_frames():
    assert hpack_int(10, 5) == b"\x0a" and hpack_int(1337, 5) == b"\x1f\x9a\x0a"  # RFC 7541 C.1.1 and C.1.2
    assert hpack_int(31, 4) == b"\x0f\x10"
    assert frame(DATA, 1, 3, b"abc") == b"\x00\x00\x03\x00\x01\x00\x00\x00\x03abc"
    assert grpc_message(b"xy") == b"\x00\x00\x00\x00\x02xy"


def test_status_from_trailers():
    assert status_from_headers([(":status", "200"), ("grpc-status", "0")], got_message=True) is None
    assert status_from_headers([("grpc-status", "0")], got_message=False) == "internal"
    assert (
        status_from_headers([(":status", "200"), ("grpc-status", "3"), ("grpc-message", "x")], False)
        == "invalid_argument: x"
    )
    assert status_from_headers([("grpc-status", "13")], False) == "internal"  # no message: the kind alone
    assert status_from_headers([(":status", "503")], False) == "http_503"
    assert status_from_headers([("grpc-status", "99")], True) == "unknown"
    assert status_from_headers([], True) == "bad_response"


def test_the_grpc_message_trailer_is_kept_as_the_failure_reason():
    """gRPC percent-encodes its message; the reason is decoded, on one line and as short as the HTTP sender's
    (perf once showed only 'internal' where HTTP showed ONNX Runtime's 'Invalid input shape ...')."""
    message = "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Invalid input shape:%0A  {1,3,5,5} 100%25"
    kind = status_from_headers([(":status", "200"), ("grpc-status", "13"), ("grpc-message", message)], False)
    assert kind == "internal: [ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Invalid input shape: {1,3,5,5} 100%"
    long = status_from_headers([("grpc-status", "3"), ("grpc-message", "bad shape " * 40)], False)
    assert long.startswith("invalid_argument: bad shape bad shape")
    assert len(long) <= len("invalid_argument: ") + REASON_CHARS
    assert not long.endswith(" ")
    assert kind_name(kind) == "internal" and kind_name("connection") == "connection"


# --------------------------------------------------------------------------------------------- a scripted server


def trailers(status: int = 0, message: str = "") -> list[tuple[str, str]]:
    return [("grpc-status", str(status))] + ([("grpc-message", message)] if message else [])


class ScriptedH2(LoopbackServer):
    """An HTTP/2 server that reads whole requests and answers each with what ``answer(server, n, stream_id)`` returns: a
    list of raw frames, or "hang" (never answer). ``settings`` go in its SETTINGS frame. Records requests (stream id,
    header list, body bytes), the frames the client sent and connections."""

    def __init__(self, answer, settings: bytes = b"", window_updates: bool = True):
        from hpack import Decoder, Encoder

        self.answer = answer
        self.settings = settings
        self.window_updates = (
            window_updates  # answer each DATA frame with WINDOW_UPDATEs (a server whose window is small)
        )
        self.encoder = Encoder()
        self.encoder.header_table_size = 0
        self.decoder = Decoder()
        self.requests: list[tuple[int, list, bytes]] = []
        self.frames: list[tuple[int, int, int, bytes]] = []
        self.connections = 0

    def headers(self, stream: int, fields, end_stream: bool) -> bytes:
        flags = FLAG_END_HEADERS | (FLAG_END_STREAM if end_stream else 0)
        return frame(HEADERS, flags, stream, self.encoder.encode(fields))

    def ok(self, stream: int) -> bytes:
        return (
            self.headers(stream, [(":status", "200"), ("content-type", "application/grpc")], False)
            + frame(DATA, 0, stream, grpc_message(b"\x0a\x01m"))
            + self.headers(stream, trailers(), True)
        )

    async def handle(self, reader, writer):
        from hpack import Encoder

        self.connections += 1
        self.encoder = Encoder()  # HPACK's state is a connection's: a new one starts from the table size update
        self.encoder.header_table_size = 0
        bodies: dict[int, bytearray] = {}
        heads: dict[int, list] = {}
        try:
            assert await reader.readexactly(len(PREFACE)) == PREFACE
            writer.write(frame(SETTINGS, 0, 0, self.settings))
            while True:
                head = await reader.readexactly(9)
                length = int.from_bytes(head[:3], "big")
                kind, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big")
                payload = await reader.readexactly(length)
                self.frames.append((kind, flags, stream, payload))
                if kind == HEADERS:
                    heads[stream] = self.decoder.decode(payload)
                    bodies[stream] = bytearray()
                elif kind == DATA:
                    bodies[stream] += payload
                    if self.window_updates and payload:
                        grow = struct.pack(">I", len(payload))
                        writer.write(frame(WINDOW_UPDATE, 0, 0, grow) + frame(WINDOW_UPDATE, 0, stream, grow))
                    if flags & FLAG_END_STREAM:
                        self.requests.append((stream, heads[stream], bytes(bodies.pop(stream))))
                        answer = self.answer(self, len(self.requests), stream)
                        if answer != "hang":
                            writer.write(b"".join(answer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


def sends(answer, count, timeout_s=10.0, together=False, requests=REQUESTS, worker=None, **server_kw):
    """The kinds ``count`` calls got (one after another, or all at once) from a ScriptedH2 answering with ``answer``."""

    async def go():
        async with ScriptedH2(answer, **server_kw) as server:
            sender = RawGrpcSender(server.url, "m", requests, timeout_s)
            try:
                if together:
                    kinds = await asyncio.gather(*(sender.send(i) for i in range(count)))
                else:
                    kinds = [await asyncio.wait_for(sender.send(i, "", worker), 10) for i in range(count)]
            finally:
                await sender.close()
                await asyncio.sleep(0.05)
            return list(kinds), server

    return asyncio.run(go())


def ok(server, n, s):
    return [server.ok(s)]


def test_answers_on_one_connection_carry_the_prepared_request():
    kinds, server = sends(ok, 3)
    assert kinds == [None, None, None] and server.connections == 1
    assert [s for s, _, _ in server.requests] == [1, 3, 5]
    assert server.requests[0][2] == grpc_message(grpc_request_bytes("m", REQUESTS.requests[0]))
    assert dict(server.requests[0][1])[":path"] == "/inference.GRPCInferenceService/ModelInfer"
    kinds, server = sends(ok, 20, together=True)
    assert kinds == [None] * 20 and server.connections == 1 and len(server.requests) == 20


def test_grpc_errors_resets_and_bad_answers_are_counted_by_kind():
    def answer(server, n, s):
        if n == 1:  # trailers-only: the way Triton refuses a request
            return [server.headers(s, [(":status", "200"), *trailers(5, "no model")], True)]
        if n == 2:
            return [frame(RST_STREAM, 0, s, struct.pack(">I", 7))]
        if n == 3:  # status 0 but no answer message
            return [server.headers(s, [(":status", "200"), *trailers()], True)]
        if n == 4:
            return [server.headers(s, [(":status", "502")], False)]
        return [server.ok(s)]

    kinds, server = sends(answer, 5)
    assert kinds == ["not_found: no model", "unavailable", "internal", "http_502", None]
    assert server.connections == 1


def test_a_status_that_is_no_http_status_is_a_bad_status_not_the_servers_text():
    """The server's ``:status`` text went into the kind: ``http_500\\x1b[31m...`` reached the terminal and
    results.json, which perf's own reader (perf --compare) then refused."""
    evil = "500\x1b[31mRED\x1b]0;pwned\x07\u202eevil"
    statuses = [evil, "5000", "²00", "", "5" * 1000]

    def answer(server, n, s):
        if n <= len(statuses):  # trailers-only: the call ends with the status
            return [server.headers(s, [(":status", statuses[n - 1]), ("grpc-status", "0")], True)]
        if n == len(statuses) + 1:  # headers first: the call is cancelled on them
            return [server.headers(s, [(":status", evil)], False)]
        return [server.ok(s)]

    kinds, _ = sends(answer, len(statuses) + 2)
    assert kinds == ["http_bad_status"] * (len(statuses) + 1) + [None]
    assert status_from_headers([(":status", "503")], False) == "http_503"


def test_a_header_block_in_continuation_frames_and_pings_are_handled():
    def answer(server, n, s):
        block = server.encoder.encode([(":status", "200"), *trailers(3, "bad shape " * 20)])
        return [
            frame(PING, 0, 0, b"12345678"),
            frame(HEADERS, FLAG_END_STREAM, s, block[:10]),
            frame(CONTINUATION, 0, s, block[10:20]),
            frame(CONTINUATION, FLAG_END_HEADERS, s, block[20:]),
        ]

    kinds, server = sends(answer, 2)
    assert kinds == ["invalid_argument: " + ("bad shape " * 20).rstrip()] * 2
    pongs = [p for kind, flags, _, p in server.frames if kind == PING and flags & FLAG_ACK]
    assert pongs == [b"12345678", b"12345678"]


def test_a_small_server_window_holds_the_rest_of_the_request_until_it_grows():
    big = RequestSet(({"X": np.arange(40_000, dtype=np.float32).reshape(1, 40_000)},), batched=True, source="test")
    settings = struct.pack(">HIHI", 4, 1000, 5, 16_384)  # INITIAL_WINDOW_SIZE 1000
    kinds, server = sends(ok, 2, requests=big, settings=settings)
    assert kinds == [None, None]
    assert server.requests[0][2] == grpc_message(grpc_request_bytes("m", big.requests[0]))
    data = [p for kind, _, s, p in server.frames if kind == DATA and s == 1]
    assert len(data) > 100 and max(len(p) for p in data) <= 1000  # sent as the window allowed


def test_goaway_fails_later_streams_and_the_next_call_opens_a_new_connection():
    def answer(server, n, s):
        if n == 1:
            return [frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0))]  # last stream 0: stream 1 was never processed
        return [server.ok(s)]

    kinds, server = sends(answer, 3)
    assert kinds == ["unavailable", None, None] and server.connections == 2


def test_a_frame_over_our_limit_and_garbage_are_protocol_errors(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="tritongen.perf.rawgrpc"):
        kinds, _ = sends(lambda server, n, s: [frame(DATA, 0, s, b"x" * 20_000)] if n == 1 else [server.ok(s)], 2)
    assert kinds == ["bad_response", None]
    assert any("given up" in r.getMessage() for r in caplog.records)  # why the connection was dropped is logged
    kinds, _ = sends(lambda server, n, s: [b"HTTP/1.1 400 Bad Request\r\n\r\n"], 1)
    assert kinds == ["bad_response"]


def test_any_fault_reading_the_answers_fails_the_calls_and_the_connection(monkeypatch):
    """Only ValueError, IndexError and struct.error were caught in data_received: another fault (a RecursionError in
    a header block, say) went to asyncio, which printed a traceback and dropped the connection, and the call was
    counted as a lost connection, not as the bad answer it got."""
    from tritongen.perf import rawgrpc

    real = rawgrpc.H2Connection._frame
    data_seen = []

    def broken(self, kind, flags, ident, payload):
        if kind == DATA:
            data_seen.append(ident)
            if len(data_seen) == 1:
                raise RuntimeError("a fault of our own")
        return real(self, kind, flags, ident, payload)

    monkeypatch.setattr(rawgrpc.H2Connection, "_frame", broken)
    kinds, server = sends(ok, 2)
    assert kinds == ["bad_response", None] and server.connections == 2


def test_a_call_never_answered_times_out_and_is_reset():
    kinds, server = sends(lambda server, n, s: "hang" if n == 1 else [server.ok(s)], 2, timeout_s=0.3)
    assert kinds == ["deadline_exceeded", None] and server.connections == 1
    assert any(kind == RST_STREAM and s == 1 for kind, _, s, _ in server.frames)


def test_no_server_is_a_connection_failure():
    from tests.conftest import free_ports

    (port,) = free_ports(1)

    async def go():
        sender = RawGrpcSender(f"127.0.0.1:{port}", "m", REQUESTS, 5.0)
        try:
            return [await sender.send(0), await sender.send(1, "", 0)]
        finally:
            await sender.close()

    assert asyncio.run(go()) == ["connection", "connection"]


def test_sequence_requests_carry_their_ids():
    from tritonclient.grpc import service_pb2

    sequenced = RequestSet(REQUESTS.requests, batched=True, source="test", sequence_length=2)
    kinds, server = sends(ok, 3, requests=sequenced, worker=4)
    assert kinds == [None] * 3
    seen = []
    for _, _, body in server.requests:
        assert int.from_bytes(body[1:5], "big") == len(body) - 5
        message = service_pb2.ModelInferRequest.FromString(body[5:])
        p = message.parameters
        seen.append((p["sequence_id"].int64_param, p["sequence_start"].bool_param, p["sequence_end"].bool_param))
    assert seen == [(1, True, False), (1, False, True), (2, True, False)]


# --------------------------------------------------------------------------------------------- a real Triton


@pytest.mark.server
def test_a_real_triton_answers_fails_by_kind_and_takes_large_and_concurrent_requests(tiny_server):
    wrong = RequestSet(({"X": np.zeros((1, 5), np.float32)},), batched=True, source="test")
    # 300 kB of text each way: over HTTP/2's default 64 kB window, both for what we send and what Triton answers
    text = RequestSet(({"TEXT": np.array([b"a" * 300_000], dtype=object)},), batched=False, source="test")

    async def go():
        url = tiny_server.grpc_url
        good = RawGrpcSender(url, "double", REQUESTS, 30.0, versions=("", "1"))
        bad_shape = RawGrpcSender(url, "double", wrong, 30.0)
        missing = RawGrpcSender(url, "no_such_model", REQUESTS, 30.0)
        large = RawGrpcSender(url, "env_probe", text, 30.0)
        try:
            answers = [await good.send(i, v, 0) for i in range(3) for v in ("", "1")]
            together = await asyncio.gather(*(good.send(i) for i in range(64)))
            big = [await large.send(i) for i in range(3)]
            return answers, together, big, await bad_shape.send(0), await missing.send(0)
        finally:
            for sender in (good, bad_shape, missing, large):
                await sender.close()

    answers, together, big, bad_shape, missing = asyncio.run(go())
    assert answers == [None] * 6 and list(together) == [None] * 64 and big == [None] * 3
    assert bad_shape.startswith("invalid_argument: ") and "X" in bad_shape  # Triton's reason, naming the input
    assert kind_name(missing) in ("not_found", "unavailable", "invalid_argument") and ": " in missing
