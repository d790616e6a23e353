"""The built-in engine's HTTP sender (tritongen.perf.rawhttp): response framing, answers and failures counted, a
server that drops the connection or never answers, the open-loop connection pool, and a real Triton's errors."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from tests.conftest import LoopbackServer
from tritongen.errors import TritongenError
from tritongen.perf.inputs import RequestSet
from tritongen.perf.rawhttp import REASON_CHARS, RawHttpSender, ResponseParser, error_from_response

REQUESTS = RequestSet(({"X": np.arange(4, dtype=np.float32).reshape(1, 4)},), batched=True, source="test")
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def response(status: int, body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n" % (status, len(body), extra) + body


# --------------------------------------------------------------------------------------------- framing


def test_responses_split_anywhere_or_run_together_are_framed():
    error = response(400, b'{"error":"bad input"}')
    stream = OK + error + OK
    one_by_one = ResponseParser()
    got = [answer for i in range(len(stream)) for answer in one_by_one.feed(stream[i : i + 1])]
    assert [(status, close) for status, _, close in got] == [(200, False), (400, False), (200, False)]
    assert got[1][1] == b'{"error":"bad input"}'
    assert ResponseParser().feed(stream) == got and ResponseParser().feed(stream[:-1]) == got[:2]


def test_an_interim_answer_is_skipped_for_the_answer_that_follows():
    """A 100 Continue before the answer was taken as the answer: every request failed as http_100."""
    parser = ResponseParser()
    got = parser.feed(b"HTTP/1.1 100 Continue\r\n\r\n" + b"HTTP/1.1 102 Processing\r\n\r\n" + OK[:20])
    assert got == [] and parser.feed(OK[20:]) == [(200, b"", False)]
    kinds, _ = sends(lambda n: b"HTTP/1.1 100 Continue\r\n\r\n" + OK, 2, blocking=True)
    assert kinds == [None, None]


def test_chunked_and_connection_close_responses():
    chunked = b"HTTP/1.1 500 X\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\n\r\n"
    parser = ResponseParser()
    assert parser.feed(chunked[:30]) == [] and parser.feed(chunked[30:] + OK) == [
        (500, b"abcdefg", False),
        (200, b"", False),
    ]
    assert ResponseParser().feed(response(200, b"{}", b"Connection: close\r\n")) == [(200, b"", True)]
    with pytest.raises(ValueError, match="not an HTTP response"):
        ResponseParser().feed(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_chunked_bodies_split_anywhere_with_trailers_are_framed():
    chunked = b"HTTP/1.1 500 X\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\nX-T: 1\r\n\r\n"
    parser = ResponseParser()
    got = [answer for i in range(len(chunked + OK)) for answer in parser.feed((chunked + OK)[i : i + 1])]
    assert got == [(500, b"abcdefg", False), (200, b"", False)]


def test_a_body_without_its_length_runs_until_the_server_closes():
    """An answer with neither Content-Length nor chunks (HTTP/1.0 servers and proxies) was read as an empty body: an
    error's reason was lost, and an HTTP/1.1 body was parsed as the next answer's head."""
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.0 503 X\r\n\r\n" + b'{"error":"over') == [] and parser.feed(b'loaded"}') == []
    assert parser.eof() == [(503, b'{"error":"overloaded"}', True)] and parser.eof() == []
    assert ResponseParser().feed(b"HTTP/1.1 204 No Content\r\n\r\n") == [(204, b"", False)]  # no body to wait for
    # nor here: a 304's Content-Length is the resource's
    assert ResponseParser().feed(b"HTTP/1.1 304 X\r\nContent-Length: 10\r\n\r\n") == [(304, b"", False)]
    unframed = b'HTTP/1.1 500 X\r\n\r\n{"error":"disk full"}<close>'
    for blocking in (False, True):
        kinds, _ = sends(lambda n: unframed if n == 1 else OK, 2, blocking=blocking)
        assert kinds == ["http_500: disk full", None], blocking  # the next request on a new connection


@pytest.mark.parametrize(
    "stream, words",
    [
        # a negative chunk size sent the parser back to the same line for ever, blocking the event loop
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-6\r\nabcdef\r\n", "no hexadecimal byte count"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", "is no byte count"),
        (b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * (70 << 10), "head is longer than"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * (70 << 10), "chunk line is longer"),
    ],
    ids=["negative chunk", "negative length", "endless head", "endless chunk line"],
)
def test_answers_no_server_sends_are_refused_not_followed(stream, words):
    with pytest.raises(ValueError, match=words):
        ResponseParser().feed(stream)


def test_a_large_answer_is_consumed_as_it_comes_not_held():
    """A 200's body is dropped as it arrives, an error's first 64 KiB kept: a server streaming a huge body grew the
    buffer until the answer was complete."""
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n") == []
    for _ in range(10):
        assert parser.feed(b"x" * (1 << 20)) == []
    assert len(parser.buffer) == 0 and parser.length == 100_000_000 - (10 << 20)
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 500 X\r\nContent-Length: 1000000\r\n\r\n" + b"e" * 1_000_000) == [
        (500, b"e" * (64 << 10), False)
    ]


def test_error_kind_carries_tritons_reason():
    assert (
        error_from_response(400, b'{"error":"unexpected shape for input \'X\'"}')
        == "http_400: unexpected shape for input 'X'"
    )
    assert error_from_response(503, b"Service\n Unavailable") == "http_503: Service Unavailable"
    assert error_from_response(500, b"") == "http_500"
    assert len(error_from_response(400, json.dumps({"error": "x" * 1000}).encode())) == len("http_400: ") + REASON_CHARS
    # ONNX Runtime's cause comes last: the reason keeps it
    onnx = (
        "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code returned while running Conv node. "
        "Name:'conv2d_1_nchwc' Status Message: Invalid input shape: {2,2}"
    )
    assert error_from_response(500, json.dumps({"error": onnx}).encode()) == f"http_500: {onnx}"


# --------------------------------------------------------------------------------------------- against a fake server


class FakeServer(LoopbackServer):
    """Reads requests (Content-Length framed) and answers each as ``behaviour(n)`` says: bytes to send (ending in
    ``<close>``: then close), or None to drop the connection, or "hang" to never answer; or (seconds, one of those)
    to do it after that long. Records the requests and connections it saw."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.requests: list[bytes] = []
        self.connections = 0

    async def handle(self, reader, writer):
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                self.requests.append(head + await reader.readexactly(length))
                answer = self.behaviour(len(self.requests))
                if isinstance(answer, tuple):
                    await asyncio.sleep(answer[0])
                    answer = answer[1]
                if answer is None:
                    break
                if answer == "hang":
                    await reader.read()  # until the client gives up and drops the connection
                    break
                writer.write(answer.removesuffix(b"<close>"))
                await writer.drain()
                if answer.endswith(b"<close>"):  # answered, then the server closes the idle connection
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


