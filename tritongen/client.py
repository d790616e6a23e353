"""Send requests to a running Triton server over gRPC or HTTP, with NumPy arrays in and out.

Thin wrappers over ``tritonclient`` that turn its failures (no server, unknown model, rejected input) into
:class:`TritongenError` with a fix. URLs are ``host:port`` (a leading ``http://`` or ``grpc://`` is dropped; it chooses
the protocol where none is given, :func:`protocol_for_url`).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .dtypes import triton_from_numpy
from .errors import TritongenError
from .layout import version_from_api
from .names import one_line, with_suggestion
from .served_settings import ServedSettings, served_settings_from_config

PROTOCOLS = ("grpc", "http")
DEFAULT_URLS = {"grpc": "127.0.0.1:8001", "http": "127.0.0.1:8000"}
MODEL_CONTROL_PROBE = ".tritongen-model-control-probe"  # unloaded to learn whether the server lets models load
URL_ENV = "TRITONGEN_URL"  # TRITONGEN_GRPC_URL / TRITONGEN_HTTP_URL override it per protocol


class ServerAddress(str):
    """``host:port`` of one of a server's endpoints that knows which protocol listens there: what a
    :class:`~tritongen.server.RunningServer` hands out as ``http_url`` and ``grpc_url``. Text like any other
    (``"127.0.0.1:8000"``), so every use of an address takes it; a spec given one without a ``protocol`` speaks the
    endpoint's (``tritongen.infer(name, url=server.http_url)`` speaks HTTP), as with an ``http://`` URL."""

    protocol: str

    def __new__(cls, address: str, protocol: str) -> ServerAddress:
        made = super().__new__(cls, address)
        made.protocol = _check_protocol(protocol)
        return made

    def __reduce__(self) -> tuple[Any, ...]:
        return ServerAddress, (str(self), self.protocol)


def default_url(protocol: str = "grpc") -> str:
    """``TRITONGEN_<PROTOCOL>_URL``, else ``TRITONGEN_URL``, else 127.0.0.1:8001 (gRPC) / :8000 (HTTP)."""
    protocol = _check_protocol(protocol)
    return os.environ.get(f"TRITONGEN_{protocol.upper()}_URL") or os.environ.get(URL_ENV) or DEFAULT_URLS[protocol]


def default_url_source(protocol: str = "grpc") -> str:
    """Where :func:`default_url` takes its address from, as an error names it: ``$TRITONGEN_GRPC_URL`` /
    ``$TRITONGEN_HTTP_URL``, else ``$TRITONGEN_URL``, else ``--url`` (the built-in default, which the option
    replaces)."""
    own = f"TRITONGEN_{_check_protocol(protocol).upper()}_URL"
    return f"${own}" if os.environ.get(own) else f"${URL_ENV}" if os.environ.get(URL_ENV) else "--url"


_SCHEME = re.compile(r"^\s*(grpc|http)://", re.IGNORECASE)  # a server URL's scheme, as every reader of one takes it


def protocol_for_url(url: str | None, protocol: str | None, option: str = "--url") -> str:
    """The protocol to speak to ``url``: ``protocol`` when given, else the URL's scheme (``http://`` HTTP,
    ``grpc://`` gRPC), else gRPC. A scheme that contradicts ``protocol`` is refused (one would be tried on the
    other's port and answer "no server")."""
    match = _SCHEME.match(url or "")
    scheme = match.group(1).lower() if match else getattr(url, "protocol", None)  # a ServerAddress knows its own
    if protocol is None:
        return scheme or "grpc"
    protocol = _check_protocol(protocol)
    if scheme is not None and scheme != protocol:
        shown = {"grpc": "gRPC", "http": "HTTP"}
        give = f"set {option} to" if option.startswith("$") else option  # an environment variable, or an option
        asks = f"asks for {shown[scheme]}" if match else f"is the server's {shown[scheme]} port"
        raise TritongenError(
            f"{option} {ascii((url or '').strip())[1:-1][:80]} {asks} but --protocol is {protocol}",
            f"pass --protocol {scheme}, or {give} host:port of the server's {shown[protocol]} port",
        )
    return protocol


def spec_protocol(url: str | None, protocol: str | None) -> str:
    """What a spec's ``protocol`` field settles to: ``protocol`` when given, else the scheme of ``url`` or, with no
    ``url``, of ``$TRITONGEN_URL`` (the address :func:`default_url` would give), else gRPC. A scheme that
    contradicts a given protocol is refused, naming where it came from."""
    if url:
        return protocol_for_url(url, protocol or None)
    if not protocol:
        return protocol_for_url(os.environ.get(URL_ENV), None, f"${URL_ENV}")
    protocol = _check_protocol(protocol)
    own = f"TRITONGEN_{protocol.upper()}_URL"
    name = own if os.environ.get(own) else URL_ENV
    return protocol_for_url(os.environ.get(name), protocol, f"${name}")


def infer_from_arrays(
    url: str,
    model: str,
    inputs: Mapping[str, np.ndarray],
    protocol: str = "grpc",
    outputs: Sequence[str] | None = None,
    timeout_s: float = 60,
    headers: Mapping[str, str] | None = None,
    model_version: str = "",
) -> dict[str, np.ndarray]:
    """One inference request (to ``model_version``; empty: the version the server picks, its highest ready one);
    returns every output (or the named ``outputs``) as NumPy arrays.

    Arrays carry the batch dimension when the model batches. Strings (``str``/``bytes``/object arrays) go as
    BYTES; BYTES outputs come back as object arrays of ``bytes``.
    """
    protocol = _check_protocol(protocol)
    module = _module(protocol)
    url = _host_port(url)
    client = _connect(module, protocol, url, timeout_s)
    try:
        kwargs = {"client_timeout": timeout_s} if protocol == "grpc" else {}
        result = client.infer(
            model,
            _infer_inputs(module, inputs),
            model_version=model_version,
            outputs=_requested(module, outputs),
            headers=dict(headers or {}),
            **kwargs,
        )
        return _arrays(result, protocol, outputs)
    except Exception as e:  # noqa: BLE001 - every tritonclient failure becomes one clean error
        raise classify_error(e, url, protocol, model, timeout_s) from None
    finally:
        _close(client)


MAX_SEQUENCE_ID = 2**63 - 1  # Triton's correlation ID travels as an int64 parameter


