"""A lean HTTP/1.1 sender for the built-in engine: plain keep-alive connections, a closed loop's on blocking sockets
in threads (up to 64 in flight), others as asyncio Protocols.

aiohttp costs about 160 us of CPU per request (headers objects, a stream reader, per-request timers); on a
machine whose cores the server shares, that CPU is taken from the server and the measurement is the client's.
Here each request is bytes built once (request line, headers and Triton's binary-tensor body), written as
its head and its body (two ``transport.write`` calls, as HTTP clients send them); the response is read as far as
needed: the status line, ``Content-Length`` (or chunked framing) and, on a non-200 answer, the ``{"error": ...}``
JSON Triton puts in the body, which becomes the failure's reason. Open-loop requests take an idle connection or
open one, up to ``connections``; their timeouts are checked by one watchdog task, not one timer per request.

A closed loop's workers (up to 64 in flight: ``loadgen.MAX_THREAD_WORKERS``) each run in a thread of their own on a
blocking socket (:meth:`RawHttpSender.send_blocking`), as perf_analyzer's synchronous client and independent users
do: each request is written when its own answer has been read, one wakeup of the worker each. Driven from one event
loop instead, the answers of a batch were read in one go and the next requests written back to back, so one wakeup
of Triton's HTTP thread read several of them (tritonserver's threads woke 1.0 times per request at 16 in flight on a
~1 ms model, 1.6-2.0 under perf_analyzer): the server spent less CPU per request than under independent clients, and
the engine read 1.09-1.18x perf_analyzer's throughput. From threads the server wakes as often as under perf_analyzer
(1.5-2.0 times per request) and the engine reads 0.99-1.07x; what is left is perf_analyzer's own client time per
request, about twice this one's (bench/harness_agreement.py; README).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from ..names import one_line
from .inputs import RequestSet, wire_from_array
from .sequences import SequenceTracker, http_sequence_body

HEADER_END = b"\r\n\r\n"
# An error's reason is part of its kind: kinds stay short, yet long enough for ONNX Runtime's, whose cause comes
# last ("... while running Conv node. Name:'conv2d_1_nchwc' Status Message: Invalid input shape: {2,2}", 190).
REASON_CHARS = 240
MAX_HEAD_BYTES = 64 << 10  # an answer's head, a chunk-size or trailer line
KEPT_BODY_BYTES = 64 << 10  # of an error answer's body: its reason is read from the start


def http_request_bytes(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A whole HTTP/1.1 POST: request line, headers and body."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def http_request_body(request) -> tuple[bytes, dict[str, str]]:
    """Triton's binary-tensor request body and its headers (``Inference-Header-Content-Length``)."""
    import tritonclient.http as httpclient

    inputs = []
    for name, array in request.items():
        datatype, _ = wire_from_array(array)
        tensor = httpclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array if datatype == "BYTES" else np.ascontiguousarray(array), binary_data=True)
        inputs.append(tensor)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs)
    headers = {"Content-Type": "application/octet-stream"}
    if json_size is not None:
        headers["Inference-Header-Content-Length"] = str(json_size)
    return body, headers


def error_from_response(status: int, body: bytes) -> str:
    """The failure kind of a non-200 answer: ``http_<status>``, and Triton's error message when it sent one."""
    reason = ""
    try:
        data = json.loads(body)
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            reason = data["error"]
    except (ValueError, RecursionError):  # not JSON, or JSON nested deeper than the parser recurses: its text
        reason = body[:REASON_CHARS].decode("utf-8", "replace").strip()
    # a server's own words, printed and stored: its control characters escaped (a terminal would obey them)
    reason = one_line(" ".join(reason.split())[:REASON_CHARS])
    return f"http_{status}: {reason}" if reason else f"http_{status}"


UNTIL_CLOSE = -4  # ResponseParser.length of a body that runs until the server closes the connection