def sends(behaviour, count, worker=0, timeout_s=10.0, connections=64, version="", blocking=False):
    """The kinds ``count`` sends got (sequential for one worker; all at once for worker None), and the server.
    ``blocking``: the worker's sends as a closed loop makes them, from a thread of its own (``send_blocking``)."""

    async def go():
        async with FakeServer(behaviour) as server:
            sender = RawHttpSender(server.url, "m", REQUESTS, timeout_s, connections, versions=(version,))
            try:
                if worker is None:
                    kinds = await asyncio.gather(*(sender.send(i, version) for i in range(count)))
                elif blocking:
                    kinds = await asyncio.to_thread(
                        lambda: [sender.send_blocking(i, version, worker) for i in range(count)]
                    )
                else:
                    kinds = [await sender.send(i, version, worker) for i in range(count)]
            finally:
                await sender.close()
                await asyncio.sleep(0.05)  # the server's handlers see the connections close
            server.resent = sender.resent  # requests the sender sent again
            return list(kinds), server

    # a send left unresolved waits for ever: the guard makes that a failure, not a hung test run
    return asyncio.run(asyncio.wait_for(go(), 60))


BOTH = pytest.mark.parametrize("blocking", [False, True], ids=["event-loop", "thread"])


@BOTH
def test_answers_are_counted_on_one_kept_alive_connection(blocking):
    kinds, server = sends(lambda n: OK, 5, version="2", blocking=blocking)
    assert kinds == [None] * 5 and len(server.requests) == 5 and server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v2/models/m/versions/2/infer HTTP/1.1\r\n")
    header_size = int(first.split(b"Inference-Header-Content-Length: ")[1].split(b"\r\n")[0])
    body = first.split(b"\r\n\r\n", 1)[1]
    assert json.loads(body[:header_size])["inputs"][0]["parameters"] == {"binary_data_size": 16}
    assert body[header_size:] == np.arange(4, dtype=np.float32).tobytes()