def infer_sequence_from_chunks(
    url: str,
    model: str,
    chunks: Sequence[Mapping[str, np.ndarray]],
    sequence_id: int,
    protocol: str = "grpc",
    outputs: Sequence[str] | None = None,
    timeout_s: float = 60,
    headers: Mapping[str, str] | None = None,
    model_version: str = "",
) -> list[dict[str, np.ndarray]]:
    """One sequence for a stateful model (Triton's sequence batcher): every chunk in order with correlation ID
    ``sequence_id``, the first flagged as the sequence's start and the last as its end; one answer per chunk."""
    if not chunks:
        raise TritongenError("the sequence has no chunks", "pass at least one chunk of input")
    if not 1 <= sequence_id <= MAX_SEQUENCE_ID:
        raise TritongenError(
            f"correlation ID {sequence_id} is outside 1..{MAX_SEQUENCE_ID}",
            "use a positive --sequence-id (0 means none) that an int64 holds",
        )
    protocol = _check_protocol(protocol)
    module = _module(protocol)
    url = _host_port(url)
    client = _connect(module, protocol, url, timeout_s)
    answers = []
    try:
        kwargs = {"client_timeout": timeout_s} if protocol == "grpc" else {}
        for i, chunk in enumerate(chunks):
            result = client.infer(
                model,
                _infer_inputs(module, chunk),
                model_version=model_version,
                outputs=_requested(module, outputs),
                headers=dict(headers or {}),
                sequence_id=sequence_id,
                sequence_start=i == 0,
                sequence_end=i == len(chunks) - 1,
                **kwargs,
            )
            answers.append(_arrays(result, protocol, outputs))
        return answers
    except Exception as e:  # noqa: BLE001 - every tritonclient failure becomes one clean error
        raise classify_error(e, url, protocol, model, timeout_s) from None
    finally:
        _close(client)


def infer_sequences_concurrently(
    url: str,
    model: str,
    streams: Sequence[Sequence[Mapping[str, np.ndarray]]],
    first_sequence_id: int = 1,
    protocol: str = "grpc",
    timeout_s: float = 60,
) -> list[list[dict[str, np.ndarray]]]:
    """``streams`` as concurrent sequences (one thread each, correlation IDs from ``first_sequence_id``), so the
    sequence batcher can batch their chunks together; the answers per stream, per chunk."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, len(streams))) as pool:
        futures = [
            pool.submit(
                infer_sequence_from_chunks, url, model, chunks, first_sequence_id + i, protocol, None, timeout_s
            )
            for i, chunks in enumerate(streams)
        ]
        return [f.result() for f in futures]


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


def model_metadata(
    url: str,
    model: str,
    protocol: str = "grpc",
    timeout_s: float = 30,
    headers: Mapping[str, str] | None = None,
    version: str = "",
) -> dict[str, Any]:
    """The model's metadata and config in one mapping:
    ``{"name", "versions", "platform", "max_batch_size", "inputs": [{"name", "datatype", "shape", "optional"}],
    "outputs", "steps", "served"}`` (``served``: the config's batching and instances, a
    :class:`~tritongen.served_settings.ServedSettings`, or None).

    Shapes are lists of ints and include the batch dimension (-1) when the model batches.
    """
    protocol = _check_protocol(protocol)
    module = _module(protocol)
    url = _host_port(url)
    client = _connect(module, protocol, url, timeout_s)
    try:
        kwargs = {"as_json": True, "client_timeout": timeout_s} if protocol == "grpc" else {}
        meta = client.get_model_metadata(model, version, headers=dict(headers or {}), **kwargs)  # "": the default
        config = client.get_model_config(model, version, headers=dict(headers or {}), **kwargs)
    except Exception as e:  # noqa: BLE001
        raise classify_error(e, url, protocol, model, timeout_s) from None
    finally:
        _close(client)
    try:
        return _metadata_from_answers(meta, config, model)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        raise TritongenError(
            f"the server at {url} answered malformed metadata for model '{model}' ({type(e).__name__}: {str(e)[:80]})",
            "check that the URL points at a Triton Inference Server",
        ) from None


def _metadata_from_answers(meta: Any, config: Any, model: str) -> dict[str, Any]:
    """:func:`model_metadata`'s mapping from the server's two answers; a malformed answer raises on the way."""
    config = config.get("config", config)

    def text(value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"{ascii(value)[:40]} is not a string")
        return value

    def tensors(entries: Any) -> list[dict[str, Any]]:
        if not isinstance(entries, list):
            raise TypeError("the tensors are not a list")
        return [
            {
                "name": text(t["name"]),
                "datatype": text(t["datatype"]),
                "shape": [int(d) for d in t.get("shape", [])],
            }
            for t in entries
        ]

    optional = {t.get("name") for t in config.get("input") or [] if isinstance(t, dict) and t.get("optional")}
    name = text(meta.get("name", model))
    if name != model:  # the name picks the build's samples that perf and tune read: never another folder's
        raise ValueError(f"it names the model {ascii(name)[:60]}")
    return {
        "name": name,
        "versions": [str(v) for v in meta.get("versions", [])],
        "platform": text(meta.get("platform", "")),
        "max_batch_size": int(config.get("max_batch_size", 0)),
        "inputs": [dict(t, optional=t["name"] in optional) for t in tensors(meta.get("inputs") or [])],
        "outputs": tensors(meta.get("outputs") or []),
        # An ensemble's composing models, in step order (empty for a plain model).
        "steps": [str(step.get("model_name", "")) for step in config.get("ensemble_scheduling", {}).get("step", [])],
        "served": _served_settings(config),
    }


def _served_settings(config: Any) -> ServedSettings | None:
    """The batching and instances the server serves the model with (what perf records), None where its config
    answer does not say them as Triton writes them."""
    try:
        return served_settings_from_config(config)
    except ValueError:
        return None


def model_statistics(
    url: str, model: str, protocol: str = "grpc", timeout_s: float = 30, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
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
        if error_kind(e) == REJECTED:  # the model is the request's only argument: Triton says INVALID_ARGUMENT
            e = _NotFound(e)
        raise classify_error(e, url, protocol, model, timeout_s) from None
    finally:
        _close(client)
    try:
        return _statistics_from_answer(raw, model)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        raise TritongenError(
            f"the server at {url} answered malformed statistics for model '{model}' ({type(e).__name__}: "
            f"{ascii(str(e))[:80]})",
            "check that the URL points at a Triton Inference Server",
        ) from None


def _statistics_from_answer(raw: Any, model: str) -> dict[str, Any]:
    """:func:`model_statistics`'s mapping from the server's answer; a malformed answer raises on the way."""
    # gRPC's JSON renders int64 as strings and leaves out zero fields; HTTP gives ints.
    out: dict[str, Any] = {
        "model": model,
        "inference_count": 0,
        "execution_count": 0,
        "success_count": 0,
        "failure_count": 0,
        "success_ns": 0,
        "queue_ns": 0,
        "compute_input_ns": 0,
        "compute_infer_ns": 0,
        "compute_output_ns": 0,
        "batch_executions": {},
        "raw": raw,
    }
    for entry in raw.get("model_stats", []):  # every figure a count from 0 to MAX_COUNT (a negative one: malformed)
        out["inference_count"] += _count(entry.get("inference_count"))
        out["execution_count"] += _count(entry.get("execution_count"))
        stats = entry.get("inference_stats", {})
        out["success_count"] += _count(stats.get("success", {}).get("count"))
        out["failure_count"] += _count(stats.get("fail", {}).get("count"))
        for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
            out[f"{key}_ns"] += _count(stats.get(key, {}).get("ns"))
        for batch in entry.get("batch_stats", []):
            size = _count(batch.get("batch_size"))
            count = _count(batch.get("compute_infer", {}).get("count"))
            out["batch_executions"][size] = out["batch_executions"].get(size, 0) + count
    out["batch_executions"] = dict(sorted(out["batch_executions"].items()))
    return out


def statistics_after(
    url: str,
    model: str,
    inference_count: int,
    protocol: str = "grpc",
    timeout_s: float = 5,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """:func:`model_statistics` once ``inference_count`` is reached: the server updates its counters just
    after it sends a response, so a read right after the last answer can miss the last request."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = model_statistics(url, model, protocol, headers=headers)
        if stats["inference_count"] >= inference_count or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


