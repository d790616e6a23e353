"""Send requests to a running Triton server over gRPC or HTTP, with NumPy arrays in and out.

Thin wrappers over ``tritonclient`` that turn its failures (no server, unknown model, rejected input) into
:class:`TritongenError` with a fix. URLs are ``host:port`` (a leading ``http://`` or ``grpc://`` is dropped).
"""

from __future__ import annotations

import functools
import math
import os
import re
import threading
import time
from typing import Any, Mapping, Sequence

import numpy as np

from .dtypes import triton_from_numpy
from .errors import TritongenError

PROTOCOLS = ("grpc", "http")
DEFAULT_URLS = {"grpc": "127.0.0.1:8001", "http": "127.0.0.1:8000"}
URL_ENV = "TRITONGEN_URL"  # TRITONGEN_GRPC_URL / TRITONGEN_HTTP_URL override it per protocol


def default_url(protocol: str = "grpc") -> str:
    """``TRITONGEN_<PROTOCOL>_URL``, else ``TRITONGEN_URL``, else 127.0.0.1:8001 (gRPC) / :8000 (HTTP)."""
    protocol = _check_protocol(protocol)
    return os.environ.get(f"TRITONGEN_{protocol.upper()}_URL") or os.environ.get(URL_ENV) or DEFAULT_URLS[protocol]