@BOTH
def test_an_error_answer_is_a_failure_with_its_reason_and_the_connection_stays(blocking):
    answers = {2: response(400, b'{"error":"inference request for unknown model \'m\'"}'), 3: response(503, b"")}
    kinds, server = sends(lambda n: answers.get(n, OK), 4, blocking=blocking)
    assert kinds == [None, "http_400: inference request for unknown model 'm'", "http_503", None]
    assert server.connections == 1


@BOTH
def test_a_server_that_disconnects_fails_that_request_and_the_next_reconnects(blocking):
    kinds, server = sends(lambda n: None if n == 2 else OK, 4, blocking=blocking)
    # the request a kept connection dropped unanswered is sent again on a new one, as libcurl does
    assert kinds == [None] * 4 and len(server.requests) == 5 and server.connections == 2 and server.resent == 1
    kinds, server = sends(lambda n: None if n == 1 else OK, 2, blocking=blocking)
    assert kinds == ["connection", None] and server.connections == 2 and server.resent == 0  # a new one's is not
    kinds, _ = sends(lambda n: b"garbage\r\n\r\n", 1, blocking=blocking)
    assert kinds == ["bad_response"]


DEEP_ERROR = b'{"error":' + b"[" * 60000 + b"]" * 60000 + b"}"


@BOTH
def test_an_error_body_nested_deeper_than_json_reads_is_a_failure_with_its_text(blocking):
    """json.loads raised RecursionError, not ValueError, inside data_received: asyncio printed a traceback per
    connection, the request was never resolved, every worker hung and perf wrote a run of 0 requests, exit 0."""
    assert error_from_response(400, DEEP_ERROR) == "http_400: " + '{"error":' + "[" * (REASON_CHARS - 9)
    kinds, server = sends(lambda n: response(400, DEEP_ERROR) if n == 1 else OK, 2, blocking=blocking)
    assert kinds == [error_from_response(400, DEEP_ERROR), None] and server.connections == 1


@BOTH
def test_any_fault_reading_an_answer_fails_its_request_and_the_connection(monkeypatch, blocking):
    """Whatever goes wrong with an answer's bytes, the request outstanding gets a kind (it was taken off the
    connection first, and nothing else, the timeout watchdog included, would resolve it) and the next reconnects."""
    from tritongen.perf import rawhttp

    def broken(status, body):
        raise RuntimeError("a fault of our own")

    monkeypatch.setattr(rawhttp, "error_from_response", broken)
    kinds, server = sends(lambda n: response(400, b"no") if n == 1 else OK, 2, blocking=blocking)
    assert kinds == ["bad_response", None] and server.connections == 2


def test_no_server_is_a_connection_failure_for_every_send():
    from tests.conftest import free_ports

    (port,) = free_ports(1)

    async def go():
        sender = RawHttpSender(f"127.0.0.1:{port}", "m", REQUESTS, 5.0, 4)
        try:
            return [await sender.send(0, "", 0), await sender.send(1), sender.send_blocking(2, "", 1)]
        finally:
            await sender.close()

    assert asyncio.run(go()) == ["connection", "connection", "connection"]


@BOTH
def test_a_request_never_answered_times_out_and_the_next_gets_a_fresh_connection(blocking):
    kinds, server = sends(lambda n: "hang" if n == 1 else OK, 2, timeout_s=0.3, blocking=blocking)
    assert kinds == ["deadline_exceeded", None] and server.connections == 2