class Triton:
    """One connection to a Triton server: health, metadata, repository index, load/unload, statistics.

    The one place in tritongen that talks to Triton's management APIs (inference goes through the functions
    above and :mod:`tritongen.perf.loadgen`). Every failure is a :class:`TritongenError` (see
    :func:`classify_error`). ``headers`` go with every request (the admin header of a restricted server;
    :func:`tritongen.server.admin.admin_headers_at` finds that of a server tritongen started on this machine).
    """

    def __init__(
        self, url: str, protocol: str = "http", timeout_s: float = 30.0, headers: Mapping[str, str] | None = None
    ) -> None:
        self.protocol = _check_protocol(protocol)
        self.url = _host_port(url)
        self.timeout_s = timeout_s
        self.headers = dict(headers or {})
        self._module = _module(self.protocol)
        self.client = _connect(self._module, self.protocol, self.url, timeout_s)

    def __enter__(self) -> Triton:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        _close(self.client)

    def _call(
        self,
        name: str,
        model: str,
        *args: Any,
        json_answer: bool = False,
        timeout_s: float | None = None,
        **kwargs: Any,
    ) -> Any:
        if self.protocol == "grpc":
            kwargs["client_timeout"] = timeout_s or self.timeout_s
            if json_answer:
                kwargs["as_json"] = True
        try:
            return getattr(self.client, name)(*args, headers=self.headers, **kwargs)
        except Exception as e:  # noqa: BLE001 - every tritonclient failure becomes one clean error
            raise classify_error(e, self.url, self.protocol, model, timeout_s or self.timeout_s) from None

    def live(self) -> bool:
        """Whether the server answers its liveness check (False when nothing answers)."""
        return self._health("is_server_live")

    def ready(self) -> bool:
        """Whether the server says it is ready (every model it was asked to load is loaded)."""
        return self._health("is_server_ready")

    def _health(self, name: str) -> bool:
        kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        try:
            return bool(getattr(self.client, name)(headers=self.headers, **kwargs))
        except Exception:  # noqa: BLE001 - no answer, or a refusal: not live (and never a classified error: no loop)
            return False

    def repository_index(self) -> list[dict[str, str]]:
        """Every model version the repository holds: ``[{"name", "version", "state", "reason"}]`` (a field the
        server gives as other than text or a number is empty)."""
        entries = _index_entries(self._call("get_model_repository_index", "", json_answer=True))
        if entries is None:
            raise self._not_triton("its repository index", "a list of models")
        return entries

    def _not_triton(self, what: str, expected: str) -> TritongenError:
        return TritongenError(
            f"the server at {self.url} answered {what} with something other than {expected}",
            "check that --url points at a Triton server",
        )

    def model_config(self, model: str) -> dict[str, Any]:
        """The config the server uses for ``model``, as JSON (``model_config.proto`` field names)."""
        answer = self._call("get_model_config", model, model, json_answer=True)
        return answer.get("config", answer)

    def load(
        self,
        model: str,
        config: str | Mapping[str, Any] | None = None,
        timeout_s: float = 300.0,
        files: Mapping[str, bytes] | None = None,
    ) -> None:
        """Load (or reload) ``model``, with ``config`` (JSON text or a mapping) in place of its config.pbtxt.

        ``files`` (``{"1/model.onnx": bytes}``, paths inside the model folder; needs ``config``) load the model
        from that content instead of the repository, under any name. Needs explicit model control: a server
        without it refuses with a :class:`TritongenError` that says so; a config the server rejects raises
        :class:`ModelLoadError` with Triton's reason.
        """
        text = json.dumps(config) if isinstance(config, Mapping) else config
        kwargs: dict[str, Any] = {"config": text} if text is not None else {}
        if files:
            kwargs["files"] = {f"file:{rel}": bytes(data) for rel, data in files.items()}
        # over HTTP the connection's timeout bounds a request: a load that may take longer gets a connection of its own
        own = _connect(self._module, "http", self.url, timeout_s) if self.protocol == "http" else None
        try:
            if own is not None:
                own.load_model(model, headers=self.headers, **kwargs)
            else:
                self.client.load_model(model, headers=self.headers, client_timeout=timeout_s, **kwargs)
        except Exception as e:  # noqa: BLE001
            self._raise_load_error(e, model, "load", timeout_s)
        finally:
            if own is not None:
                _close(own)

    def unload(self, model: str, timeout_s: float = 300.0) -> None:
        """Unload ``model`` (explicit model control only)."""
        self._unload(model, timeout_s, "unload")

    def require_model_control(self, timeout_s: float = 60.0) -> None:
        """Raise the refusal a load would meet where the server does not let models be loaded (no explicit model
        control; a restricted API without its header), before anything is loaded: unloads a name no model can have
        (verify refuses a model folder whose name starts with a dot), a no-op where loading is allowed."""
        self._unload(MODEL_CONTROL_PROBE, timeout_s, "load")

    def _unload(self, model: str, timeout_s: float, action: str) -> None:
        try:
            if self.protocol == "grpc":
                self.client.unload_model(model, headers=self.headers, client_timeout=timeout_s)
            else:
                self.client.unload_model(model, headers=self.headers)
        except Exception as e:  # noqa: BLE001
            # over HTTP the connection's own timeout bounded the request
            self._raise_load_error(e, model, action, timeout_s if self.protocol == "grpc" else None)

    def _raise_load_error(self, error: BaseException, model: str, action: str, timeout_s: float | None = None) -> None:
        kind = error_kind(error)
        if kind in (REJECTED, NOT_FOUND):
            raise ModelLoadError(_error_text(error)[0]) from None
        restricted = "restricted" in _error_text(error)[0]  # Triton's answer without the admin header: the same code
        if kind in (UNAVAILABLE, FORBIDDEN) and not restricted and self.live():
            # Triton's own words ("... not allowed if polling is enabled") are the same in mode none: not passed on
            raise TritongenError(
                f"the server at {self.url} does not allow to {action} models: it was not started with explicit "
                "model control",
                "start it with `tritongen serve <your repository> --model-control explicit` (tritonserver "
                "--model-control-mode=explicit --load-model='*'); on an address other than loopback, send the admin "
                "header that serve prints",
            ) from None
        raise classify_error(error, self.url, self.protocol, model, timeout_s or self.timeout_s) from None

    def statistics(self, model: str) -> dict[str, Any]:
        """:func:`model_statistics` over this connection's URL and protocol."""
        return model_statistics(self.url, model, self.protocol, self.timeout_s, self.headers)

    def ready_versions(self, model: str) -> list[int]:
        """The versions of ``model`` the server holds READY, ascending (unversioned requests get the last); a
        version that is not a model version number (:func:`~tritongen.layout.version_from_api`) is none."""
        found = [
            version_from_api(e["version"])
            for e in self.repository_index()
            if e["name"] == model and e["state"] == "READY"
        ]
        return sorted(v for v in found if v is not None)

    def version_statistics(self, model: str) -> dict[int, dict[str, int]]:
        """Triton's statistics per loaded version of ``model``: ``{version: {"success_count", "failure_count",
        "inference_count", "execution_count", "success_ns", "queue_ns", "compute_infer_ns"}}`` (cumulative)."""
        raw = self._call("get_inference_statistics", model, model, json_answer=True)
        entries = raw.get("model_stats", []) if isinstance(raw, dict) else None
        if not (isinstance(entries, list) and all(isinstance(e, dict) for e in entries)):
            raise self._not_triton(f"the statistics of model '{one_line(model)}'", "Triton's model_stats")
        out: dict[int, dict[str, int]] = {}
        try:
            for entry in entries:
                version = version_from_api(_index_field(entry.get("version")))
                if version is None:
                    continue
                stats = _mapping(entry.get("inference_stats"))
                out[version] = {
                    "success_count": _count(_mapping(stats.get("success")).get("count")),
                    "failure_count": _count(_mapping(stats.get("fail")).get("count")),
                    "inference_count": _count(entry.get("inference_count")),
                    "execution_count": _count(entry.get("execution_count")),
                    "success_ns": _count(_mapping(stats.get("success")).get("ns")),
                    "queue_ns": _count(_mapping(stats.get("queue")).get("ns")),
                    "compute_infer_ns": _count(_mapping(stats.get("compute_infer")).get("ns")),
                }
        except ValueError as exc:
            raise self._not_triton(f"the statistics of model '{one_line(model)}'", f"counts ({exc})") from None
        return dict(sorted(out.items()))

    def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], version: int | None = None, timeout_s: float | None = None
    ) -> dict[str, np.ndarray]:
        """One request to ``model`` (pinned to ``version`` when given, else the highest READY version): every
        output as NumPy arrays."""
        kwargs: dict[str, Any] = {"model_version": "" if version is None else str(int(version))}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = timeout_s or self.timeout_s
        try:
            result = self.client.infer(model, _infer_inputs(self._module, inputs), headers=self.headers, **kwargs)
        except Exception as e:  # noqa: BLE001
            raise classify_error(e, self.url, self.protocol, model, timeout_s or self.timeout_s) from None
        return _arrays(result, self.protocol, None)


