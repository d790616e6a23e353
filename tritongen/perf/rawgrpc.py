"""A lean gRPC sender for the built-in engine: HTTP/2 framed by hand on one asyncio connection.

grpc.aio adds about 0.17 ms to every round trip here (each answer travels from gRPC's completion queue to the
event loop through a poller thread) and 120-130 us of CPU; a closed loop at low concurrency on a ~1 ms model turns
that straight into throughput (0.84x perf_analyzer's at concurrency 4 on a 2-core machine, the client on its own
core). As :mod:`.rawhttp` does for HTTP/1.1, each request here is bytes built once (a HEADERS block encoded once,
the gRPC message around the ``ModelInferRequest`` serialised once) and written with one ``transport.write``; the
answer is read as far as needed: a DATA frame (the response message, not parsed) and the trailers' ``grpc-status``.

What HTTP/2 asks of a client is done: the connection preface and settings, flow control both ways (the server's
windows respected when sending, ours widened to the maximum and replenished), the server's SETTINGS and PINGs
acknowledged, GOAWAY and RST_STREAM honoured, frames longer than our SETTINGS_MAX_FRAME_SIZE refused. We
announce a header table size of 0, so the server encodes response headers without its dynamic table and a
header block means the same whenever it comes: each distinct block is decoded once (by ``hpack``) and cached.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import deque
from collections.abc import Mapping, Sequence
from urllib.parse import unquote

import numpy as np

from ..names import one_line
from .inputs import RequestSet, wire_from_array
from .rawhttp import REASON_CHARS
from .sequences import SequenceTracker, grpc_sequence_bytes

logger = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY_FRAME, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
FLAG_END_STREAM = FLAG_ACK = 0x1
FLAG_END_HEADERS, FLAG_PADDED, FLAG_PRIORITY = 0x4, 0x8, 0x20
SETTING_HEADER_TABLE_SIZE, SETTING_ENABLE_PUSH, SETTING_MAX_CONCURRENT_STREAMS = 1, 2, 3
SETTING_INITIAL_WINDOW_SIZE, SETTING_MAX_FRAME_SIZE = 4, 5
DEFAULT_WINDOW = 65_535
MAX_WINDOW = 2**31 - 1
RECEIVE_FRAME_BYTES = 16_384  # our SETTINGS_MAX_FRAME_SIZE (the default): a longer frame is a protocol error
MAX_HEADER_BLOCK_BYTES = 64 * 1024  # a response header block (HEADERS + CONTINUATION) longer than this is refused
MAX_CACHED_BLOCKS = 256
MAX_STREAM_ID = 2**31 - 1
METHOD_PATH = "/inference.GRPCInferenceService/ModelInfer"
# gRPC status codes by number, named as grpc.StatusCode names them (lower case): the failure kinds perf reports.
STATUS_NAMES = (
    "ok cancelled unknown invalid_argument deadline_exceeded not_found already_exists permission_denied "
    "resource_exhausted failed_precondition aborted out_of_range unimplemented internal unavailable data_loss "
    "unauthenticated"
).split()
# RST_STREAM error codes as gRPC maps them (REFUSED_STREAM: the server never saw the request).
RESET_KINDS = {7: "unavailable", 8: "cancelled", 11: "resource_exhausted"}


# --------------------------------------------------------------------------------------------- encoding


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame: 24-bit length, type, flags, 31-bit stream id, payload."""
    n = len(payload)
    return struct.pack(">HBBBI", n >> 8, n & 0xFF, kind, flags, stream) + payload


