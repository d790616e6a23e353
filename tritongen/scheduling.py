"""The rest of Triton's scheduling: the dynamic batcher's priority levels and queue policies, and the instance
group's rate limiter, from flags or the YAML spec.

- ``--priority-levels N`` (Triton: 1 is the highest priority) and ``--default-priority L`` (the level of requests
  that ask for none; default: N, the lowest, so requests that ask for a priority overtake those that do not);
- ``--queue-policy [LEVEL:]timeout_us=T,action=reject|delay,allow_override=true|false,max_size=S`` (repeatable):
  without ``LEVEL`` the default queue policy, with it the policy of that priority level. A request queued longer
  than ``timeout_us`` (0: never) is rejected, or with ``delay`` moved behind those still in time;
  ``allow_override`` lets a request set its own timeout; ``max_size`` bounds the queue (0: unbounded; further
  requests are rejected);
- ``--rate-limiter RESOURCE:COUNT[:global]`` (repeatable) and ``--rate-limiter-priority P``: what one execution
  of an instance takes from the resources the server is given (``tritonserver --rate-limit=execution_count
  --rate-limit-resource=RESOURCE:COUNT``), and the instances' weight when several wait (2 gets half the chances
  of 1). Without ``--rate-limit=execution_count`` Triton ignores the rate limiter.

YAML spec keys: ``priority_levels``, ``default_priority``, ``queue_policies`` (a list of mappings with the keys
above and an optional ``priority``), ``rate_limiter`` (a list of ``{name, count, global}``) and
``rate_limiter_priority``.

Values Triton would refuse to load (a default level outside ``[1, levels]``, a per-level policy beyond the levels)
and values it would silently ignore (a per-level policy or a default level without priority levels, two policies
for one level, a resource listed twice) are refused here, one clean error each.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import TritongenError
from .names import with_suggestion

# Instances of one group (build's --instances, and what validate accepts): Triton sets no bound, but each is a
# thread with its own memory (a process for the Python backend); measured, a count of 2147483647 forked 133 stubs
# and took 8 GB in 15 s before it was stopped
MAX_INSTANCE_COUNT = 256

ACTIONS = ("REJECT", "DELAY")
UINT32_MAX = 2**32 - 1
MAX_TIMEOUT_US = 2**63 - 1  # uint64 in the protobuf; an int64 keeps the text and JSON forms exact
POLICY_KEYS = ("timeout_us", "action", "allow_override", "max_size")
RESOURCE_KEYS = ("name", "count", "global")
_RESOURCE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_POLICY_FIX = "write it as [LEVEL:]timeout_us=5000,action=reject,allow_override=false,max_size=64"
_RESOURCE_FIX = "write it as RESOURCE:COUNT or RESOURCE:COUNT:global, e.g. R1:2"


@dataclass(frozen=True)
class QueuePolicy:
    """Triton's ``ModelQueuePolicy``; ``priority`` 0 is the default policy, else the level it applies to."""

    priority: int = 0
    timeout_us: int = 0
    action: str = "REJECT"
    allow_override: bool = False
    max_size: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "priority": self.priority,
            "timeout_us": self.timeout_us,
            "action": self.action,
            "allow_override": self.allow_override,
            "max_size": self.max_size,
        }

    @property
    def text(self) -> str:
        level = f"{self.priority}:" if self.priority else ""
        return (
            f"{level}timeout_us={self.timeout_us},action={self.action.lower()},"
            f"allow_override={str(self.allow_override).lower()},max_size={self.max_size}"
        )


@dataclass(frozen=True)
class RateLimiterResource:
    """One ``ModelRateLimiter.Resource``: ``count`` units of ``name`` per execution (``is_global``: shared by every
    device, else per device)."""

    name: str
    count: int
    is_global: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "count": self.count, "global": self.is_global}


def _bool(value: str, where: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise TritongenError(f"{where}: '{value}' is not true or false", _POLICY_FIX)


def _int(value: Any, where: str, fix: str, hi: int = UINT32_MAX) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, int) or isinstance(value, bool) else value
    except ValueError:
        raise TritongenError(f"{where}: '{value}' is not an integer", fix) from None
    if isinstance(value, bool) or not 0 <= number <= hi:
        raise TritongenError(f"{where}: {value} is not an integer from 0 to {hi}", fix)
    return number


def _policy(priority: int, fields: Mapping[str, Any], where: str) -> QueuePolicy:
    unknown = sorted(set(fields) - set(POLICY_KEYS))
    if unknown:
        raise TritongenError(
            f"{where}: unknown key '{unknown[0]}'",
            with_suggestion(unknown[0], POLICY_KEYS, f"use {', '.join(POLICY_KEYS)}"),
        )
    action = str(fields.get("action", "reject")).strip().upper()
    if action not in ACTIONS:
        raise TritongenError(f"{where}: action '{fields['action']}' is not reject or delay", _POLICY_FIX)
    override = fields.get("allow_override", False)
    return QueuePolicy(
        priority=priority,
        timeout_us=_int(fields.get("timeout_us", 0), f"{where} timeout_us", _POLICY_FIX, MAX_TIMEOUT_US),
        action=action,
        allow_override=override if isinstance(override, bool) else _bool(str(override), f"{where} allow_override"),
        max_size=_int(fields.get("max_size", 0), f"{where} max_size", _POLICY_FIX),
    )