def test_an_answer_trickled_byte_by_byte_times_out_by_one_deadline():
    """A thread's socket timeout counts per read: a server sending a byte every 50 ms would have kept a 0.3 s
    request waiting for as long as it liked (the answer's deadline is set again before every read)."""

    async def go():
        async def handle(reader, writer):
            try:
                await reader.readuntil(b"\r\n\r\n")
                for byte in OK:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.05)
            except ConnectionError:  # the client gave up and closed
                pass
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        sender = RawHttpSender(f"127.0.0.1:{port}", "m", REQUESTS, 0.3, 1)
        try:
            started = asyncio.get_running_loop().time()
            kind = await asyncio.to_thread(sender.send_blocking, 0, "", 0)
            return kind, asyncio.get_running_loop().time() - started
        finally:
            await sender.close()
            server.close()

    kind, took_s = asyncio.run(asyncio.wait_for(go(), 30))
    assert kind == "deadline_exceeded" and took_s < len(OK) * 0.05 / 2


def test_closing_the_sender_wakes_a_worker_thread_waiting_for_an_answer():
    """A level that gives up on a request (the drain's grace over) closes its sender: a worker's thread blocked
    reading an answer that never comes returns at once instead of after the whole timeout."""

    async def go():
        async with FakeServer(lambda n: "hang") as server:
            sender = RawHttpSender(server.url, "m", REQUESTS, 60.0, 1)
            waiting = asyncio.ensure_future(asyncio.to_thread(sender.send_blocking, 0, "", 0))
            while not server.requests:
                await asyncio.sleep(0.01)
            await sender.close()
            kind = await asyncio.wait_for(waiting, 5)
            after = await asyncio.to_thread(sender.send_blocking, 1, "", 0)  # a closed sender opens nothing
            return kind, after, server.connections

    assert asyncio.run(asyncio.wait_for(go(), 30)) == ("connection", "connection", 1)


def test_open_loop_sends_share_at_most_the_connection_limit():
    kinds, server = sends(lambda n: OK, 20, worker=None, connections=3)
    assert kinds == [None] * 20 and len(server.requests) == 20
    assert server.connections in range(1, 4)


def test_connections_the_server_closes_while_idle_free_their_slots():
    async def go():
        async with FakeServer(lambda n: OK + b"<close>") as server:
            sender = RawHttpSender(server.url, "m", REQUESTS, 5.0, 1)
            kinds = []
            for i in range(4):  # one slot: each send needs the slot the last (now closed) connection held
                kinds.append(await asyncio.wait_for(sender.send(i), 5))
                await asyncio.sleep(0.05)  # the close arrives while the connection is idle
            kinds.append(await asyncio.wait_for(sender.send(9, "", 0), 5))
            await sender.close()
            return kinds, server.connections

    kinds, connections = asyncio.run(go())
    assert kinds == [None] * 5 and connections == 5


@BOTH
def test_sequence_requests_carry_their_ids(blocking):
    sequenced = RequestSet(REQUESTS.requests, batched=True, source="test", sequence_length=2)

    async def go():
        async with FakeServer(lambda n: OK) as server:
            sender = RawHttpSender(server.url, "m", sequenced, 5.0, 4)
            if blocking:
                kinds = await asyncio.to_thread(lambda: [sender.send_blocking(i, "", 7) for i in range(3)])
            else:
                kinds = [await sender.send(i, "", 7) for i in range(3)]
            await sender.close()
            return kinds, server.requests

    kinds, seen = asyncio.run(go())
    assert kinds == [None] * 3
    params = []
    for raw in seen:
        head, body = raw.split(b"\r\n\r\n", 1)
        size = int(head.split(b"Inference-Header-Content-Length: ")[1].split(b"\r\n")[0])
        assert int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]) == len(body)
        params.append(json.loads(body[:size])["parameters"])
    assert [(p["sequence_id"], p["sequence_start"], p["sequence_end"]) for p in params] == [
        (1, True, False),
        (1, False, True),
        (2, True, False),
    ]


# --------------------------------------------------------------------------------------------- a real Triton