def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """HPACK's prefixed integer (RFC 7541 5.1); ``first`` holds the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def hpack_literal(name: int | str, value: str) -> bytes:
    """A header as 'literal without indexing' (RFC 7541 6.2.2): the server's dynamic table is never touched, so
    the block can be sent again and again. ``name``: an index into the static table, or the name itself."""
    encoded = value.encode("latin-1")
    if isinstance(name, int):
        head = hpack_int(name, 4)
    else:
        raw = name.encode("latin-1")
        head = b"\x00" + hpack_int(len(raw), 7) + raw
    return head + hpack_int(len(encoded), 7) + encoded


def request_header_block(authority: str) -> bytes:
    """The HEADERS block of every ModelInfer call: POST and http from the static table (indices 3 and 6), the path,
    authority and content-type by their static names (4, 1, 31), and ``te: trailers``, which gRPC requires."""
    return (
        b"\x83\x86"
        + hpack_literal(4, METHOD_PATH)
        + hpack_literal(1, authority)
        + hpack_literal(31, "application/grpc")
        + hpack_literal("te", "trailers")
    )


def grpc_message(payload: bytes) -> bytes:
    """A length-prefixed gRPC message, uncompressed."""
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def grpc_request_bytes(model: str, request: Mapping[str, np.ndarray], version: str = "") -> bytes:
    """A serialised ``ModelInferRequest`` with every tensor in ``raw_input_contents``."""
    from tritonclient.grpc import service_pb2

    message = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for name, array in request.items():
        tensor = message.inputs.add()
        tensor.name = name
        tensor.shape.extend(int(d) for d in array.shape)
        tensor.datatype, raw = wire_from_array(array)
        message.raw_input_contents.append(raw)
    return message.SerializeToString()


def status_from_headers(headers: Sequence[tuple[str, str]], got_message: bool) -> str | None:
    """None for a call that succeeded, else its failure kind (a gRPC status name, ``http_<status>``), followed by
    the server's reason where its trailers carry one (``grpc-message``), as the HTTP sender keeps Triton's error
    text: ``invalid_argument: unexpected shape for input 'X' ...``."""
    fields = dict(headers)
    status = fields.get(":status")
    if status is not None and status != "200":
        return http_status_kind(status)
    grpc_status = fields.get("grpc-status")
    if grpc_status is None or not grpc_status.isdigit():
        return "bad_response"
    code = int(grpc_status)
    if code == 0:
        return None if got_message else "internal"  # a unary call that ends without its answer
    kind = STATUS_NAMES[code] if code < len(STATUS_NAMES) else "unknown"
    reason = reason_from_grpc_message(fields.get("grpc-message", ""))
    return f"{kind}: {reason}" if reason else kind


def http_status_kind(status: str | None) -> str:
    """The failure kind of an answer whose ``:status`` is not 200: ``http_<status>`` for an HTTP status (three
    ASCII digits), else ``http_bad_status``. The server's text is no part of a kind: ``500\\x1b[31m...`` reached
    the terminal and results.json, which perf's own reader (``perf --compare``) then refused."""
    if status is not None and len(status) == 3 and status.isascii() and status.isdigit():
        return f"http_{status}"
    return "http_bad_status"


def reason_from_grpc_message(raw: str) -> str:
    """A ``grpc-message`` trailer as text: percent-decoded (as gRPC sends it), on one line, at most
    ``REASON_CHARS`` characters (the reason is part of the failure kind)."""
    # a server's own words, printed and stored: its control characters escaped (a terminal would obey them)
    return one_line(" ".join(unquote(raw, errors="replace").split())[:REASON_CHARS].rstrip())


def kind_name(kind: str) -> str:
    """A failure kind without its reason: ``unavailable`` for ``unavailable: no server``."""
    return kind.partition(":")[0]


# --------------------------------------------------------------------------------------------- one connection


class Stream:
    __slots__ = ("ident", "waiter", "sent_s", "window", "pending", "got_message", "headers_seen")

    def __init__(self, ident: int, waiter: asyncio.Future, window: int) -> None:
        self.ident = ident
        self.waiter = waiter
        self.sent_s = time.perf_counter()
        self.window = window  # what the server lets us send on this stream
        self.pending = b""  # message bytes waiting for a window
        self.got_message = False
        self.headers_seen = False


