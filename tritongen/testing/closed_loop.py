"""A closed loop of gRPC clients and the server's settled memory (the rollout tests and bench/rollout.py)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Answer:
    sent_s: float  # time.monotonic() when sent
    received_s: float
    output: np.ndarray | None  # None: the request failed
    error: str = ""


class ClosedLoop:
    """``concurrency`` threads, each with its own gRPC client, sending ``inputs`` to ``model`` (no version:
    the server picks) back to back until :meth:`stop`."""

    def __init__(self, url: str, model: str, inputs: dict[str, np.ndarray], output: str, concurrency: int = 32):
        self.url, self.model, self.inputs, self.output = url, model, inputs, output
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(concurrency)]

    def __enter__(self) -> ClosedLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _run(self) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.url)
        prepared = []
        for name, array in self.inputs.items():
            tensor = grpcclient.InferInput(name, list(array.shape), "BYTES" if array.dtype == object else "FP32")
            tensor.set_data_from_numpy(array)
            prepared.append(tensor)
        try:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    result = client.infer(self.model, prepared, client_timeout=60)
                    answer = Answer(sent, time.monotonic(), result.as_numpy(self.output))
                except Exception as exc:  # noqa: BLE001 - every failure is counted
                    answer = Answer(sent, time.monotonic(), None, str(exc)[:200])
                with self._lock:
                    self.answers.append(answer)
        finally:
            client.close()

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)


def which(output: np.ndarray, references: dict[int, np.ndarray], atol: float) -> int | None:
    """The version whose reference ``output`` equals (within ``atol``), else None."""
    for version, reference in references.items():
        if output.shape == reference.shape and float(np.max(np.abs(output - reference))) <= atol:
            return version
    return None


def settled_rss_kb(pid: int, stubs: int = 1, timeout_s: float = 60.0) -> int:
    """Resident memory of the server and its Python-backend stubs once ``stubs`` stub processes are left (an
    unloaded version's stub exits some seconds after the unload) and the figure stops moving."""
    from tritongen.testing.procs import rss_kb_from_pid, stubs_from_server

    deadline = time.monotonic() + timeout_s
    last = rss_kb_from_pid(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = rss_kb_from_pid(pid)
        if len(stubs_from_server(pid)) == stubs and abs(now - last) < 0.01 * last:
            return now
        last = now
    raise AssertionError(f"the server still has {len(stubs_from_server(pid))} stubs after {timeout_s:g} s, not {stubs}")


def percentile_ms(answers: list[Answer], q: float) -> float:
    values = [(a.received_s - a.sent_s) * 1e3 for a in answers if a.output is not None]
    return float(np.percentile(values, q)) if values else float("nan")