@pytest.mark.server
def test_a_real_triton_answers_and_its_errors_are_counted_with_reasons(tiny_server):
    async def go():
        good = RawHttpSender(tiny_server.http_url, "double", REQUESTS, 30.0, 4)
        wrong = RequestSet(({"X": np.zeros((1, 5), np.float32)},), batched=True, source="test")
        bad_shape = RawHttpSender(tiny_server.http_url, "double", wrong, 30.0, 4)
        missing = RawHttpSender(tiny_server.http_url, "no_such_model", REQUESTS, 30.0, 4)
        try:
            return [await good.send(i, "", 0) for i in range(3)], await bad_shape.send(0, "", 0), await missing.send(0)
        finally:
            for sender in (good, bad_shape, missing):
                await sender.close()

    answers, bad_shape, missing = asyncio.run(go())
    assert answers == [None, None, None]
    assert bad_shape.startswith("http_400: ") and "shape" in bad_shape
    assert missing.startswith(("http_400: ", "http_404: ")) and "no_such_model" in missing


def test_a_servers_reason_is_kept_with_its_control_characters_escaped():
    """printed in perf's table and stored in results.json: an ESC ] title sequence reached the terminal, and perf
    wrote a results.json its own reader refused ("holds a control character")."""
    from tritongen.perf.rawgrpc import reason_from_grpc_message

    kind = error_from_response(400, json.dumps({"error": "\x1b]0;TITLE\x07bad"}).encode())
    assert "\x1b" not in kind and "\x07" not in kind and kind.startswith("http_400: \\x1b]0;TITLE\\x07bad")
    assert reason_from_grpc_message("%1B%5B2Jcleared") == "\\x1b[2Jcleared"


def _run_with_stalled_statistics(server, monkeypatch, tmp_path, **options):
    """A perf run against ``server`` whose statistics API never answers (each read waits its whole timeout): the
    run, the timeouts the reads were given, and how long the run took."""
    import time

    import tritongen.client
    from tritongen.perf import PerfSpec
    from tritongen.perf.run import perf_from_spec

    waits = []

    def stalled(url, model, protocol="grpc", timeout_s=10.0, *args, **kwargs):
        waits.append(timeout_s)
        time.sleep(timeout_s)  # what a server that never answers costs a client that waits its timeout
        raise TritongenError("the statistics read timed out", "")

    monkeypatch.setattr(tritongen.client, "model_statistics", stalled)
    np.savez(tmp_path / "x.npz", X=np.ones((2, 4), np.float32))
    spec = PerfSpec(
        model="double", url=server.http_url, protocol="http", concurrency=(1,), duration_s=0.5, warmup_s=0.2,
        input_data=tmp_path / "x.npz", repo=None, metrics_url=None, **options,
    )  # fmt: skip
    started = time.monotonic()
    run = perf_from_spec(spec)
    return run, waits, time.monotonic() - started


@pytest.mark.server
def test_a_statistics_read_that_stalls_ends_within_max_time(tiny_server, monkeypatch, tmp_path):
    """A server answering requests but not its statistics API held each level's statistics read 12 s, past
    --max-time-s, or took the level's whole time."""
    run, _, taken_s = _run_with_stalled_statistics(tiny_server, monkeypatch, tmp_path, max_time_s=6)
    assert run.points and run.points[0].server.requests == 0  # measured, its statistics unread
    assert taken_s < 6 + 8, taken_s  # the cap, the grace after it, the client's set-up; it was 6 + 12 and more


@pytest.mark.server
def test_a_statistics_read_that_stalls_takes_no_longer_than_the_request_timeout(tiny_server, monkeypatch, tmp_path):
    """Without --max-time-s a stalled statistics read took 12 s at every window edge whatever --timeout-s: a level
    of 1-4 s took 43 s on a server accepting slowly."""
    run, waits, _ = _run_with_stalled_statistics(tiny_server, monkeypatch, tmp_path, timeout_s=0.5)
    assert run.points and waits and max(waits) <= 1.0, waits  # each read within --timeout-s, 1 s at least; it was 10 s