class H2Connection(asyncio.Protocol):
    """One HTTP/2 connection carrying any number of concurrent ModelInfer calls."""

    def __init__(self) -> None:
        from hpack import Decoder

        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.streams: dict[int, Stream] = {}
        self.next_id = 1
        self.send_window = DEFAULT_WINDOW  # the server's connection window for what we send
        self.stream_window = DEFAULT_WINDOW  # the server's SETTINGS_INITIAL_WINDOW_SIZE
        self.max_frame = 16_384  # the server's SETTINGS_MAX_FRAME_SIZE
        self.max_streams = 1 << 31  # the server's SETTINGS_MAX_CONCURRENT_STREAMS
        self.received = 0  # DATA bytes since our last connection WINDOW_UPDATE
        self.blocked: deque[Stream] = deque()  # streams with message bytes waiting for a window
        self.block_stream = 0  # a header block being continued (CONTINUATION frames), its stream
        self.block = bytearray()
        self.block_ends = False
        self.decoder = Decoder()
        self.decoder.max_allowed_table_size = 0  # what we announce: see the module's docstring
        self.decoded: dict[bytes, tuple[tuple[str, str], ...]] = {}
        self.closed = False
        self.going_away = False  # the server sent GOAWAY: no new streams here
        self.slot_waiters: deque[asyncio.Future] = deque()

    # ----------------------------------------------------------------------------------------- asyncio

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        settings = struct.pack(
            ">HIHIHI",
            SETTING_HEADER_TABLE_SIZE,
            0,
            SETTING_ENABLE_PUSH,
            0,
            SETTING_INITIAL_WINDOW_SIZE,
            MAX_WINDOW,
        )
        grow = struct.pack(">I", MAX_WINDOW - DEFAULT_WINDOW)
        transport.write(PREFACE + frame(SETTINGS, 0, 0, settings) + frame(WINDOW_UPDATE, 0, 0, grow))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._resolve_all("connection")

    @property
    def usable(self) -> bool:
        return not self.closed and not self.going_away and self.next_id < MAX_STREAM_ID

    # ----------------------------------------------------------------------------------------- sending

    async def request(self, header_block: bytes, message: bytes) -> str | None:
        while len(self.streams) >= self.max_streams and not self.closed:
            waiter = asyncio.get_running_loop().create_future()
            self.slot_waiters.append(waiter)
            await waiter
        if not self.usable or self.transport is None:
            return "connection"
        ident = self.next_id
        self.next_id += 2
        stream = Stream(ident, asyncio.get_running_loop().create_future(), self.stream_window)
        self.streams[ident] = stream
        out = frame(HEADERS, FLAG_END_HEADERS, ident, header_block)
        stream.pending = message
        out += self._data_frames(stream)
        self.transport.write(out)
        if stream.pending:
            self.blocked.append(stream)
        return await stream.waiter

    def _data_frames(self, stream: Stream) -> bytes:
        """As much of the stream's message as the windows allow, as DATA frames (END_STREAM on the last)."""
        size = min(len(stream.pending), self.send_window, stream.window)
        if size <= 0:
            return b""
        chunk, stream.pending = stream.pending[:size], stream.pending[size:]
        self.send_window -= size
        stream.window -= size
        parts = []
        for at in range(0, size, self.max_frame):
            piece = chunk[at : at + self.max_frame]
            last = not stream.pending and at + self.max_frame >= size
            parts.append(frame(DATA, FLAG_END_STREAM if last else 0, stream.ident, piece))
        return b"".join(parts)

    def _flush_blocked(self) -> None:
        if not self.blocked or self.transport is None:
            return
        out = []
        for _ in range(len(self.blocked)):
            stream = self.blocked.popleft()
            if stream.ident not in self.streams:
                continue
            out.append(self._data_frames(stream))
            if stream.pending:
                self.blocked.append(stream)
        if out:
            self.transport.write(b"".join(out))

    def cancel(self, ident: int, kind: str) -> None:
        """Give up on a stream (its deadline passed): RST_STREAM CANCEL to the server, ``kind`` to the caller."""
        if ident in self.streams and self.transport is not None and not self.closed:
            self.transport.write(frame(RST_STREAM, 0, ident, struct.pack(">I", 8)))
        self._finish(ident, kind)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
            self.transport.close()
        self.closed = True
        self._resolve_all("connection")

    # ----------------------------------------------------------------------------------------- receiving

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        at, end = 0, len(self.buffer)
        buf = self.buffer
        try:
            while end - at >= 9:
                length = (buf[at] << 16) | (buf[at + 1] << 8) | buf[at + 2]
                if length > RECEIVE_FRAME_BYTES:
                    raise ValueError(f"a frame of {length} bytes (at most {RECEIVE_FRAME_BYTES})")
                if end - at < 9 + length:
                    break
                kind, flags = buf[at + 3], buf[at + 4]
                ident = int.from_bytes(buf[at + 5 : at + 9], "big") & 0x7FFFFFFF
                payload = bytes(buf[at + 9 : at + 9 + length])
                at += 9 + length
                self._frame(kind, flags, ident, payload)
        except Exception as e:  # noqa: BLE001 -- any fault reading the answers: its calls fail, none left waiting
            self._protocol_error(f"{type(e).__name__}: {e}"[:300])
            return
        del self.buffer[:at]

    def _frame(self, kind: int, flags: int, ident: int, payload: bytes) -> None:
        if self.block_stream and kind != CONTINUATION:
            raise ValueError("a header block interrupted")
        if kind == DATA:
            self._on_data(flags, ident, payload)
        elif kind == HEADERS:
            self._on_headers(flags, ident, payload)
        elif kind == CONTINUATION:
            if ident != self.block_stream or not self.block_stream:
                raise ValueError("CONTINUATION without its HEADERS")
            self._add_block(ident, payload, flags, self.block_ends)
        elif kind == RST_STREAM:
            code = struct.unpack(">I", payload[:4])[0]
            self._finish(ident, RESET_KINDS.get(code, "internal"))
        elif kind == SETTINGS:
            if not flags & FLAG_ACK:
                self._on_settings(payload)
        elif kind == PING:
            if not flags & FLAG_ACK and self.transport is not None:
                self.transport.write(frame(PING, FLAG_ACK, 0, payload[:8]))
        elif kind == GOAWAY:
            last = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            self.going_away = True
            for other in [i for i in self.streams if i > last]:
                self._finish(other, "unavailable")
        elif kind == WINDOW_UPDATE:
            increment = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            if ident == 0:
                self.send_window += increment
            elif ident in self.streams:
                self.streams[ident].window += increment
            self._flush_blocked()
        elif kind == PUSH_PROMISE:
            raise ValueError("PUSH_PROMISE after push was disabled")
        # PRIORITY and unknown frame types are ignored, as RFC 9113 asks

    def _on_data(self, flags: int, ident: int, payload: bytes) -> None:
        self.received += len(payload)
        if self.received > MAX_WINDOW // 2 and self.transport is not None:
            self.transport.write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.received)))
            self.received = 0
        stream = self.streams.get(ident)
        if stream is None:
            return
        stream.got_message = True
        if flags & FLAG_END_STREAM:
            self._finish(ident, "bad_response")  # a gRPC answer ends with trailers, not with its data

    def _on_headers(self, flags: int, ident: int, payload: bytes) -> None:
        if flags & FLAG_PADDED:
            pad = payload[0]
            payload = payload[1 : len(payload) - pad]
        if flags & FLAG_PRIORITY:
            payload = payload[5:]
        self.block.clear()
        self._add_block(ident, payload, flags, bool(flags & FLAG_END_STREAM))

    def _add_block(self, ident: int, fragment: bytes, flags: int, ends_stream: bool) -> None:
        self.block += fragment
        if len(self.block) > MAX_HEADER_BLOCK_BYTES:
            raise ValueError(f"a header block over {MAX_HEADER_BLOCK_BYTES} bytes")
        if not flags & FLAG_END_HEADERS:
            self.block_stream, self.block_ends = ident, ends_stream
            return
        self.block_stream = 0
        headers = self._decode(bytes(self.block))
        stream = self.streams.get(ident)
        if stream is None:
            return
        if ends_stream:
            self._finish(ident, status_from_headers(headers, stream.got_message))
        elif not stream.headers_seen:
            stream.headers_seen = True
            status = dict(headers).get(":status")
            if status != "200":
                self.cancel(ident, http_status_kind(status))

    def _decode(self, block: bytes) -> tuple[tuple[str, str], ...]:
        cached = self.decoded.get(block)
        if cached is not None:
            return cached
        from hpack import HPACKError

        try:
            headers = tuple((str(k), str(v)) for k, v in self.decoder.decode(block, raw=False))
        except HPACKError as e:
            raise ValueError(f"a header block hpack cannot decode: {e}") from e
        if len(self.decoder.header_table.dynamic_entries) == 0 and len(self.decoded) < MAX_CACHED_BLOCKS:
            self.decoded[block] = headers  # no table behind it: the same bytes always mean the same headers
        return headers

    def _on_settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise ValueError("a SETTINGS frame whose length is not a multiple of 6")
        for at in range(0, len(payload), 6):
            key, value = struct.unpack(">HI", payload[at : at + 6])
            if key == SETTING_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ValueError("an initial window over 2^31-1")
                delta, self.stream_window = value - self.stream_window, value
                for stream in self.streams.values():
                    stream.window += delta
            elif key == SETTING_MAX_FRAME_SIZE:
                if not 16_384 <= value <= 2**24 - 1:
                    raise ValueError(f"a max frame size of {value}")
                self.max_frame = value
            elif key == SETTING_MAX_CONCURRENT_STREAMS:
                self.max_streams = max(1, value)
        if self.transport is not None:
            self.transport.write(frame(SETTINGS, FLAG_ACK, 0))
        self._flush_blocked()
        self._wake_slot_waiters()

    # ----------------------------------------------------------------------------------------- endings

    def _finish(self, ident: int, kind: str | None) -> None:
        stream = self.streams.pop(ident, None)
        if stream is None:
            return
        if not stream.waiter.done():
            stream.waiter.set_result(kind)
        self._wake_slot_waiters()

    def _wake_slot_waiters(self) -> None:
        while self.slot_waiters and (len(self.streams) < self.max_streams or self.closed):
            waiter = self.slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _resolve_all(self, kind: str) -> None:
        """Every outstanding call gets ``kind``; callers waiting for a stream slot wake (the connection is closed)."""
        for ident in list(self.streams):
            self._finish(ident, kind)
        self.blocked.clear()
        self._wake_slot_waiters()

    def _protocol_error(self, reason: str) -> None:
        """The server broke HTTP/2 (or we cannot follow it): every call here fails as ``bad_response``; the reason
        goes to the log (``--debug`` shows it)."""
        logger.info("gRPC connection given up: %s", reason)
        self.closed = True
        self._resolve_all("bad_response")
        if self.transport is not None:
            self.transport.abort()