MAX_INDEX_ENTRIES = 100_000  # model versions in one repository index
MAX_COUNT = 2**64 - 1  # Triton's statistics are uint64


def _index_entries(answer: Any) -> list[dict[str, str]] | None:
    """A repository index answer (HTTP's list, gRPC's ``{"models": [...]}``) as ``[{"name", "version", "state",
    "reason"}]``, each field bounded (:func:`_index_field`); None where it is not a list of at most
    :data:`MAX_INDEX_ENTRIES` objects."""
    entries = (answer.get("models", []) if isinstance(answer, dict) else answer) or []
    if not (
        isinstance(entries, list) and len(entries) <= MAX_INDEX_ENTRIES and all(isinstance(e, dict) for e in entries)
    ):
        return None
    return [{k: _index_field(e.get(k)) for k in ("name", "version", "state", "reason")} for e in entries]


def _index_field(value: Any) -> str:
    """A repository index field as text: a name, a version, a state, a reason; "" for anything else (a list, a
    dict: not what Triton sends), and at most :data:`MAX_ERROR_TEXT_CHARS` of it."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return ""
    return str(value)[:MAX_ERROR_TEXT_CHARS]


def _mapping(value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{type(value).__name__} where an object was expected")
    return value


def _count(value: Any) -> int:
    """A statistics count (an int, or its digits as text over HTTP); 0 where absent; ValueError otherwise."""
    if value is None:
        return 0
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= len(str(MAX_COUNT)):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ValueError(f"{one_line(repr(value))[:40]} is not a count")
    return value


class RequestTimedOut(TritongenError):
    """No answer within the timeout: the server may still be doing what was asked (a load goes on)."""


class ModelLoadError(TritongenError):
    """Triton refused to load a model (a config it rejects, a model that fails to start): ``message`` is why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, "see the server log for the model's load error")