def test_a_request_is_written_as_its_head_then_its_body_as_http_clients_send_it():
    """One write of both let Triton's HTTP frontend take each request in one read: it spent about a quarter less CPU
    per request than on perf_analyzer's (libcurl's) head-then-body, and the engine read 1.25x its throughput."""
    from tritongen.perf.rawhttp import Connection, http_request_bytes

    class Recorder:
        def __init__(self):
            self.writes = []

        def write(self, data):
            self.writes.append(bytes(data))

    async def go():
        conn = Connection(lambda c: None)
        transport = Recorder()
        conn.connection_made(transport)
        payload = http_request_bytes("127.0.0.1:1", "/v2/models/m/infer", b"{}BODY", {"X-A": "1"})
        conn.request(payload)
        return payload, transport.writes

    payload, writes = asyncio.run(go())
    assert len(writes) == 2 and writes[0].endswith(b"\r\n\r\n") and writes[1] == b"{}BODY"
    assert b"".join(writes) == payload


def test_an_answer_sent_before_the_whole_request_was_taken_is_read_for_its_reason():
    """A server refusing a large request after its head (413, then closing) broke the worker's send of the body:
    the thread reported "connection" with the server's reason unread in its socket (the event loop read it)."""
    import socket
    import threading
    import time

    listener = socket.create_server(("127.0.0.1", 0))

    def refuse() -> None:
        conn, _ = listener.accept()
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        conn.sendall(response(413, b'{"error":"request too large"}', b"Connection: close\r\n"))
        time.sleep(0.2)  # the client is still sending the body when the connection goes
        conn.close()

    threading.Thread(target=refuse, daemon=True).start()
    large = RequestSet(({"X": np.zeros((1, 8_000_000), np.float32)},), batched=True, source="test")  # 32 MB
    sender = RawHttpSender(f"127.0.0.1:{listener.getsockname()[1]}", "m", large, 10.0, 1)
    try:
        assert sender.send_blocking(0, "", 0) == "http_413: request too large"
    finally:
        asyncio.run(sender.close())
        listener.close()


def test_a_request_a_kept_connection_dropped_unanswered_is_sent_again_once_on_a_new_one():
    """A server closing a kept connection as the next request left (keep-alive's race) cost that request a
    `connection` failure: about 6% of requests to a server closing after every answer. libcurl sends it again."""
    kinds, server = sends(lambda n: OK if n % 2 else None, 3, blocking=True)  # every 2nd request read, dropped
    assert kinds == [None, None, None] and len(server.requests) == 5 and server.connections == 3
    kinds, server = sends(lambda n: None, 2, blocking=True)  # a new connection's request is not sent again
    assert kinds == ["connection", "connection"] and len(server.requests) == 2
    kinds, server = sends(lambda n: OK if n == 1 else "hang", 2, blocking=True, timeout_s=0.5)
    assert kinds == [None, "deadline_exceeded"] and len(server.requests) == 2  # nor one that timed out
    # sent again within the first send's deadline: a late close, then a slow answer, took 0.7 s under --timeout-s 0.5
    # and counted as answered (here it would take 1.2 s under 1)
    kinds, server = sends(lambda n: {1: OK, 2: (0.5, None)}.get(n, (0.7, OK)), 2, blocking=True, timeout_s=1.0)
    assert kinds == [None, "deadline_exceeded"] and len(server.requests) == 3


def test_a_worker_connection_the_server_closed_while_idle_is_opened_again_before_its_next_request():
    """The server (or a proxy) closes a kept connection between two requests: the event loop saw the close and
    reconnected; the worker's thread sent its next request into the closed connection and counted a failure."""
    import select

    async def go():
        async with FakeServer(lambda n: OK + b"<close>") as server:
            sender = RawHttpSender(server.url, "m", REQUESTS, 5.0, 1)

            def worker() -> list:
                kinds = []
                for i in range(3):
                    kinds.append(sender.send_blocking(i, "", 0))
                    kept = sender.blocking.get(0)
                    if kept is not None:  # the server's close arrives while the connection is idle
                        select.select([kept.sock], [], [], 10)
                return kinds

            kinds = await asyncio.to_thread(worker)
            await sender.close()
            return kinds, server.connections

    assert asyncio.run(asyncio.wait_for(go(), 30)) == ([None, None, None], 3)