class ResponseParser:
    """Splits a byte stream into HTTP/1.1 responses: ``feed`` returns the (status, body, close) of each finished one.

    Incremental and bounded whatever the server sends: a body is consumed as it arrives (a 200's is dropped, an
    error's first :data:`KEPT_BODY_BYTES` kept for its reason), a head or a chunk-size line longer than its bound,
    a Content-Length or a chunk size that is no plain number (``-6``), is a ``ValueError`` (the connection fails as
    ``bad_response``). A negative chunk size once sent the parser back to the same line for ever."""

    def __init__(self) -> None:
        self.buffer = bytearray()  # appended to and consumed from the front: no copy of the whole per read
        self.status = 0
        self.length = -1  # -1: reading a head; -2: chunked; -4: until the server closes; else body bytes to come
        self.chunk = -1  # chunked: -1 reading a size line, -3 reading trailers, else bytes left (its CRLF included)
        self.body = bytearray()  # the kept start of an error answer's body
        self.close = False

    def feed(self, data: bytes | bytearray) -> list[tuple[int, bytes, bool]]:
        self.buffer += data
        done: list[tuple[int, bytes, bool]] = []
        while True:
            if self.length == -1:
                end = self.buffer.find(HEADER_END)
                if end < 0:
                    if len(self.buffer) > MAX_HEAD_BYTES:
                        raise ValueError(f"an answer's head is longer than {MAX_HEAD_BYTES} bytes")
                    return done
                self._head(bytes(self.buffer[:end]))
                del self.buffer[: end + 4]
                self.body, self.chunk = bytearray(), -1
                if 100 <= self.status < 200 and self.status != 101:  # interim (100 Continue): the answer follows
                    self.length = -1
                    continue
            if self.length == UNTIL_CLOSE:  # a body without its length: all that comes is body, until the close
                self._keep(self.buffer)
                del self.buffer[:]
                return done
            if self.length == -2:
                if not self._chunked():
                    return done
            else:
                take = min(self.length, len(self.buffer))
                self._keep(self.buffer[:take])
                del self.buffer[:take]
                self.length -= take
                if self.length:
                    return done
            done.append((self.status, b"" if self.status == 200 else bytes(self.body), self.close))
            self.length = -1

    def eof(self) -> list[tuple[int, bytes, bool]]:
        """The server closed: an answer whose body ran until the close (no Content-Length, not chunked) is whole."""
        if self.length != UNTIL_CLOSE:
            return []
        self.length = -1
        return [(self.status, b"" if self.status == 200 else bytes(self.body), True)]

    def _keep(self, data: bytes | bytearray) -> None:
        if self.status != 200 and len(self.body) < KEPT_BODY_BYTES:
            self.body += data[: KEPT_BODY_BYTES - len(self.body)]

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise ValueError(f"not an HTTP response: {lines[0][:60]!r}")
        self.status = int(parts[1])
        self.length, self.close = UNTIL_CLOSE, parts[0] == b"HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                if not value.strip().isdigit():
                    raise ValueError(f"Content-Length {value[:40]!r} is no byte count")
                self.length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self.length = -2
            elif name == b"connection":
                self.close = value.strip().lower() == b"close"
        if self.status in (204, 304) or 100 <= self.status < 200:  # no body, whatever the head says (RFC 9112 6.3)
            self.length = 0
        elif self.length == UNTIL_CLOSE:
            self.close = True

    def _chunked(self) -> bool:
        """Consume what has come of a chunked body; True once its last chunk and trailers are in."""
        while True:
            if self.chunk in (-1, -3):  # a chunk-size line, or a trailer line (an empty one ends the body)
                end = self.buffer.find(b"\r\n")
                if end < 0:
                    if len(self.buffer) > MAX_HEAD_BYTES:
                        raise ValueError(f"a chunk line is longer than {MAX_HEAD_BYTES} bytes")
                    return False
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                if self.chunk == -3:
                    if not line:
                        return True
                    continue
                size = line.split(b";")[0].strip()
                if not re.fullmatch(rb"[0-9A-Fa-f]{1,15}", size):
                    raise ValueError(f"chunk size {size[:20]!r} is no hexadecimal byte count")
                self.chunk = int(size, 16) + 2 if int(size, 16) else -3
                continue
            take = min(self.chunk, len(self.buffer))
            if not take:
                return False
            self._keep(self.buffer[: max(0, min(take, self.chunk - 2))])  # the data, not its closing CRLF
            del self.buffer[:take]
            self.chunk -= take
            if not self.chunk:
                self.chunk = -1


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request outstanding."""

    def __init__(self, on_closed: Callable[[Connection], None]) -> None:
        self.on_closed = on_closed  # told once, when the connection closes (in use or idle)
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser()
        self.waiter: asyncio.Future | None = None
        self.sent_s = 0.0
        self.closed = False
        self.answered = 0  # answers read on this connection: with any, it is a kept one
        self.heard = False  # whether any byte of the last request's answer came

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def request(self, data: bytes, sent_s: float | None = None) -> asyncio.Future:
        """Send one request: its head, then its body, two writes as HTTP clients send them (libcurl, which
        perf_analyzer and tritonclient use, and Python's http.client do): Triton's HTTP frontend then reads and
        parses them as it does its users' requests. One write of both let it take a request in one read: it spent
        about a quarter less CPU per request on the built-in engine's traffic than on perf_analyzer's, and the
        engine read about 1.25x perf_analyzer's throughput on a ~1 ms model (bench/harness_agreement.py).
        ``sent_s``: when the request was first sent, where this sends it again (its timeout runs from then)."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.sent_s = sent_s or time.perf_counter()
        self.heard = False
        end = data.find(HEADER_END) + len(HEADER_END)
        if end < len(HEADER_END):  # no header end: bytes as they are
            self.transport.write(data)
        else:
            view = memoryview(data)
            self.transport.write(view[:end])
            self.transport.write(view[end:])
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.heard = True
        try:
            self._answers(data)
        except Exception:
            # whatever a server's bytes make go wrong here, the request outstanding gets a kind and the stream is
            # dropped: an exception let out reaches asyncio (a traceback per connection, the connection closed)
            # with the request unresolved and nothing left to time it out, and the worker waited for ever
            self.fail("bad_response")

    def _answers(self, data: bytes) -> None:
        self._deliver(self.parser.feed(data))  # a ValueError: bytes that are no HTTP answer

    def _deliver(self, answers: list[tuple[int, bytes, bool]]) -> None:
        for status, body, close in answers:
            self.answered += 1
            kind = None if status == 200 else error_from_response(status, body)  # before the waiter is taken
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(kind)
            if close:
                self.fail("connection")

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:  # closed, not reset: an answer that ran until the close is whole
            self._deliver(self.parser.eof())
        self._close()
        self._resolve("connection")

    def fail(self, kind: str) -> None:
        """Give the outstanding request ``kind`` and drop the connection (the stream is out of step)."""
        self._close()
        self._resolve(kind)
        if self.transport is not None:
            self.transport.abort()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.on_closed(self)

    def _resolve(self, kind: str) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(kind)


READ_BYTES = 16 << 10  # one read of an answer on a blocking connection (a buffer per connection, reused)


class BlockingConnection:
    """One keep-alive connection on a blocking socket, for one thread: a request at a time, the answer read in it."""

    def __init__(self, host: str, port: int, timeout_s: float, connect_s: float | None = None) -> None:
        """``connect_s``: how long connecting may take (default: the timeout, at most 30 s)."""
        self.sock = socket.create_connection((host, port), timeout=connect_s or min(timeout_s, 30))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = ResponseParser()
        self.timeout_s = timeout_s
        self.buffer = bytearray(READ_BYTES)
        self.answered = 0  # answers read on this connection: with any, it is a kept one
        self.heard = False  # whether any byte of the last request's answer came

    def reusable(self) -> bool:
        """Whether the kept connection is still in step: nothing has arrived on it since its last answer (a
        server or proxy that closed it while idle sent its end, which would cost the next request a failure)."""
        try:
            # non-blocking: a socket with a timeout polls for up to that long before any read, MSG_DONTWAIT or not
            self.sock.setblocking(False)
            self.sock.recv(1, socket.MSG_PEEK)  # b"": closed; bytes: an answer nobody asked for
            return False
        except BlockingIOError:  # nothing to read: open and in step
            return True
        except OSError:
            return False

    def request(self, data: bytes, deadline_s: float | None = None) -> tuple[str | None, bool]:
        """Send ``data`` (its head, then its body: two writes, as :meth:`Connection.request`) and read its answer
        within the timeout, one deadline for both (``deadline_s``, a ``time.perf_counter`` reading, where the request
        began earlier): (failure kind or None, whether the connection may be used again). An answer the server
        sent before it took the whole request (and then closed) is still read."""
        deadline_s = deadline_s or time.perf_counter() + self.timeout_s
        self.heard = False
        end = data.find(HEADER_END) + len(HEADER_END)
        view = memoryview(data)
        parts = (view,) if end < len(HEADER_END) else (view[:end], view[end:])
        try:
            for part in parts:
                self.sock.settimeout(max(deadline_s - time.perf_counter(), 1e-3))
                try:
                    self.sock.sendall(part)
                except (BrokenPipeError, ConnectionResetError):
                    answered = self._early_answer()
                    if answered is not None:
                        return answered, False
                    raise
            while True:
                left_s = deadline_s - time.perf_counter()
                if left_s <= 0:
                    return "deadline_exceeded", False
                self.sock.settimeout(left_s)  # one deadline for the answer, however it trickles in
                got = self.sock.recv_into(self.buffer)
                answers = self.parser.feed(self.buffer[:got]) if got else self.parser.eof()  # ValueError: no HTTP
                if not got and not answers:
                    return "connection", False
                self.heard = True
                if answers:
                    self.answered += 1
                    status, body, close = answers[0]
                    kind = None if status == 200 else error_from_response(status, body)
                    # more than the one answer asked for, whole or begun: the stream is out of step
                    in_step = len(answers) == 1 and not self.parser.buffer and self.parser.length == -1
                    return kind, not close and in_step
        except TimeoutError:
            return "deadline_exceeded", False
        except OSError:
            return "connection", False
        except Exception:  # whatever a server's bytes make go wrong reading them: a kind, never a dead worker
            return "bad_response", False

    def _early_answer(self) -> str | None:
        """The kind of an answer already received when sending failed (a server refusing a request before reading
        all of it, then closing): its status and reason, not "connection"; None where none has come whole."""
        try:
            self.sock.setblocking(False)  # what has arrived, without waiting (see reusable)
            while True:
                got = self.sock.recv_into(self.buffer, READ_BYTES)
                answers = self.parser.feed(self.buffer[:got]) if got else self.parser.eof()
                if not got and not answers:
                    return None
                self.heard = True  # an answer came (whole or begun): the server took the request
                if answers:
                    status, body, _ = answers[0]
                    return "connection" if status == 200 else error_from_response(status, body)
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        """Close the socket; a thread blocked reading it wakes with a failure (shutdown reaches it, close may not)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class RawHttpSender:
    """The built-in engine's HTTP sender; the same ``send``/``close`` as the gRPC one."""

    def __init__(
        self,
        url: str,
        model: str,
        requests: RequestSet,
        timeout_s: float,
        connections: int,
        versions: Sequence[str] = ("",),
    ) -> None:
        self.url = url
        self.host, _, port = url.rpartition(":")
        self.port = int(port)
        self.host = self.host.strip("[]")
        self.timeout_s = timeout_s
        self.limit = max(1, connections)
        self.paths = {v: f"/v2/models/{model}" + (f"/versions/{v}" if v else "") + "/infer" for v in set(versions)}
        self.sequences = SequenceTracker(requests.sequence_length) if requests.sequence_length else None
        bodies = [http_request_body(r) for r in requests.requests]
        self.payloads = {
            v: [http_request_bytes(url, path, body, headers) for body, headers in bodies]
            for v, path in self.paths.items()
        }
        # a sequence model's bodies get their sequence parameters per send, so only they keep the bare bodies; the
        # others would hold every request twice
        self.bodies = bodies if self.sequences is not None else []
        self.by_worker: dict[int, Connection] = {}
        self.idle: deque[Connection] = deque()
        self.opened: set[Connection] = set()
        self.count = 0  # connections open or opening
        self.slot_waiters: deque[asyncio.Future] = deque()
        self.watchdog: asyncio.Task | None = None
        self.blocking: dict[int, BlockingConnection] = {}  # a closed-loop worker's (thread's) connection
        self.blocking_lock = threading.Lock()
        self.closing = False
        self.resent = 0  # requests sent again on a new connection (a kept one closed with none of the answer come)

    def _payload(self, index: int, version: str, worker: int | None) -> bytes:
        if self.sequences is not None and worker is not None:
            body, headers = self.bodies[index % len(self.bodies)]
            body, headers = http_sequence_body(body, headers, *self.sequences.next(worker))
            return http_request_bytes(self.url, self.paths[version], body, headers)
        payloads = self.payloads[version]
        return payloads[index % len(payloads)]

    def send_blocking(self, index: int, version: str, worker: int) -> str | None:
        """A closed-loop worker's send, in its own thread: the request on the worker's connection (opened, or
        opened again after a failure, here), its answer read before this returns. The same kinds as :meth:`send`."""
        payload = self._payload(index, version, worker)
        deadline_s = time.perf_counter() + self.timeout_s  # one deadline, the request sent again included
        conn = self.blocking.get(worker)
        if conn is not None and not conn.reusable():
            self._drop(worker, conn)
            conn = None
        kind, conn = self._request_on(conn, worker, payload, deadline_s)
        # a kept connection closed with none of the answer come: the server closed it as the request left
        # (keep-alive's race: 6% of requests to a server closing after every answer). Sent again once on a new
        # connection within the same deadline, as libcurl (perf_analyzer's client) does; never a sequence's request
        # (its state moved on)
        if self._send_again(kind, conn):
            if deadline_s - time.perf_counter() <= 0:
                return "deadline_exceeded"
            with self.blocking_lock:
                self.resent += 1
            kind, _ = self._request_on(None, worker, payload, deadline_s)
        return kind

    def _send_again(self, kind: str | None, conn: BlockingConnection | Connection | None) -> bool:
        """Whether a request that got ``kind`` on ``conn`` is sent once more: ``conn`` was a kept connection (it had
        answered before) that closed with none of this answer come, and the request is no sequence's."""
        if kind != "connection" or conn is None or self.sequences is not None:
            return False
        return conn.answered > 0 and not conn.heard

    def _request_on(
        self, conn: BlockingConnection | None, worker: int, payload: bytes, deadline_s: float
    ) -> tuple[str | None, BlockingConnection | None]:
        """``payload`` on ``conn`` (None: a new connection for ``worker``) by ``deadline_s``, dropped after unless the
        answer lets it be kept: the failure kind or None, and the connection it went on (None where none could be
        opened)."""
        conn = conn or self._open_for(worker, deadline_s)
        if conn is None:
            return "connection", None
        kind, keep = conn.request(payload, deadline_s)
        if not keep:
            self._drop(worker, conn)
        return kind, conn

    def _open_for(self, worker: int, deadline_s: float) -> BlockingConnection | None:
        """A new connection for ``worker``, opened by ``deadline_s`` and kept where :meth:`close` finds it; None where
        none can be opened (or the sender is closing)."""
        left_s = min(deadline_s - time.perf_counter(), 30.0)
        if self.closing or left_s <= 0:  # the level is over: no new connection
            return None
        try:
            conn = BlockingConnection(self.host, self.port, self.timeout_s, left_s)
        except OSError:
            return None
        with self.blocking_lock:
            if self.closing:  # closed meanwhile: nobody would close this one
                conn.close()
                return None
            self.blocking[worker] = conn
        return conn

    def _drop(self, worker: int, conn: BlockingConnection) -> None:
        with self.blocking_lock:
            if self.blocking.get(worker) is conn:
                del self.blocking[worker]
        conn.close()

    async def send(self, index: int, version: str = "", worker: int | None = None) -> str | None:
        if self.watchdog is None:
            self.watchdog = asyncio.ensure_future(self._watch())
        payload = self._payload(index, version, worker)
        sent_s = time.perf_counter()
        kind, conn = await self._send_on(payload, worker, sent_s)
        if self._send_again(kind, conn):  # as send_blocking does, within the first send's timeout
            if time.perf_counter() - sent_s >= self.timeout_s:
                return "deadline_exceeded"
            self.resent += 1
            kind, _ = await self._send_on(payload, worker, sent_s)
        return kind

    async def _send_on(self, payload: bytes, worker: int | None, sent_s: float) -> tuple[str | None, Connection | None]:
        """``payload`` on the worker's connection, or a free one (opened where there is none): the failure kind or
        None, and the connection it went on (None where none could be opened). Its timeout runs from ``sent_s``."""
        conn = self.by_worker.get(worker) if worker is not None else None
        if conn is None or conn.closed:
            try:
                conn = await self._connection(worker)
            except (OSError, asyncio.TimeoutError):
                return "connection", None
        try:
            return await conn.request(payload, sent_s), conn
        finally:
            self._release(conn, worker)

    async def _connection(self, worker: int | None) -> Connection:
        if worker is not None:
            conn = self.by_worker.get(worker)
            if conn is None or conn.closed:
                conn = self.by_worker[worker] = await self._open()
            return conn
        while self.idle:
            conn = self.idle.popleft()
            if not conn.closed:
                return conn
        while self.count >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self.slot_waiters.append(waiter)
            handed = await waiter
            if handed is not None and not handed.closed:
                return handed
        return await self._open()

    async def _open(self) -> Connection:
        """A new connection; it counts against the limit from now (while it opens too)."""
        loop = asyncio.get_running_loop()
        self.count += 1
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Connection(self._forget), self.host, self.port),
                timeout=min(self.timeout_s, 30),
            )
        except BaseException:
            self.count -= 1
            self._hand_on(None)
            raise
        self.opened.add(conn)
        return conn

    def _release(self, conn: Connection, worker: int | None) -> None:
        if worker is None and not conn.closed:
            self._hand_on(conn)

    def _forget(self, conn: Connection) -> None:
        """A connection closed (answering or idle): its slot is free for an open-loop send waiting for one."""
        if conn in self.opened:
            self.opened.discard(conn)
            self.count -= 1
            self._hand_on(None)

    def _hand_on(self, conn: Connection | None) -> None:
        """Give a free connection (or, None, a freed slot) to the longest waiting open-loop send, else keep it."""
        while self.slot_waiters:
            waiter = self.slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self.idle.append(conn)

    async def _watch(self) -> None:
        """Fail requests outstanding longer than the timeout (their connection is dropped with them)."""
        period_s = min(max(self.timeout_s / 4, 0.01), 1.0)
        while True:
            await asyncio.sleep(period_s)
            now = time.perf_counter()
            for conn in list(self.opened):
                if conn.waiter is not None and now - conn.sent_s > self.timeout_s:
                    conn.fail("deadline_exceeded")

    async def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        with self.blocking_lock:
            self.closing = True
            blocking, self.blocking = list(self.blocking.values()), {}
        for worker_conn in blocking:  # a worker's thread still reading wakes with a failure
            worker_conn.close()
        for conn in list(self.opened):
            conn.fail("connection")
