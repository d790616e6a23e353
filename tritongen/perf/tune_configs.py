"""tune's configs: a candidate from and into a ModelConfig, the search space, and loading what the server must
serve (config overrides that keep the served version policy)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..client import Triton
from ..errors import TritongenError
from ..layout import CONFIG_NAME
from ..progress import Progress
from ..scheduling import MAX_INSTANCE_COUNT
from .tune_spec import Candidate, TuneSpec

if TYPE_CHECKING:
    from ..server.admin import LocalServer


def checked_max_batch(model_dir: Path) -> int | None:
    """The largest batch the newest build's parity gate compared with PyTorch (its manifest's ``batch N`` cases);
    None where no manifest says."""
    from ..layout import version_numbers
    from ..manifest import read_manifest

    versions = version_numbers(model_dir)
    try:
        cases = read_manifest(model_dir, versions[-1]).details["samples"]["cases"] if versions else []
    except (TritongenError, KeyError, TypeError):
        return None
    sizes = [int(c.split()[1]) for c in cases if isinstance(c, str) and re.fullmatch(r"batch \d{1,9}", c)]
    return max(sizes) if sizes else None


def candidate_from_config(config) -> Candidate:
    instances = sum(g.count or 1 for g in config.instance_group) or 1
    db = config.dynamic_batching
    return Candidate(
        instances, int(db.max_queue_delay_microseconds), int(config.max_batch_size), tuple(db.preferred_batch_size)
    )


def config_from_candidate(base, candidate: Candidate):
    """A copy of ``base`` (a ModelConfig) with the candidate's knobs set."""
    config = type(base)()
    config.CopyFrom(base)
    if not config.instance_group:
        config.instance_group.add(count=candidate.instances)
    else:
        del config.instance_group[1:]
        config.instance_group[0].count = candidate.instances
    if config.max_batch_size > 0:
        config.max_batch_size = candidate.max_batch_size
        config.dynamic_batching.max_queue_delay_microseconds = candidate.max_queue_delay_us
        del config.dynamic_batching.preferred_batch_size[:]
        config.dynamic_batching.preferred_batch_size.extend(candidate.preferred)
        for warmup in config.model_warmup:
            warmup.batch_size = min(max(1, warmup.batch_size), candidate.max_batch_size)
    return config


def search_space(spec: TuneSpec, base: Candidate, kind_cpu: bool) -> dict[str, list]:
    cores = os.cpu_count() or 4
    max_instances = spec.max_instances if spec.max_instances is not None else (cores if kind_cpu else 4)
    top = min(max(max_instances, base.instances), MAX_INSTANCE_COUNT)  # what validate takes (a machine's cores may not)
    space: dict[str, list] = {"instances": list(range(1, top + 1))}
    if base.max_batch_size > 0:
        space["max_queue_delay_us"] = sorted(set(spec.queue_delays_us) | {base.max_queue_delay_us})
        sizes = spec.max_batch_sizes or tuple(
            b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b <= max(2 * base.max_batch_size, 1)
        )
        space["max_batch_size"] = sorted(set(sizes) | {base.max_batch_size})
        # "none" and "max" are one served config: Triton fills an empty preferred_batch_size with max_batch_size
        space["preferred"] = ["none", "half+max"]
    return space