def queue_policy_from_arg(arg: str) -> QueuePolicy:
    """Parse ``[LEVEL:]key=value,...`` (keys: :data:`POLICY_KEYS`)."""
    where = f"--queue-policy '{arg}'"
    level_text, _, body = arg.partition(":") if ":" in arg.split("=", 1)[0] else ("", "", arg)
    priority = _int(level_text, f"{where} level", _POLICY_FIX) if level_text else 0
    if level_text and priority == 0:
        raise TritongenError(
            f"{where}: level 0 is not a priority level", "levels count from 1; omit LEVEL: for the default policy"
        )
    fields: dict[str, str] = {}
    for part in (p for p in body.split(",") if p.strip()):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise TritongenError(f"{where}: '{part}' is not key=value", _POLICY_FIX)
        if key.strip() in fields:
            raise TritongenError(f"{where}: '{key.strip()}' is given twice", "give each key once")
        fields[key.strip()] = value.strip()
    if not fields:
        raise TritongenError(f"{where} sets nothing", _POLICY_FIX)
    return _policy(priority, fields, where)


def queue_policy_from_dict(entry: Mapping[str, Any], where: str) -> QueuePolicy:
    """One ``queue_policies`` entry of the YAML spec (types already checked by :mod:`tritongen.spec_file`)."""
    fields = {k: v for k, v in entry.items() if k != "priority"}
    return _policy(int(entry.get("priority", 0)), fields, where)


def _resource(name: str, count: Any, is_global: bool, where: str) -> RateLimiterResource:
    if not _RESOURCE_NAME.fullmatch(name):
        raise TritongenError(
            f"{where}: resource name '{name[:80]}' is not a plain name",
            "use letters, digits, '_', '-' and '.' (at most 128), as --rate-limit-resource takes it",
        )
    return RateLimiterResource(name, _int(count, f"{where} count", _RESOURCE_FIX), is_global)


def rate_limiter_resource_from_arg(arg: str) -> RateLimiterResource:
    """Parse ``RESOURCE:COUNT[:global]``."""
    parts = arg.split(":")
    where = f"--rate-limiter '{arg}'"
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2].strip().lower() != "global"):
        raise TritongenError(f"{where} is not RESOURCE:COUNT[:global]", _RESOURCE_FIX)
    return _resource(parts[0], parts[1], len(parts) == 3, where)


def rate_limiter_resource_from_dict(entry: Mapping[str, Any], where: str) -> RateLimiterResource:
    return _resource(str(entry["name"]), entry["count"], bool(entry.get("global", False)), where)


def check_scheduling(
    *,
    batched: bool,
    priority_levels: int,
    default_priority: int,
    queue_policies: Iterable[QueuePolicy],
    rate_limiter: Iterable[RateLimiterResource],
    rate_limiter_priority: int,
) -> int:
    """Refuse what Triton would refuse or silently ignore; return the default priority level to write (0: none)."""
    policies = tuple(queue_policies)
    levels = _int(priority_levels, "--priority-levels", "give the number of priority levels, e.g. 2")
    _int(rate_limiter_priority, "--rate-limiter-priority", "give a weight from 1 (0 counts as 1)")
    if (levels or policies) and not batched:
        raise TritongenError(
            "priority levels and queue policies belong to the dynamic batcher, which --max-batch-size 0 turns off",
            "give --max-batch-size 1 or more, or drop --priority-levels/--queue-policy",
        )
    if default_priority and not levels:
        raise TritongenError(
            f"--default-priority {default_priority} without --priority-levels", "give --priority-levels N as well"
        )
    chosen = default_priority or levels
    if levels and not 1 <= chosen <= levels:
        raise TritongenError(
            f"--default-priority {chosen} is outside the priority levels [1, {levels}]",
            f"give a level from 1 (highest) to {levels}",
        )
    seen: set[int] = set()
    for p in policies:
        if p.priority in seen:
            which = f"priority level {p.priority}" if p.priority else "the default queue"
            raise TritongenError(f"two queue policies for {which}", "give one --queue-policy per level")
        seen.add(p.priority)
        if p.priority and not levels:
            raise TritongenError(
                f"--queue-policy {p.text} is for priority level {p.priority}, but there are no priority levels "
                "(Triton would ignore it)",
                "give --priority-levels N as well, or drop the LEVEL: prefix for the default policy",
            )
        if p.priority > levels:
            raise TritongenError(
                f"--queue-policy {p.text} is for priority level {p.priority}, beyond the {levels} levels",
                f"use a level from 1 to {levels}",
            )
    names = [r.name for r in rate_limiter]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TritongenError(f"rate limiter resource '{twice[0]}' is listed twice", "list each resource once")
    return chosen


def dynamic_batching_entries(levels: int, default_level: int, policies: Iterable[QueuePolicy]) -> dict[str, Any]:
    """Template values for the dynamic batcher's priority and queue fields."""
    by_level = {p.priority: p for p in policies}

    def entry(p: QueuePolicy) -> dict[str, Any]:
        return {
            "timeout_action": p.action,
            "default_timeout_microseconds": p.timeout_us,
            "allow_timeout_override": "true" if p.allow_override else "false",
            "max_queue_size": p.max_size,
        }

    return {
        "priority_levels": levels,
        "default_priority_level": default_level if levels else 0,
        "default_queue_policy": entry(by_level[0]) if 0 in by_level else None,
        "priority_queue_policy": [(level, entry(p)) for level, p in sorted(by_level.items()) if level],
    }


def rate_limiter_entry(resources: Iterable[RateLimiterResource], priority: int) -> dict[str, Any] | None:
    """Template values for an instance group's ``rate_limiter`` (None: none)."""
    listed = [{"name": r.name, "count": r.count, "global": "true" if r.is_global else "false"} for r in resources]
    if not listed and not priority:
        return None
    return {"resources": listed, "priority": priority}
