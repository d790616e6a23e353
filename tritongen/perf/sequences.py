"""Load on a stateful model: every closed-loop client is one stream, sending sequences of ``sequence_length``
requests (correlation IDs from 1, the first request of each flagged start and the last end), one after another.

Open-loop load (``--request-rate``) on a sequence model needs perf_analyzer (``--engine perf_analyzer``), which
spreads the requests over ``--num-of-sequences`` concurrent sequences.
"""

from __future__ import annotations

import json
import threading
from typing import Any

DEFAULT_SEQUENCE_LENGTH = 20  # perf_analyzer's default too


class SequenceTracker:
    """Which sequence, and where in it, each closed-loop worker is; new correlation IDs as sequences end."""

    def __init__(self, length: int, first_id: int = 1) -> None:
        self.length = length
        self.next_id = first_id
        self.at: dict[int, tuple[int, int]] = {}  # worker -> (correlation ID, requests sent in it)
        self.lock = threading.Lock()  # workers in threads of their own (HTTP) take IDs from one counter

    def next(self, worker: int) -> tuple[int, bool, bool]:
        """(correlation ID, is start, is end) of the worker's next request."""
        with self.lock:
            sequence_id, sent = self.at.get(worker, (0, self.length))
            if sent >= self.length:
                sequence_id, sent = self.next_id, 0
                self.next_id += 1
            self.at[worker] = (sequence_id, sent + 1)
        return sequence_id, sent == 0, sent + 1 == self.length


def grpc_sequence_bytes(sequence_id: int, start: bool, end: bool) -> bytes:
    """A ModelInferRequest holding only the sequence parameters: appended to a serialized request, protobuf merges
    them into it (map entries concatenate)."""
    from tritonclient.grpc import service_pb2

    message = service_pb2.ModelInferRequest()
    message.parameters["sequence_id"].int64_param = sequence_id
    message.parameters["sequence_start"].bool_param = start
    message.parameters["sequence_end"].bool_param = end
    return message.SerializeToString()


def http_sequence_body(body: bytes, headers: dict[str, str], sequence_id: int, start: bool, end: bool):
    """The HTTP request (JSON header + binary tensors) with the sequence parameters in its JSON header."""
    size = int(headers.get("Inference-Header-Content-Length", len(body)))
    header: dict[str, Any] = json.loads(body[:size])
    header.setdefault("parameters", {}).update(sequence_id=sequence_id, sequence_start=start, sequence_end=end)
    encoded = json.dumps(header).encode()
    new_headers = dict(headers)
    if size != len(body):
        new_headers["Inference-Header-Content-Length"] = str(len(encoded))
    return encoded + body[size:], new_headers


def is_sequence_model(config: dict[str, Any]) -> bool:
    return "sequence_batching" in config