def server_live(
    url: str, protocol: str = "http", timeout_s: float = 5.0, headers: Mapping[str, str] | None = None
) -> bool:
    """Whether a Triton server answers its liveness check at ``url`` (never raises for an absent server)."""
    try:
        with Triton(url, protocol, timeout_s, headers) as triton:
            return triton.live()
    except TritongenError:
        return False


MAX_METRICS_BYTES = 16 << 20  # Triton's metrics page for hundreds of models is a few MB
MAX_METRIC_SAMPLES = 200_000  # sample lines of the names asked for (a page of 2 million took 38 s and 1.3 GB)
MAX_METRIC_VALUE = 1e15  # a figure perf's results reader takes (counts, microseconds, bytes, ratios)


def http_get_bounded(address: str, path: str, timeout_s: float, max_bytes: int, whole: bool = True) -> bytes | None:
    """``GET http://address/path``: the body of a 200 answer, read within ``timeout_s`` for the whole exchange (a
    server sending its head a byte a second held a read for good: each read had its own timeout) and at most
    ``max_bytes`` (None past it where ``whole``, else the first ``max_bytes``); None for any other answer, a
    malformed one (http.client's bounds: 100 headers of 64 KiB) or none."""
    import http.client
    import socket

    hostport, _, base = address.partition("/")
    host, _, port = hostport.rpartition(":")
    path = f"/{base.strip('/')}{path}" if base.strip("/") else path
    found: list[bytes] = []

    def fetch() -> None:
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            if response.status != 200:
                return
            chunks, size = [], 0
            while size < max_bytes + 1 and (chunk := response.read1(min(1 << 16, max_bytes + 1 - size))):
                size += len(chunk)
                chunks.append(chunk)
            body = b"".join(chunks)
            if len(body) <= max_bytes or not whole:
                found.append(body[:max_bytes])
        except Exception:  # noqa: BLE001 -- any fault (a socket shut under it included): no page, not a traceback
            pass

    try:
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout_s)
    except (ValueError, http.client.HTTPException):
        return None
    worker = threading.Thread(target=fetch, name="tritongen-http-get", daemon=True)
    worker.start()
    worker.join(timeout_s)
    late = worker.is_alive()
    if late:  # out of time: its socket is shut, so its read ends now; what it read is not the answer
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        worker.join(1.0)
    if not worker.is_alive():  # closed only once its worker is done with it (a daemon thread ends with the process)
        conn.close()
    return found[0] if found and not late else None


def metrics_from_url(metrics_url: str, names: Sequence[str] | None = None, timeout_s: float = 5.0) -> dict[str, float]:
    """Triton's Prometheus endpoint (``host:port``, served at ``/metrics``): sample name -> value summed over its
    labels, only ``names`` when given. Empty when nothing answers (a server started without metrics) or the page is
    not one Triton serves (over :data:`MAX_METRICS_BYTES`, or :data:`MAX_METRIC_SAMPLES` samples)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        address = _host_port(metrics_url)
    except TritongenError:
        return {}
    body = http_get_bounded(address, "/metrics", timeout_s, MAX_METRICS_BYTES)
    if body is None:
        return {}
    lines = body.decode(errors="replace").splitlines()
    wanted = None if names is None else set(names)
    if wanted is not None:  # only the families asked for are parsed: a page's other lines cost nothing
        lines = [line for line in lines if _metric_name(line) in wanted]
    if sum(1 for line in lines if not line.startswith("#")) > MAX_METRIC_SAMPLES:
        return {}
    out: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families("\n".join(lines) + "\n"):
            for sample in family.samples:
                value = float(sample.value)
                # Triton's figures are counts, times, bytes and ratios: a NaN, an infinity or a negative value is
                # no figure of its (and would make a results.json its own reader refuses)
                if (wanted is None or sample.name in wanted) and math.isfinite(value) and value >= 0:
                    out[sample.name] = out.get(sample.name, 0.0) + value
    except ValueError:  # not Prometheus text: what was read so far stands
        pass
    return {k: v for k, v in out.items() if v <= MAX_METRIC_VALUE}  # two samples of 1e308 summed to infinity


def _metric_name(line: str) -> str:
    """The metric a line of Prometheus text is about: ``# HELP NAME ...``/``# TYPE NAME ...`` or ``NAME{...} v``."""
    if line.startswith("#"):
        parts = line.split(None, 3)
        return parts[2] if len(parts) > 2 and parts[1] in ("HELP", "TYPE") else ""
    return re.split(r"[{\s]", line, maxsplit=1)[0]