def infer_from_arrays(
    url: str,
    model: str,
    inputs: Mapping[str, np.ndarray],
    protocol: str = "grpc",
    outputs: Sequence[str] | None = None,
    timeout_s: float = 60,
    headers: Mapping[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """One inference request; returns every output (or the named ``outputs``) as NumPy arrays.

    Arrays carry the batch dimension when the model batches. Strings (``str``/``bytes``/object arrays) go as
    BYTES; BYTES outputs come back as object arrays of ``bytes``.
    """
    protocol = _check_protocol(protocol)
    module = _module(protocol)
    url = _host_port(url)
    client = _connect(module, protocol, url, timeout_s)
    try:
        kwargs = {"client_timeout": timeout_s} if protocol == "grpc" else {}
        result = client.infer(model, _infer_inputs(module, inputs), outputs=_requested(module, outputs),
                              headers=dict(headers or {}), **kwargs)
        return _arrays(result, protocol, outputs)
    except Exception as e:  # noqa: BLE001 - every tritonclient failure becomes one clean error
        raise _clean_error(e, url, protocol, model, timeout_s) from None
    finally:
        _close(client)


def infer_concurrently(
    url: str,
    model: str,
    requests: Sequence[Mapping[str, np.ndarray]],
    protocol: str = "grpc",
    concurrency: int = 16,
    timeout_s: float = 60,
    outputs: Sequence[str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Send ``requests`` with up to ``concurrency`` in flight; results in request order.

    This is what lets the server's dynamic batcher combine requests: see :func:`model_statistics`.
    """
    protocol = _check_protocol(protocol)
    if concurrency < 1:
        raise TritongenError(f"concurrency {concurrency} is below 1", "use 1 or more requests in flight")
    module = _module(protocol)
    url = _host_port(url)
    prepared = [_infer_inputs(module, r) for r in requests]
    if protocol == "grpc":
        return _grpc_concurrently(module, url, model, prepared, concurrency, timeout_s, outputs, headers)
    return _http_concurrently(module, url, model, prepared, concurrency, timeout_s, outputs, headers)


def model_metadata(url: str, model: str, protocol: str = "grpc", timeout_s: float = 30,
                   headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``{"name", "versions", "platform", "max_batch_size", "inputs": [{"name", "datatype", "shape"}], "outputs", "steps"}``.

    Shapes are lists of ints and include the batch dimension (-1) when the model batches.
    """
    protocol = _check_protocol(protocol)
    module = _module(protocol)
    url = _host_port(url)
    client = _connect(module, protocol, url, timeout_s)
    try:
        kwargs = {"as_json": True, "client_timeout": timeout_s} if protocol == "grpc" else {}
        meta = client.get_model_metadata(model, headers=dict(headers or {}), **kwargs)
        config = client.get_model_config(model, headers=dict(headers or {}), **kwargs)
    except Exception as e:  # noqa: BLE001
        raise _clean_error(e, url, protocol, model, timeout_s) from None
    finally:
        _close(client)
    config = config.get("config", config)

    def tensors(entries):
        return [{"name": t["name"], "datatype": t["datatype"], "shape": [int(d) for d in t.get("shape", [])]} for t in entries or []]

    return {
        "name": meta.get("name", model),
        "versions": [str(v) for v in meta.get("versions", [])],
        "platform": meta.get("platform", ""),
        "max_batch_size": int(config.get("max_batch_size", 0)),
        "inputs": tensors(meta.get("inputs")),
        "outputs": tensors(meta.get("outputs")),
        # An ensemble's composing models, in step order (empty for a plain model).
        "steps": [str(step.get("model_name", "")) for step in config.get("ensemble_scheduling", {}).get("step", [])],
    }


def model_statistics(url: str, model: str, protocol: str = "grpc", timeout_s: float = 30,
                     headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Counters from Triton's statistics API, summed over the model's versions.

    ``inference_count`` counts inferences (batch items), ``execution_count`` model executions: with dynamic
    batching the second is smaller. ``batch_executions`` maps each executed batch size to its count; the
    ``*_ns`` fields are cumulative times. ``raw`` holds the server's answer.
    """
    protocol = _check_protocol(protocol)
    module = _module(protocol)
    url = _host_port(url)
    client = _connect(module, protocol, url, timeout_s)
    try:
        kwargs = {"as_json": True, "client_timeout": timeout_s} if protocol == "grpc" else {}
        raw = client.get_inference_statistics(model, headers=dict(headers or {}), **kwargs)
    except Exception as e:  # noqa: BLE001
        raise _clean_error(e, url, protocol, model, timeout_s) from None
    finally:
        _close(client)
    # gRPC's JSON renders int64 as strings and leaves out zero fields; HTTP gives ints.
    out: dict[str, Any] = {"model": model, "inference_count": 0, "execution_count": 0, "success_count": 0,
                           "failure_count": 0, "success_ns": 0, "queue_ns": 0, "compute_input_ns": 0,
                           "compute_infer_ns": 0, "compute_output_ns": 0, "batch_executions": {}, "raw": raw}
    for entry in raw.get("model_stats", []):
        out["inference_count"] += int(entry.get("inference_count", 0))
        out["execution_count"] += int(entry.get("execution_count", 0))
        stats = entry.get("inference_stats", {})
        out["success_count"] += int(stats.get("success", {}).get("count", 0))
        out["failure_count"] += int(stats.get("fail", {}).get("count", 0))
        for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
            out[f"{key}_ns"] += int(stats.get(key, {}).get("ns", 0))
        for batch in entry.get("batch_stats", []):
            size = int(batch.get("batch_size", 0))
            count = int(batch.get("compute_infer", {}).get("count", 0))
            out["batch_executions"][size] = out["batch_executions"].get(size, 0) + count
    out["batch_executions"] = dict(sorted(out["batch_executions"].items()))
    return out


def statistics_after(url: str, model: str, inference_count: int, protocol: str = "grpc", timeout_s: float = 5,
                     headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """:func:`model_statistics` once ``inference_count`` is reached: the server updates its counters just
    after it sends a response, so a read right after the last answer can miss the last request."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = model_statistics(url, model, protocol, headers=headers)
        if stats["inference_count"] >= inference_count or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------- internals


def _check_protocol(protocol: str) -> str:
    p = (protocol or "").lower()
    if p not in PROTOCOLS:
        raise TritongenError(f"protocol '{protocol}' is not supported", "use grpc or http")
    return p


def _module(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError as e:
        raise TritongenError(f"tritonclient's {protocol} client cannot be imported ({e})", f"pip install 'tritonclient[{protocol}]'") from None
    return module


def _host_port(url: str) -> str:
    url = (url or "").strip()
    url = re.sub(r"^(grpc|http)://", "", url).rstrip("/")
    if not url:
        raise TritongenError("no server URL given", "pass --url host:port (gRPC is usually 8001, HTTP 8000)")
    return url


def _connect(module, protocol: str, url: str, timeout_s: float, concurrency: int = 1):
    try:
        if protocol == "grpc":
            return module.InferenceServerClient(url)
        return module.InferenceServerClient(url, concurrency=concurrency, connection_timeout=timeout_s, network_timeout=timeout_s)
    except Exception as e:  # noqa: BLE001 - a malformed URL fails here
        raise TritongenError(f"cannot make a {protocol} client for '{url}' ({e})", "pass the URL as host:port, e.g. 127.0.0.1:8001") from None


def _close(client) -> None:
    try:
        client.close()
    except Exception:  # noqa: BLE001
        pass


def _infer_inputs(module, inputs: Mapping[str, np.ndarray]) -> list:
    if not inputs:
        raise TritongenError("the request has no inputs", "pass at least one named input array")
    prepared = []
    for name, value in inputs.items():
        array = np.asarray(value)
        datatype = triton_from_numpy(array.dtype)
        if datatype == "STRING":
            datatype = "BYTES"  # the wire name
            if array.dtype.kind in ("U", "S"):
                array = array.astype(object)  # tritonclient serialises object arrays of str/bytes
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(np.ascontiguousarray(array) if array.dtype != object else array)
        prepared.append(tensor)
    return prepared


def _requested(module, outputs: Sequence[str] | None):
    return None if outputs is None else [module.InferRequestedOutput(name) for name in outputs]


def _arrays(result, protocol: str, outputs: Sequence[str] | None) -> dict[str, np.ndarray]:
    if outputs is None:
        response = result.get_response()
        if protocol == "grpc":
            outputs = [o.name for o in response.outputs]
        else:
            outputs = [o["name"] for o in response.get("outputs", [])]
    return {name: result.as_numpy(name) for name in outputs}


def _grpc_concurrently(module, url, model, prepared, concurrency, timeout_s, outputs, headers):
    client = _connect(module, "grpc", url, timeout_s)
    slots = threading.BoundedSemaphore(concurrency)
    results: list[Any] = [None] * len(prepared)
    errors: list[Any] = [None] * len(prepared)
    remaining = [len(prepared)]
    lock = threading.Lock()
    done = threading.Event()
    if not prepared:
        done.set()

    def finished(index, result, error):
        results[index], errors[index] = result, error
        slots.release()
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                done.set()

    try:
        for i, inputs in enumerate(prepared):
            slots.acquire()
            try:
                # tritonclient calls callback(result=..., error=...) by keyword
                client.async_infer(model, inputs, callback=functools.partial(finished, i),
                                   outputs=_requested(module, outputs), client_timeout=timeout_s, headers=dict(headers or {}))
            except Exception as e:  # noqa: BLE001
                finished(i, None, e)
        # Each request has its own deadline, so callbacks do come; this guard only bounds a stuck client.
        if not done.wait(timeout=timeout_s * (math.ceil(len(prepared) / concurrency) + 2)):
            raise TritongenError(f"{len(prepared)} concurrent requests to '{model}' at {url} did not finish", "raise timeout_s or lower the concurrency")
        for error in errors:
            if error is not None:
                raise _clean_error(error, url, "grpc", model, timeout_s)
        return [_arrays(r, "grpc", outputs) for r in results]
    finally:
        _close(client)


def _http_concurrently(module, url, model, prepared, concurrency, timeout_s, outputs, headers):
    client = _connect(module, "http", url, timeout_s, concurrency=concurrency)
    try:
        try:
            handles = [client.async_infer(model, inputs, outputs=_requested(module, outputs), headers=dict(headers or {}))
                       for inputs in prepared]
            return [_arrays(h.get_result(timeout=timeout_s), "http", outputs) for h in handles]
        except TritongenError:
            raise
        except Exception as e:  # noqa: BLE001
            raise _clean_error(e, url, "http", model, timeout_s) from None
    finally:
        _close(client)


_CONNECT_PATTERNS = ("failed to connect", "connection refused", "unavailable", "connect failed", "name or service not known",
                     "name resolution", "no route to host", "connection reset", "socket closed", "failed to establish")


def _clean_error(error: BaseException, url: str, protocol: str, model: str, timeout_s: float) -> TritongenError:
    """Sort a tritonclient/network failure into: no server, timeout, unknown model, rejected request."""
    if isinstance(error, TritongenError):
        return error
    message, status = _error_text(error)
    lowered = f"{status} {message}".lower()
    port_hint = "gRPC is usually port 8001, HTTP 8000"
    if "deadline" in lowered or "timed out" in lowered or "timeout" in type(error).__name__.lower():
        return TritongenError(
            f"request to model '{model}' at {url} ({protocol}) timed out after {timeout_s:g} s",
            "raise the timeout, or check that the server is not overloaded (its log says more)",
        )
    if "unknown model" in lowered or (f"'{model}'" in message and ("not found" in lowered or "not available" in lowered)):
        return TritongenError(
            f"the server at {url} has no model '{model}' ready ({message})",
            "check the model name (tritongen serve lists the models it loaded), or see the server log for why it did not load",
        )
    if "restricted" in lowered:
        return TritongenError(f"the server at {url} refused the request: {message}", "send the admin header printed by tritongen serve, or call it from the server's own machine")
    if isinstance(error, OSError) or any(p in lowered for p in _CONNECT_PATTERNS):
        return TritongenError(
            f"no Triton server answers at {url} over {protocol} ({message})",
            f"start one with `tritongen serve <repository>`, or pass the right --url and --protocol ({port_hint})",
        )
    return TritongenError(
        f"the server at {url} rejected the request to model '{model}': {message}",
        f"check the input names, data types and shapes against the model's (GET {_metadata_address(url, protocol, model)} "
        "lists them)",
    )


def _metadata_address(url: str, protocol: str, model: str) -> str:
    """The HTTP address of the model's metadata: the URL itself over HTTP, Triton's default HTTP port beside gRPC."""
    host = url.split("://", 1)[-1].rstrip("/")
    if protocol != "http":
        host = f"{host.rpartition(':')[0] or host}:8000"
    return f"http://{host}/v2/models/{model}"


def _error_text(error: BaseException) -> tuple[str, str]:
    message = getattr(error, "message", None)
    status = getattr(error, "status", None)
    message = message() if callable(message) else message
    status = status() if callable(status) else status
    text = str(message or error) or type(error).__name__
    return text.strip(), str(status or "")