def preferred_sizes(kind: str, max_batch_size: int) -> tuple[int, ...]:
    if kind == "max":
        return (max_batch_size,)
    if kind == "half+max":
        return tuple(sorted({b for b in (max_batch_size // 2, max_batch_size) if b > 0}))
    return ()


def preferred_kind(c: Candidate) -> str:
    """``none`` for no preferred sizes and for the max alone (what Triton serves for none), else ``half+max``."""
    return "none" if served_form(c).preferred == (c.max_batch_size,) else "half+max"


def served_form(c: Candidate) -> Candidate:
    """``c`` as Triton serves it: its NormalizeModelConfig fills an empty preferred_batch_size of a batching model
    with max_batch_size, so "none" and "the max" are one config (measured once)."""
    if c.max_batch_size > 0 and not c.preferred:
        return replace(c, preferred=(c.max_batch_size,))
    return c


def neighbour(c: Candidate, dim: str, value) -> Candidate:
    if dim == "preferred":
        return replace(c, preferred=preferred_sizes(value, c.max_batch_size))
    if dim == "max_batch_size":
        return replace(c, max_batch_size=value, preferred=preferred_sizes(preferred_kind(c), value))
    return replace(c, **{dim: value})


def check_signed_config(server: LocalServer, model_dir: Path, text: str) -> None:
    """Into a server that loads only signed files (``serve --public-key`` on this machine, its key found by the
    port), tune loads variations of the model's config: the config they start from must be the signed one, so
    that they differ from it only in what tune searches."""
    import hashlib

    address = server.address
    signed = server.signed_digests(model_dir.parent)
    if signed is None:
        return
    if signed.digests.get(f"{model_dir.name}/{CONFIG_NAME}") != hashlib.sha256(text.encode()).hexdigest():
        raise TritongenError(
            f"{model_dir / CONFIG_NAME} is not the one the repository's signature lists, and the server at {address} "
            "loads only signed files (serve --public-key): tune would load configs made from an unsigned one",
            f"restore the signed config, or sign the repository again (tritongen sign {model_dir.parent} "
            "--private-key KEY); then tune",
        )


@dataclass
class Serving:
    """The config the server must serve when tune ends (``config``, a ModelConfig) and how to name it."""

    config: Any
    name: str


def served_policy(server: Triton, model: str) -> Any:
    """The version policy of the config the server serves ``model`` with (JSON), checked as Triton's message."""
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    policy = server.model_config(model).get("version_policy")
    if policy is None:
        return None
    try:
        json_format.ParseDict(policy, model_config_pb2.ModelVersionPolicy())
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as e:
        raise TritongenError(
            f"the server's config of model '{model}' holds a version policy that is none ({ascii(str(e))[:80]})",
            "check that the URL points at a Triton Inference Server",
        ) from None
    return policy


def override_json(config: Any, versions: Any = None) -> str:
    """``config`` as the JSON of a load's config override, with ``versions`` (a version policy as JSON) in place of
    its own policy where given."""
    from google.protobuf import json_format

    if not versions:
        return json_format.MessageToJson(config)
    kept = type(config)()
    kept.CopyFrom(config)
    kept.ClearField("version_policy")
    json_format.ParseDict(versions, kept.version_policy)
    return json_format.MessageToJson(kept)


def serve_after_stop(server: Triton, model: str, serving: Serving, progress: Progress, versions: Any = None) -> None:
    """Ctrl-C, SIGTERM (the CLI takes it as Ctrl-C), a failed measurement or write: the server is put back on what
    config.pbtxt says now before the error goes on, and the user is told whether that worked."""
    try:
        progress(f"tune stopped: {serve_config(server, model, serving, versions)}")
    except TritongenError as failed:
        progress(f"tune stopped: {failed.problem}; {failed.fix}")


def serve_config(server: Triton, model: str, serving: Serving, versions: Any = None) -> str:
    """Load ``serving.config`` into the server with a config override (what config.pbtxt says now, serving
    ``versions``, the version policy the server had), and say so in one sentence. Raises :class:`TritongenError`
    where the server refuses or does not answer."""
    label = candidate_from_config(serving.config).label()
    try:
        server.load(model, override_json(serving.config, versions))
    except TritongenError as failed:
        raise TritongenError(
            f"the server could not load {model} with {serving.name} again ({failed.problem}): it may still serve "
            "the last config tune measured",
            "restart the server, or run tune again once it answers",
        ) from None
    return f"the server now serves {model} with {serving.name} ({label})"