class _NotFound(Exception):
    """A failure that means "no such model" although the server's status says invalid argument."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(_error_text(error)[0])
        self.status = "404"


# --------------------------------------------------------------------------------------------- internals


def _check_protocol(protocol: str) -> str:
    """``protocol`` in lower case (``HTTP``, ``gRPC`` and `` http `` read ``http``, ``grpc``) if it is one."""
    p = protocol.strip().lower() if isinstance(protocol, str) else ""
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
        raise TritongenError(
            f"tritonclient's {protocol} client cannot be imported ({e})", f"pip install 'tritonclient[{protocol}]'"
        ) from None
    return module


def _host_port(url: str) -> str:
    return host_port_from_url(url)


def host_port_from_url(url: str, option: str = "--url") -> str:
    """``host:port`` (and an HTTP base path, if any) from a server URL (``grpc://`` or ``http://`` and a trailing
    slash dropped), checked: a host, and a port of ASCII digits from 1 to 65535 (a larger one would wrap around to
    another server's port); ``https://`` is refused (no TLS here: it would go in clear)."""
    text = (url or "").strip()
    if text.lower().startswith("https://"):
        raise TritongenError(
            f"{option} {ascii(text)[1:-1][:80]} asks for TLS, which tritongen's clients do not speak",
            f"pass {option} host:port of the server's plain HTTP/gRPC port (terminate TLS in front of it)",
        )
    text = _SCHEME.sub("", text, count=1).rstrip("/")
    if not text:
        raise TritongenError("no server URL given", f"pass {option} host:port (gRPC is usually 8001, HTTP 8000)")
    host, sep, port = text.split("/", 1)[0].rpartition(":")  # HTTP may carry a base path: host:port/triton
    if not sep or not host.strip("[]") or not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise TritongenError(
            f"{option} {ascii(text)[1:-1][:80]} is not host:port with a port from 1 to 65535",
            f"pass {option} as host:port, e.g. 127.0.0.1:8001",
        )
    base = text.split("/", 1)[1] if "/" in text else ""
    if base.split("/", 1)[0] == "v2":  # Triton's own API path: every request would go to /v2/v2/...
        address = text.split("/", 1)[0]
        raise TritongenError(
            f"{option} {ascii(text)[1:-1][:80]} names a path of Triton's API (/{base}), which tritongen adds itself",
            f"pass {option} {address} (a base path is only for a proxy that serves Triton under one)",
        )
    return text


# An HTTP answer larger than this is refused as it is read (gRPC's own limit on a message: tritonclient's channel
# takes at most 2 GiB); a server that streams without end was read into memory until the machine ran out.
MAX_ANSWER_BYTES = 2 << 30
_ANSWER_CHUNK_BYTES = 1 << 20


def _connect(module, protocol: str, url: str, timeout_s: float, concurrency: int = 1):
    try:
        if protocol == "grpc":
            return module.InferenceServerClient(url)
        return _bounded_http_client(module)(
            url,
            concurrency=concurrency,
            connection_timeout=timeout_s,
            network_timeout=timeout_s,
            answer_timeout_s=timeout_s,
        )
    except Exception as e:  # noqa: BLE001 - a malformed URL fails here
        raise TritongenError(
            f"cannot make a {protocol} client for '{url}' ({e})", "pass the URL as host:port, e.g. 127.0.0.1:8001"
        ) from None


@functools.lru_cache(maxsize=1)
def _bounded_http_client(module):
    """tritonclient's HTTP client whose every answer is read whole, within ``answer_timeout_s`` from the request
    (tritonclient's ``network_timeout`` bounds each read, so a server sending a byte a second held a request for
    hours) and :data:`MAX_ANSWER_BYTES`; a compressed answer, never asked for, is refused (tritonclient would
    inflate it, a bomb included)."""

    class BoundedClient(module.InferenceServerClient):
        # until tritonclient's __init__ ends (it sets False): one it never finished (Ctrl-C while it connected) has
        # nothing to close, where tritonclient's __del__ read a missing attribute (a traceback on stderr)
        _closed = True

        def __init__(self, *args: Any, answer_timeout_s: float, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._answer_timeout_s = answer_timeout_s
            pool = self._client_stub._connection_pool  # every connection it makes is guarded (_GuardedSocket)
            connect = pool._connect_socket
            pool._connect_socket = lambda sock, address: _GuardedSocket(connect(sock, address))

        def _get(self, *args: Any, **kwargs: Any) -> Any:
            return _whole_answer(super()._get, args, kwargs, self._answer_timeout_s)

        def _post(self, *args: Any, **kwargs: Any) -> Any:
            return _whole_answer(super()._post, args, kwargs, self._answer_timeout_s)

    return BoundedClient


MAX_ERROR_ANSWER_BYTES = 1 << 20  # the body of a refusal (HTTP 4xx/5xx): Triton's is {"error": "..."}
MAX_ERROR_TEXT_CHARS = 2000  # of a server's reason, in a message (a 50 MB one was printed whole)
MAX_HEAD_BYTES = 64 << 10  # one answer's status line and headers (Triton's: about 200 bytes)
MAX_INTERIM_ANSWERS = 8  # "100 Continue" and the like before the answer itself (Triton sends at most one)


class _GuardedSocket:
    """A geventhttpclient connection whose reads (1) yield to gevent's hub, so that :func:`_whole_answer`'s timeout
    fires even while data keeps coming (a server streaming "100 Continue" without end kept a read busy for good),
    and (2) watch each answer's head: over :data:`MAX_HEAD_BYTES` (headers without end took 2.8 GB in 37 s) or more
    than :data:`MAX_INTERIM_ANSWERS` interim answers, the connection is closed and the read refused. The rest is
    the socket's own."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._expect_head()

    def _expect_head(self) -> None:
        self._in_head, self._head_bytes, self._start, self._window, self._interim = True, 0, b"", b"", 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def sendall(self, data: Any, *args: Any) -> Any:
        self._expect_head()  # an answer follows each request
        return self._sock.sendall(data, *args)

    def sendfile(self, *args: Any, **kwargs: Any) -> Any:
        self._expect_head()
        return self._sock.sendfile(*args, **kwargs)

    def recv(self, size: int, *args: Any) -> bytes:
        import gevent

        gevent.sleep(0)
        data = self._sock.recv(size, *args)
        if self._in_head and data:
            self._watch(data)
        return data

    def _watch(self, data: bytes) -> None:
        at = 0
        while self._in_head and at < len(data):
            if len(self._start) < 12:  # "HTTP/1.1 100": the status of the head being read
                self._start += data[at : at + 12 - len(self._start)]
            joined = self._window + data[at:]
            end = joined.find(b"\r\n\r\n")
            taken = len(data) - at if end < 0 else end + 4 - len(self._window)
            self._head_bytes += taken
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(f"its answer's head is over {MAX_HEAD_BYTES >> 10} KiB (Triton's are a few hundred bytes)")
            if end < 0:
                self._window = joined[-3:]
                return
            at += taken
            if self._start[9:10] == b"1":  # an interim answer: the answer itself follows
                self._interim += 1
                if self._interim > MAX_INTERIM_ANSWERS:
                    self._refuse(f'it sent over {MAX_INTERIM_ANSWERS} interim answers ("100 Continue") in a row')
                self._head_bytes, self._start, self._window = 0, b"", b""
            else:
                self._in_head = False

    def _refuse(self, why: str) -> None:
        try:
            self._sock.close()  # never back into the pool with the rest of that stream unread
        finally:
            raise TritongenError(
                f"the server's answer is not an HTTP answer Triton sends: {why}",
                "check that --url points at a Triton server",
            )


def _whole_answer(send: Any, args: tuple, kwargs: dict, timeout_s: float) -> _ReadAnswer:
    import gevent

    with gevent.Timeout(timeout_s, TimeoutError(f"no whole answer within {timeout_s:g} s")):
        response = send(*args, **kwargs)
        if response.get("Content-Encoding"):
            raise TritongenError(
                f"the server sent a {str(response.get('Content-Encoding'))[:40]!r}-compressed answer that was not "
                "asked for",
                "check that --url points at a Triton server",
            )
        declared = str(response.get("Content-Length") or "").strip()
        if declared.isascii() and declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
            response.release()  # said up front: refused before any of it is read
            raise TritongenError(
                f"the server's answer is larger than {_size_text(MAX_ANSWER_BYTES)} (gRPC's limit on a message; it "
                f"declares {int(declared):,} bytes)",
                "ask for fewer rows per request, or check that --url points at a Triton server",
            )
        refusal = response.status_code >= 400  # Triton's refusals are a line of JSON
        chunks, size = [], 0
        while chunk := response.read(_ANSWER_CHUNK_BYTES):
            size += len(chunk)
            if refusal and size > MAX_ERROR_ANSWER_BYTES:
                response.release()
                raise TritongenError(
                    f"the server refused the request (HTTP {response.status_code}) with an answer over "
                    f"{_size_text(MAX_ERROR_ANSWER_BYTES)} (Triton's refusals are a line)",
                    "check that --url points at a Triton server",
                )
            if size > MAX_ANSWER_BYTES:
                response.release()
                raise TritongenError(
                    f"the server's answer is larger than {_size_text(MAX_ANSWER_BYTES)} (gRPC's limit on a message)",
                    "ask for fewer rows per request, or check that --url points at a Triton server",
                )
            chunks.append(chunk)
    return _ReadAnswer(response, b"".join(chunks))


def _size_text(size: int) -> str:
    return f"{size >> 30} GiB" if size >= 1 << 30 else f"{size >> 20} MiB"


class _ReadAnswer:
    """A geventhttpclient response whose body was read whole: what tritonclient reads of it (``status_code``,
    ``get``, ``read``)."""

    def __init__(self, response: Any, body: bytes) -> None:
        self._response = response
        self._body = body
        self._at = 0

    @property
    def status_code(self) -> int:
        return self._response.status_code

    def get(self, key: str, default: Any = None) -> Any:
        return self._response.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._response[key]

    def read(self, length: int | None = None) -> bytes:
        end = len(self._body) if length is None else min(len(self._body), self._at + max(0, int(length)))
        data, self._at = self._body[self._at : end], end
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)


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
                client.async_infer(
                    model,
                    inputs,
                    callback=functools.partial(finished, i),
                    outputs=_requested(module, outputs),
                    client_timeout=timeout_s,
                    headers=dict(headers or {}),
                )
            except Exception as e:  # noqa: BLE001
                finished(i, None, e)
        # Each request has its own deadline, so callbacks do come; this guard only bounds a stuck client.
        if not done.wait(timeout=timeout_s * (math.ceil(len(prepared) / concurrency) + 2)):
            raise TritongenError(
                f"{len(prepared)} concurrent requests to '{model}' at {url} did not finish",
                "raise timeout_s or lower the concurrency",
            )
        for error in errors:
            if error is not None:
                raise classify_error(error, url, "grpc", model, timeout_s)
        return [_arrays(r, "grpc", outputs) for r in results]
    finally:
        _close(client)


def _http_concurrently(module, url, model, prepared, concurrency, timeout_s, outputs, headers):
    client = _connect(module, "http", url, timeout_s, concurrency=concurrency)
    try:
        try:
            handles = [
                client.async_infer(model, inputs, outputs=_requested(module, outputs), headers=dict(headers or {}))
                for inputs in prepared
            ]
            return [_arrays(h.get_result(timeout=timeout_s), "http", outputs) for h in handles]
        except TritongenError:
            raise
        except Exception as e:  # noqa: BLE001
            raise classify_error(e, url, "http", model, timeout_s) from None
    finally:
        _close(client)


# What went wrong, from the gRPC status code or the HTTP status (never from the message text).
NO_SERVER, TIMEOUT, NOT_FOUND, FORBIDDEN, UNAVAILABLE, REJECTED = (
    "no_server",
    "timeout",
    "not_found",
    "forbidden",
    "unavailable",
    "rejected",
)
_GRPC_KINDS = {
    "DEADLINE_EXCEEDED": TIMEOUT,
    "NOT_FOUND": NOT_FOUND,
    "PERMISSION_DENIED": FORBIDDEN,
    "UNAUTHENTICATED": FORBIDDEN,
    "UNAVAILABLE": UNAVAILABLE,
}
_HTTP_KINDS = {403: FORBIDDEN, 401: FORBIDDEN, 404: NOT_FOUND, 408: TIMEOUT, 503: UNAVAILABLE, 504: TIMEOUT}


def error_kind(error: BaseException) -> str:
    """One of :data:`NO_SERVER`, :data:`TIMEOUT`, :data:`NOT_FOUND`, :data:`FORBIDDEN`, :data:`UNAVAILABLE`,
    :data:`REJECTED` for a tritonclient or network failure.

    tritonclient reports gRPC failures with ``status() == "StatusCode.<NAME>"`` and HTTP ones with the response's
    status code; a failure below that (connection refused, socket timeout) is an :class:`OSError`. gRPC's
    ``UNAVAILABLE`` means either no server (the channel never connected) or a server that refuses the request
    (Triton 2.51 answers a restricted protocol, or load/unload without explicit model control, with it):
    :func:`classify_error` asks the server whether it is live to tell them apart.
    """
    if isinstance(error, TimeoutError) or "timeout" in type(error).__name__.lower():
        return TIMEOUT
    if isinstance(error, OSError):
        return NO_SERVER
    _, status = _error_text(error)
    if status.startswith("StatusCode."):
        return _GRPC_KINDS.get(status.removeprefix("StatusCode."), REJECTED)
    if status.isascii() and status.isdigit():
        return _HTTP_KINDS.get(int(status), REJECTED)
    return REJECTED


def served_model_names(url: str, protocol: str, timeout_s: float) -> list[str]:
    """The model names the server's repository index holds (for a did-you-mean), or [] when it does not answer.
    Asked with tritonclient itself: a failure here is never classified (no loop back into :func:`classify_error`)."""
    try:
        client = _connect(_module(protocol), protocol, _host_port(url), timeout_s)
        try:
            kwargs: dict[str, Any] = {"client_timeout": timeout_s, "as_json": True} if protocol == "grpc" else {}
            answer = client.get_model_repository_index(**kwargs)
        finally:
            _close(client)
    except Exception:  # noqa: BLE001 -- no answer, no suggestion
        return []
    return sorted({e["name"] for e in _index_entries(answer) or () if e["name"]})


def classify_error(error: BaseException, url: str, protocol: str, model: str, timeout_s: float) -> TritongenError:
    """Turn a tritonclient/network failure into one :class:`TritongenError`: no server, timeout, unknown
    model, refused (restricted API or model control), or a rejected request (with the server's reason)."""
    if isinstance(error, TritongenError):
        return error
    message, _ = _error_text(error)
    kind = error_kind(error)
    if kind == UNAVAILABLE and (protocol == "grpc" and not server_live(url, protocol, timeout_s=min(timeout_s, 5))):
        kind = NO_SERVER
    port_hint = "gRPC is usually port 8001, HTTP 8000"
    # a gRPC answer comes from a gRPC server; an HTTP one, or none, may come from the metrics port
    if kind != TIMEOUT and (protocol == "http" or kind == NO_SERVER) and is_metrics_port(url, min(timeout_s, 2)):
        host = url.split("://", 1)[-1].split("/", 1)[0].rpartition(":")[0] or "localhost"
        return TritongenError(
            f"{url} is Triton's metrics port: it serves Prometheus metrics, not inference requests",
            f"point --url at the server's gRPC port (--url {host}:PORT) or its HTTP one (--url http://{host}:PORT): "
            "Triton's defaults are 8001 and 8000, and tritongen serve prints all three",
        )
    if kind == TIMEOUT:
        return RequestTimedOut(
            f"request to model '{model}' at {url} ({protocol}) timed out after {timeout_s:g} s",
            "raise the timeout, or check that the server is not overloaded (its log says more)",
        )
    # a version built but never loaded: "version 1 is not found"; one loaded once and unloaded: "not at ready state"
    unready = re.search(r"version (\d+) is not (?:at ready state|found)", message)
    if unready and kind in (NOT_FOUND, UNAVAILABLE, FORBIDDEN, REJECTED):
        version = unready.group(1)
        loaded = _loaded_versions(url, protocol, model, min(timeout_s, 5))
        now = f" (loaded: {', '.join(loaded)})" if loaded else ""
        return TritongenError(
            f"version {version} of model '{model}' is not loaded on the server at {url}{now}",
            f"bring a built version to traffic with tritongen rollout REPO {model} --to-version {version} (through "
            "the release gate), or pass --model-version with a loaded one",
        )
    if kind == NOT_FOUND:
        fix = (
            "check the model name (tritongen serve lists the models it loaded), or see the server log for why it did "
            "not load"
        )
        return TritongenError(
            f"the server at {url} has no model '{model}' ready ({message})",
            with_suggestion(model, served_model_names(url, protocol, min(timeout_s, 5)), fix),
        )
    if kind in (FORBIDDEN, UNAVAILABLE):
        return TritongenError(
            f"the server at {url} refused the request: {message}",
            "send the admin header printed by tritongen serve, or call it from the server's own machine; "
            "loading and unloading models needs explicit model control",
        )
    not_http = protocol == "http" and "Expected HTTP/" in message  # an HTTP request to a gRPC port
    if kind == NO_SERVER or not_http:
        other = "http" if protocol == "grpc" else "grpc"
        if server_live(url, other, timeout_s=min(timeout_s, 2)):  # the other protocol's port (8000 for gRPC)
            # each fix names the URL and the protocol together: it works whatever --url/--protocol the call had
            # (an http:// URL with --protocol grpc is refused, see protocol_for_url); gRPC has no base path
            address = url if other == "http" else url.split("/", 1)[0]
            shown = {"grpc": "gRPC", "http": "HTTP"}
            return TritongenError(
                f"no Triton server answers at {url} over {protocol}, but one answers there over {other}",
                f"pass --url {other}://{address} without --protocol (or --url {address} --protocol {other}), "
                f"or keep {shown[protocol]} and point --url at the server's {shown[protocol]} port ({port_hint})",
            )
    if kind == NO_SERVER:
        return TritongenError(
            f"no Triton server answers at {url} over {protocol} ({message})",
            f"start one with `tritongen serve <repository>`, or pass the right --url and --protocol ({port_hint})",
        )
    return TritongenError(
        f"the server at {url} rejected the request to model '{model}': {message}",
        "check the input names, data types and shapes against the "
        f"model's (GET {_metadata_address(url, protocol, model)} "
        "lists them)",
    )


def _loaded_versions(url: str, protocol: str, model: str, timeout_s: float) -> list[str]:
    """The versions of ``model`` the server has loaded (its metadata answer); empty where it does not say."""
    try:
        versions = model_metadata(url, model, protocol=protocol, timeout_s=timeout_s).get("versions", [])
    except TritongenError:
        return []
    return [one_line(str(v))[:20] for v in versions[:10]] if isinstance(versions, list) else []


def is_metrics_port(url: str, timeout_s: float = 2.0) -> bool:
    """Whether ``url`` is Triton's metrics port: it answers ``GET /metrics`` with Prometheus text (``# HELP nv_``:
    the HTTP port says 404 there, gRPC's no HTTP/1.1 at all) and every other path, ``/v2/health/live`` included, with
    an empty 200 (which tritonclient's HTTP liveness check takes for a live server)."""
    try:
        address = _host_port(url).split("/", 1)[0]
    except TritongenError:
        return False
    head = http_get_bounded(address, "/metrics", timeout_s, 4096, whole=False)  # gRPC's port: no HTTP/1.1, None
    return head is not None and (head.startswith(b"# HELP nv_") or head.startswith(b"# TYPE nv_"))


def _metadata_address(url: str, protocol: str, model: str) -> str:
    """Where the model's metadata is: the URL itself over HTTP; beside gRPC on its default port 8001, Triton's
    default HTTP port 8000; beside gRPC elsewhere, the server's HTTP port, which this URL does not tell."""
    host = url.split("://", 1)[-1].rstrip("/")
    if protocol == "http":
        return f"http://{host}/v2/models/{model}"
    name, _, port = host.rpartition(":")
    if port == "8001" and name:
        return f"http://{name}:8000/v2/models/{model}"
    return f"/v2/models/{model} on the server's HTTP port"


def _error_text(error: BaseException) -> tuple[str, str]:
    message = getattr(error, "message", None)
    status = getattr(error, "status", None)
    message = message() if callable(message) else message
    status = status() if callable(status) else status
    text = (str(message or error) or type(error).__name__).strip()
    if len(text) > MAX_ERROR_TEXT_CHARS:
        text = f"{text[:MAX_ERROR_TEXT_CHARS]}... ({len(text):,} characters)"
    return text, str(status or "")[:40]