# --------------------------------------------------------------------------------------------- the sender


class RawGrpcSender:
    """The built-in engine's gRPC sender; the same ``send``/``close`` as the HTTP one. ``versions`` ("" = unpinned)
    each get their own payloads."""

    def __init__(
        self, url: str, model: str, requests: RequestSet, timeout_s: float, versions: Sequence[str] = ("",)
    ) -> None:
        host, _, port = url.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.timeout_s = timeout_s
        self.header_block = request_header_block(url)
        self.sequences = SequenceTracker(requests.sequence_length) if requests.sequence_length else None
        payloads = {v: [grpc_request_bytes(model, r, v) for r in requests.requests] for v in set(versions)}
        self.messages = {v: [grpc_message(p) for p in ps] for v, ps in payloads.items()}
        # a sequence model's requests get their sequence fields appended per send, so only they keep the bare
        # payloads; the others would hold every request twice
        self.payloads = payloads if self.sequences is not None else {}
        self.conn: H2Connection | None = None
        self.opening: asyncio.Future | None = None
        self.connections: list[H2Connection] = []
        self.watchdog: asyncio.Task | None = None
        self.resent = 0  # as RawHttpSender's; a gRPC call is never sent again

    async def send(self, index: int, version: str = "", worker: int | None = None) -> str | None:
        if self.watchdog is None:
            self.watchdog = asyncio.ensure_future(self._watch())
        if self.sequences is not None and worker is not None:
            payloads = self.payloads[version]
            message = grpc_message(payloads[index % len(payloads)] + grpc_sequence_bytes(*self.sequences.next(worker)))
        else:
            messages = self.messages[version]
            message = messages[index % len(messages)]
        conn = self.conn
        if conn is None or not conn.usable:
            try:
                conn = await self._connection()
            except (OSError, asyncio.TimeoutError):
                return "connection"
        return await conn.request(self.header_block, message)

    async def _connection(self) -> H2Connection:
        """The open connection, or a new one (one opening at a time, shared by every caller waiting for it)."""
        if self.opening is None:
            self.opening = asyncio.ensure_future(self._open())
        opening = self.opening
        try:
            return await asyncio.shield(opening)
        finally:
            if self.opening is opening and opening.done():
                self.opening = None

    async def _open(self) -> H2Connection:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(H2Connection, self.host, self.port), timeout=min(self.timeout_s, 30)
        )
        self.conn = conn
        self.connections = [c for c in self.connections if not c.closed] + [conn]
        return conn

    async def _watch(self) -> None:
        """Fail calls outstanding longer than the timeout (RST_STREAM to the server; the connection stays)."""
        period_s = min(max(self.timeout_s / 4, 0.01), 1.0)
        while True:
            await asyncio.sleep(period_s)
            now = time.perf_counter()
            for conn in self.connections:
                late = [s.ident for s in conn.streams.values() if now - s.sent_s > self.timeout_s]
                for ident in late:
                    conn.cancel(ident, "deadline_exceeded")

    async def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        for conn in self.connections:
            conn.close()
