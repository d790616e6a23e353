"""``tritongen tune``: find the config that serves the most requests per second under a p99 bound.

Works on a running server started with explicit model control: every candidate config is loaded through the
model-repository API with a config override (nothing on disk changes while searching), measured with the built-in
engine or perf_analyzer. However tune ends (a winner written, a dry run, no winner, an error, Ctrl-C), the server
is then loaded with what config.pbtxt says, again with a config override (a plain load after an override does not
read config.pbtxt again when no file changed, and a ``tritongen serve`` server reads a checked copy, which tune does
not write). A winner that is the starting config is not written: config.pbtxt stays as it was.

The search aims below the bound: a point counts only when its p99 is within ``max_p99_ms`` less ``p99_margin_pct``
(the target), so the written figure still holds when it is measured again on a noisier minute. It measures the
repository's config, one instance with the largest max batch size and no preferred sizes, and the most instances
with the same max batch size and no preferred sizes (the two regions where Model Analyzer's sweeps find their
winners: batching beating instances, or instances filling the cores), then runs a coordinate descent over instance
count, max queue delay, max batch size and preferred batch sizes from the best of the three: each pass walks one
dimension at a time from the best config so far (a step up, and further while it keeps improving; a step down
likewise; preferred sizes, which have no order, try the other kind: none, which Triton serves as the max alone,
or half and max) and keeps a
change only when it beats the best by more than the noise margin. Each config's best operating point comes from a
concurrency ladder (powers of two) that starts where the best config so far peaked (the first config: at instances
x max batch size) and steps up towards the concurrency where p99 would reach the target if it grew in proportion
(at most a doubling), until the target is broken or throughput stops rising. A config whose first point
falls ``prune_pct`` short of what the best config served at the same concurrency (or below) is pruned there (no
more points). For the starting configs and every config with a point (over the target or not) within
``refine_within_pct`` of the best so far, the concurrency is then bisected between the last level within the target
and the first one over it (``refine_steps`` times, until the gap is ``refine_resolution_pct`` of the lower level).
That is a few dozen measurements where a grid takes hundreds. A config that fails to load, or whose measurement
fails, is recorded with the error and ruled out.

The search's figures are optimistic (the best of a few short measurements), so the winner is chosen on confirmed
figures: the ``confirm_top`` best configs (those within ``confirm_within_pct`` of the best) have their operating
points measured again, at least twice as long, by perf_analyzer where it is installed (what the user's own
perf_analyzer will see), and the config with the highest re-measured throughput whose p99 holds the target wins;
where a re-measured p99 breaks it, that config's next point at a lower concurrency is tried (up to three, while its
search figure beats the best re-measured figure that held: a point that cannot win is not measured), and where none of
them holds, the next ``confirm_top`` configs by search figure are measured again the same way (the search's best
can be one lucky point). Where two configs held, both are measured once more in the reverse order (A B B A: the
machine's drift weighs on both alike) and the one with the higher mean throughput that held both times wins, on
the lower of its two figures. With ``climb_steps``, the concurrency then climbs from the winner's confirmed point
(each level ``climb_factor`` higher), re-measured the same way, while each level holds the target and serves more;
off by default, since on a noisy machine the first lucky re-measurement is the one kept. The record keeps every
measurement and re-measurement, and the (throughput, p99) frontier is shown.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..client import ModelLoadError, Triton, spec_protocol
from ..errors import TritongenError
from ..layout import CONFIG_NAME
from ..progress import Progress
from .results import PerfPoint
from .spec import ABOVE_0_S, ENGINES, PerfSpec, refuse_not_positive

if TYPE_CHECKING:
    from ..server.admin import LocalServer

CONCURRENCY_LADDER = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TUNE_RECORD = "tune.json"


@dataclass(frozen=True)
class Candidate:
    """The knobs tune turns. ``preferred`` is a tuple of preferred batch sizes (empty: none)."""

    instances: int
    max_queue_delay_us: int
    max_batch_size: int
    preferred: tuple[int, ...]

    def label(self) -> str:
        pref = ",".join(map(str, self.preferred)) or "-"
        return (
            f"instances={self.instances} delay={self.max_queue_delay_us}us "
            f"max_batch={self.max_batch_size} preferred={pref}"
        )


@dataclass(frozen=True)
class TuneSpec:
    model_dir: Path  # <repository>/<model>
    max_p99_ms: float
    min_throughput_rps: float | None = None
    url: str | None = None
    protocol: str = ""  # "": the URL's scheme (http://, grpc://), else $TRITONGEN_URL's, else grpc
    max_instances: int | None = None  # None: the number of CPU cores (KIND_CPU) or 4
    queue_delays_us: tuple[int, ...] = (0, 100, 500, 2000, 10000)
    max_batch_sizes: tuple[int, ...] = ()  # empty: powers of two up to twice the current maximum (at most 128)
    max_concurrency: int = 128
    duration_s: float = 1.5  # measured time per load level
    warmup_s: float = 0.5
    stability_pct: float = 15.0
    margin_pct: float = 3.0  # a change must beat the best by this much to be kept
    p99_margin_pct: float = 10.0  # points count only with p99 within max_p99_ms less this much (the target)
    prune_pct: float = 20.0  # a config whose first point is this far below the best config's gets no more points
    refine_steps: int = 2  # bisections of the concurrency between the last level within the target and the next
    refine_resolution_pct: float = 12.5  # no bisection once that gap is this share of the lower level (or 1)
    refine_within_pct: float = 10.0  # refine configs with a point (any) within this much of the best so far
    engine: str = "builtin"  # or "perf_analyzer"
    confirm: bool = True  # measure the best configs' operating points again, longer, and pick on those figures
    confirm_engine: str = "auto"  # what re-measures them: "auto" is perf_analyzer where installed, else `engine`
    confirm_top: int = 2  # how many configs are re-measured (those within confirm_within_pct of the best)
    confirm_within_pct: float = 10.0
    confirm_duration_s: float = 0.0  # 0: twice duration_s, at least 3 s
    # Where two configs' re-measurements held the target, measure both once more in the reverse order (A B B A) and
    # pick on the mean: the machine's drift between measurements is larger than two good configs differ by.
    confirm_paired: bool = True
    # When a config's search figure beats the best config's, measure the best config again right then (its best
    # point's load) and keep the newcomer only if it beats that too: figures taken minutes apart on a noisy machine
    # differ by more than neighbouring configs do, so the comparison is made between two measurements side by side.
    paired_descent: bool = True
    # From the winner's confirmed point, re-measure up to this many higher concurrencies. Off by default: on a noisy
    # machine a single re-measurement near the target is lucky as often as not, and the first lucky one is kept
    # (bench/tune_vs_model_analyzer.py here: the climbed point broke the bound in 9 of 10 rounds after).
    climb_steps: int = 0
    climb_factor: float = 1.25  # each a quarter higher (at least one more)
    # After each load, this long of unmeasured load (built-in engine) before any measurement: a freshly loaded
    # config serves slower at first (measured here once: two instances' first 1.5 s measurement 15-20% below later
    # ones). Measured again (6 alternated rounds per engine, 2 instances at concurrency 24): after 0.5 s the
    # median was no lower than after 2 s (perf_analyzer 7,255 vs 6,564 req/s; built-in 9,498 vs 8,941), and every
    # load's warm-up is search time.
    load_warmup_s: float = 0.5
    budget_s: float = 900.0  # stop searching after this long (the best so far is used)
    write: bool = True
    input_data: Path | None = None
    timeout_s: float = 30.0
    # CPU ids every measurement runs on, e.g. "0" (the search's process; perf_analyzer as its child); (): wherever
    # this process runs. Keep them off the server's (serve --cpus) on one machine.
    client_cpus: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        from ..cpus import cpus_from_text
        from ..fields import check_fields

        # before the field checks, whose "negative: pass 0 or more" would contradict these (0 is refused too)
        positive = {"max_p99_ms": "give the p99 latency bound in milliseconds, above 0", "duration_s": ABOVE_0_S}
        refuse_not_positive(self, positive)
        check_fields(
            self,
            "tune",
            parse={"client_cpus": lambda v: cpus_from_text(v, "--client-cpus")},
        )
        refuse_not_positive(self, positive)
        object.__setattr__(self, "protocol", spec_protocol(self.url, self.protocol))
        object.__setattr__(self, "model_dir", Path(self.model_dir).expanduser().resolve())
        if self.max_instances is not None and self.max_instances < 1:
            raise TritongenError(
                f"--max-instances {self.max_instances} is below 1",
                "give the largest instance count to try, 1 or more (leave it out for the default)",
            )
        if self.max_concurrency < 1:
            raise TritongenError(
                f"--max-concurrency {self.max_concurrency} is below 1", "give the largest concurrency to try, 1 or more"
            )
        if self.min_throughput_rps is not None and self.min_throughput_rps < 0:
            raise TritongenError("--min-throughput is negative", "give requests per second, 0 or more")
        if self.engine not in ENGINES:
            raise TritongenError(f"engine '{self.engine}' is not known", f"use one of {', '.join(ENGINES)}")
        if self.confirm_engine not in (*ENGINES, "auto"):
            raise TritongenError(
                f"confirm engine '{self.confirm_engine}' is not known", f"use auto or one of {', '.join(ENGINES)}"
            )
        if not 0 <= self.p99_margin_pct < 100:
            raise TritongenError(
                f"p99 margin {self.p99_margin_pct:g}% is outside 0-100", "give a percentage such as 10 (0: none)"
            )
        if self.confirm_top < 1:
            raise TritongenError(f"confirm_top {self.confirm_top} is below 1", "give how many configs to re-measure")
        if self.refine_steps < 0:
            raise TritongenError(f"refine_steps {self.refine_steps} is negative", "give 0 (no refinement) or more")
        if not 0 <= self.refine_resolution_pct < 100:
            raise TritongenError(
                f"refine_resolution_pct {self.refine_resolution_pct:g} is not in [0, 100)",
                "give a share of the load in percent, e.g. 12.5",
            )
        if self.load_warmup_s < 0:
            raise TritongenError(f"load_warmup_s {self.load_warmup_s:g} is negative", "give 0 (none) or more seconds")
        if self.climb_steps < 0:
            raise TritongenError(f"climb_steps {self.climb_steps} is negative", "give 0 (no climbing) or more")
        if self.climb_factor <= 1:
            raise TritongenError(f"climb_factor {self.climb_factor:g} is not above 1", "give a factor such as 1.25")

    @property
    def target_p99_ms(self) -> float:
        """The p99 every counted point must meet: the bound less the margin."""
        return self.max_p99_ms * (1 - self.p99_margin_pct / 100.0)

    @property
    def confirm_s(self) -> float:
        return self.confirm_duration_s or max(2 * self.duration_s, 3.0)


@dataclass(frozen=True)
class Trial:
    candidate: Candidate
    points: tuple[PerfPoint, ...]
    best: PerfPoint | None  # highest throughput with p99 within the bound
    load_s: float
    error: str = ""
    pruned: bool = False  # its first point fell prune_pct short of the best config's: no more points measured

    @property
    def score(self) -> float:
        return self.best.throughput_rps if self.best is not None else 0.0


@dataclass(frozen=True)
class TuneResult:
    model: str
    winner: Trial | None
    baseline: Trial
    trials: tuple[Trial, ...]
    frontier: tuple[tuple[Candidate, PerfPoint], ...]
    search_s: float
    config_path: Path | None  # written config, when one was written
    record_path: Path | None
    meets_constraints: bool
    confirmation: tuple[PerfPoint, ...] = ()  # every re-measurement of the best configs' points, in order
    confirmed: PerfPoint | None = None  # the winner's re-measurement: the figure the written config stands on
    confirmation_configs: tuple[Candidate, ...] = ()  # the config of each re-measurement (same order)
    target_p99_ms: float = 0.0  # the p99 every counted point met: the bound less the margin
    # The paired descent's checks: each time a config's search figure beat the best config's, that config measured
    # again beside it, and whether the newcomer was kept (see TuneSpec.paired_descent).
    descent_checks: tuple[dict[str, Any], ...] = ()
    unchanged: bool = False  # the winner is the starting config: config.pbtxt was left as it was
    served: str = ""  # what the server serves now that tune has ended, in one sentence
    max_concurrency: int = 0  # the highest concurrency the search could try (--max-concurrency)
    checked_max_batch: int | None = None  # the largest batch the build's parity gate compared with PyTorch

    @property
    def operating_point(self) -> PerfPoint | None:
        """Where the winner is meant to run: its confirmed point, else (no confirmation) its search best."""
        if self.confirmed is not None:
            return self.confirmed
        return self.winner.best if self.winner is not None else None

    def table(self) -> str:
        lines = [
            f"tune {self.model}: {len(self.trials)} configs, "
            f"{sum(len(t.points) for t in self.trials)} measurements"
            + (f" + {len(self.confirmation)} re-measurements" if self.confirmation else "")
            + f" in {self.search_s:.0f} s"
            + (f"; points count with p99 <= {self.target_p99_ms:.2f} ms" if self.target_p99_ms else "")
        ]
        lines.append(f"{'config':<64} {'conc':>4} {'req/s':>9} {'p99 ms':>8}")
        for t in self.trials:
            if t.best is None:
                lines.append(
                    f"{t.candidate.label():<64} {'-':>4} {'-':>9} {'-':>8} "
                    f" {t.error or 'no point within the p99 target'}"
                )
            else:
                mark = "  <- best" if self.winner is not None and t is self.winner else ""
                mark += "  (pruned after one point)" if t.pruned else ""
                lines.append(
                    f"{t.candidate.label():<64} {int(t.best.load):>4} "
                    f"{t.best.throughput_rps:>9.1f} {t.best.latency.p99_ms:>8.2f}{mark}"
                )
        if self.descent_checks:
            kept = sum(1 for c in self.descent_checks if c["kept"])
            lines.append(
                f"side by side: {len(self.descent_checks)} time(s) a config beat the best so far, the best was measured"
                f" again beside it; the newcomer was kept {kept} time(s)"
            )
        lines.append("frontier (throughput vs p99, every measured point):")
        for cand, p in self.frontier:
            lines.append(
                f"  {p.throughput_rps:9.1f} req/s  p99 {p.latency.p99_ms:7.2f} "
                f"ms  concurrency {int(p.load):>3}  {cand.label()}"
            )
        if self.winner is not None:
            lines.append(self._best_line())
        configs: Sequence[Candidate | None] = self.confirmation_configs or (None,) * len(self.confirmation)
        for remeasured, p in zip(configs, self.confirmation, strict=False):
            holds = p.latency.p99_ms <= (self.target_p99_ms or float("inf")) and not p.errors
            verdict = "the winner" if p is self.confirmed else "holds" if holds else "over the target"
            lines.append(
                f"measured again at concurrency {int(p.load)}: {p.throughput_rps:.1f} "
                f"req/s, p99 {p.latency.p99_ms:.2f} ms ({verdict})" + (f"  {remeasured.label()}" if remeasured else "")
            )
        lines.extend(self._notes())
        return "\n".join(lines)

    def _best_line(self) -> str:
        """The winner's search figure against the starting config's: on re-measured figures where both have one
        that held the target (search figures of different configs are best-of-a-few and not comparable to a
        re-measurement)."""
        assert self.winner is not None
        line = f"best: {self.winner.candidate.label()}: {self.winner.score:.1f} req/s in the search"
        if self.winner.candidate == self.baseline.candidate:
            return line + " (the starting config)"
        start = self._held(self.baseline.candidate)
        if self.confirmed is not None and start is not None:
            ratio = self.confirmed.throughput_rps / start.throughput_rps if start.throughput_rps else float("inf")
            return line + f" ({ratio:.2f}x the starting config, both measured again)"
        if self.baseline.best is None:
            return line + " (the starting config had no point within the target)"
        ratio = self.winner.score / self.baseline.score if self.baseline.score else float("inf")
        return line + f" ({ratio:.2f}x the starting config's search figure)"

    def _held(self, candidate: Candidate) -> PerfPoint | None:
        """``candidate``'s highest re-measurement that held the target, if any."""
        held = [
            p
            for c, p in zip(self.confirmation_configs, self.confirmation, strict=False)
            if c == candidate and _within(p, self.target_p99_ms or float("inf"))
        ]
        return max(held, key=lambda p: p.throughput_rps) if held else None

    def _notes(self) -> list[str]:
        """Which figures to plan capacity with, and whether --max-concurrency capped the search."""
        notes = []
        op = self.operating_point
        if self.confirmed is not None and self.winner is not None and self.winner.best is not None:
            c = self.confirmed
            notes.append(
                f"plan capacity with the re-measured figure: {c.throughput_rps:.1f} req/s at concurrency "
                f"{int(c.load)}, p99 {c.latency.p99_ms:.2f} ms ({c.engine}, {c.measured_s:.0f} s); the search's "
                f"figures ({self.winner.best.engine}, the best of short measurements) are optimistic"
            )
        target = self.target_p99_ms
        if op is not None and self.max_concurrency and int(op.load) >= self.max_concurrency and target:
            if op.latency.p99_ms < 0.8 * target:
                notes.append(
                    f"note: the search stopped at --max-concurrency {self.max_concurrency}, where the winner's p99 is "
                    f"{op.latency.p99_ms:.2f} ms against a target of {target:.2f} ms: its figures are what "
                    f"{self.max_concurrency} requests in flight get, not the most it serves within the bound; raise "
                    f"--max-concurrency (e.g. {2 * self.max_concurrency}) to find that"
                )
        checked = self.checked_max_batch
        tuned = self.winner.candidate.max_batch_size if self.winner is not None else 0
        if checked and tuned > checked and not self.unchanged:
            notes.append(
                f"note: the tuned max batch {tuned} is above the largest batch the build compared with PyTorch "
                f"({checked}); ONNX Runtime runs any batch the graph's batch axis takes, but no batch of {tuned} was "
                f"checked: rebuild with --max-batch-size {tuned} (its parity gate compares that batch) before you "
                "rely on it"
            )
        return notes


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


# --------------------------------------------------------------------------------------------- configs


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


def _search_space(spec: TuneSpec, base: Candidate, kind_cpu: bool) -> dict[str, list]:
    cores = os.cpu_count() or 4
    max_instances = spec.max_instances if spec.max_instances is not None else (cores if kind_cpu else 4)
    space: dict[str, list] = {"instances": list(range(1, max(max_instances, base.instances) + 1))}
    if base.max_batch_size > 0:
        space["max_queue_delay_us"] = sorted(set(spec.queue_delays_us) | {base.max_queue_delay_us})
        sizes = spec.max_batch_sizes or tuple(
            b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b <= max(2 * base.max_batch_size, 1)
        )
        space["max_batch_size"] = sorted(set(sizes) | {base.max_batch_size})
        # "none" and "max" are one served config: Triton fills an empty preferred_batch_size with max_batch_size
        space["preferred"] = ["none", "half+max"]
    return space


def _preferred(kind: str, max_batch_size: int) -> tuple[int, ...]:
    if kind == "max":
        return (max_batch_size,)
    if kind == "half+max":
        return tuple(sorted({b for b in (max_batch_size // 2, max_batch_size) if b > 0}))
    return ()


def _preferred_kind(c: Candidate) -> str:
    """``none`` for no preferred sizes and for the max alone (what Triton serves for none), else ``half+max``."""
    return "none" if served_form(c).preferred == (c.max_batch_size,) else "half+max"


def served_form(c: Candidate) -> Candidate:
    """``c`` as Triton serves it: its NormalizeModelConfig fills an empty preferred_batch_size of a batching model
    with max_batch_size, so "none" and "the max" are one config (measured once)."""
    if c.max_batch_size > 0 and not c.preferred:
        return replace(c, preferred=(c.max_batch_size,))
    return c


def _neighbour(c: Candidate, dim: str, value) -> Candidate:
    if dim == "preferred":
        return replace(c, preferred=_preferred(value, c.max_batch_size))
    if dim == "max_batch_size":
        return replace(c, max_batch_size=value, preferred=_preferred(_preferred_kind(c), value))
    return replace(c, **{dim: value})


def _check_signed_config(server: LocalServer, model_dir: Path, text: str) -> None:
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


# --------------------------------------------------------------------------------------------- search


def tune_model(spec: TuneSpec, progress: Progress | None = None) -> TuneResult:
    """Search configs for ``spec.model_dir`` on a running server; write the winner back when ``spec.write``.
    With ``spec.client_cpus`` every measurement runs on those CPUs (perf_analyzer inherits them)."""
    from ..cpus import pinned

    with pinned(spec.client_cpus):
        return _tune_model(spec, progress)


def _tune_model(spec: TuneSpec, progress: Progress | None) -> TuneResult:
    from ..client import host_port_from_url, model_metadata
    from ..layout import config_text
    from ..server.admin import local_server_at
    from ..validate import config_from_text
    from .inputs import request_set_for_model
    from .loadgen import ServerGone
    from .perf_analyzer import find_perf_analyzer
    from .run import points_from_engine

    progress = progress or (lambda message: None)
    config_path = spec.model_dir / "config.pbtxt"
    if not spec.model_dir.is_dir():
        raise TritongenError(
            f"model folder {spec.model_dir} does not exist",
            "pass a model folder inside a repository, e.g. model_repository/my-model",
        )
    if not config_path.is_file():
        raise TritongenError(
            f"{spec.model_dir} has no config.pbtxt",
            "pass a model folder inside a repository, e.g. model_repository/my-model",
        )
    text = config_text(config_path)  # once: what is parsed is what is held to a signature below
    base_config = config_from_text(text, source=str(config_path))
    if base_config.platform == "ensemble" or base_config.HasField("ensemble_scheduling"):
        raise TritongenError(f"{spec.model_dir.name} is an ensemble", "tune its composing models one by one")
    if base_config.HasField("sequence_batching"):
        raise TritongenError(
            f"{spec.model_dir.name} is a sequence model: tune searches dynamic batching settings",
            "measure it with tritongen perf (concurrent streams) and set --max-batch-size/--instances in the build",
        )
    model = spec.model_dir.name
    perf = PerfSpec(
        model=model,
        url=spec.url,
        protocol=spec.protocol,
        duration_s=spec.duration_s,
        warmup_s=spec.warmup_s,
        stability_pct=spec.stability_pct,
        max_windows=4,
        timeout_s=spec.timeout_s,
        repo=spec.model_dir.parent,
        input_data=spec.input_data,
        engine=spec.engine,
        client_cpus=spec.client_cpus,
    )
    if spec.engine == "perf_analyzer":
        find_perf_analyzer()  # fail before anything is loaded if it is missing
    url = perf.resolved_url()
    local = local_server_at(host_port_from_url(url))  # found once: its admin key and signing key belong together
    _check_signed_config(local, spec.model_dir, text)
    metadata = model_metadata(url, model, protocol=spec.protocol)
    requests = request_set_for_model(metadata, spec.model_dir.parent, spec.input_data)
    # a load may take minutes; the key of a server tritongen started on this machine, found by its port
    # to a server found here, by the address it was found listening on (the name is not resolved again)
    server = Triton(local.url(url), spec.protocol, max(spec.timeout_s, 300), local.headers(spec.protocol))
    kind_cpu = all(g.kind in (0, 2) for g in base_config.instance_group)  # KIND_AUTO / KIND_CPU
    base = candidate_from_config(base_config)
    space = _search_space(spec, base, kind_cpu)
    target_ms = spec.target_p99_ms
    started = time.monotonic()
    trials: dict[Candidate, Trial] = {}
    ladder = [c for c in CONCURRENCY_LADDER if c <= spec.max_concurrency]
    peak_index = [0]

    # the versions the server serves now stay the ones served (a rollback, serve's pin of the rollout record):
    # config.pbtxt's own policy would load the newest version with the first candidate
    served_versions = _served_policy(server, model)
    again = _Remeasure(server, model, base_config, perf, requests, spec, progress, served_versions)

    def ok(p: PerfPoint) -> bool:
        return _within(p, target_ms)

    def in_budget() -> bool:
        return time.monotonic() - started < spec.budget_s

    def measure(
        candidate: Candidate,
        refine_above_rps: float = 0.0,
        against: Trial | None = None,
        start: int | None = None,
    ) -> Trial:
        """Load ``candidate`` and find its best point. ``against``: the best config so far, which a first point
        far below it prunes; ``start``: the ladder index to begin at (default: where the best config peaked)."""
        same = tried(candidate)
        if same is not None:
            return same
        t0 = time.monotonic()
        header = f"config {len(trials) + 1}: {candidate.label()}"
        try:
            again.swap(candidate)  # a server without explicit control ends the run
        except ModelLoadError as failed:
            progress(header)
            trial = Trial(
                candidate,
                (),
                None,
                time.monotonic() - t0,
                error=f"failed to load: {failed.problem.splitlines()[0][:200]}",
            )
            progress(f"  {trial.error}")
            trials[candidate] = trial
            return trial
        progress(header)
        load_s = time.monotonic() - t0
        _warm(perf, requests, ladder[min(peak_index[0] if start is None else start, len(ladder) - 1)], spec)
        points: dict[int, PerfPoint] = {}

        def at(c: int) -> PerfPoint:
            if c not in points:
                level = replace(perf, concurrency=(c,), request_rates=())
                p = points_from_engine(level, requests)[0]
                points[c] = p
                progress(ladder_line(p, ok(p)))
            return points[c]

        try:
            return ladder_and_refine(candidate, points, at, refine_above_rps, against, start, load_s)
        except TritongenError as failed:
            # A measurement that fails (perf_analyzer's exit on a busy machine) rules this config out, not the search.
            detail = (failed.details or "").strip().splitlines()[-1:] or [""]
            trial = Trial(
                candidate,
                tuple(points[c] for c in sorted(points)),
                None,
                load_s,
                error=f"measurement failed: {failed.problem} {detail[0]}".strip()[:300],
            )
            progress(f"  {trial.error}")
            trials[candidate] = trial
            return trial

    def ladder_and_refine(candidate, points, at, refine_above_rps, against, start, load_s) -> Trial:
        i = min(peak_index[0] if start is None else start, len(ladder) - 1)
        first = at(ladder[i])
        pruned = _pruned(first, against, spec.prune_pct)
        if pruned:
            progress(f"  pruned: {spec.prune_pct:g}% or more below the best config so far")
        elif ok(first):
            c = ladder[i]
            while in_budget():
                up = _next_up(at(c), target_ms, spec.max_concurrency)
                if up is None:
                    break
                nxt, here = at(up), at(c)
                # A doubling that adds under 5% has reached the plateau; a smaller step aimed at the target only
                # has to serve more.
                enough = here.throughput_rps * (1.05 if up >= 2 * c else 1.0)
                if not ok(nxt) or nxt.throughput_rps <= enough:
                    break
                c = up
        else:
            while i > 0 and not ok(at(ladder[i])):
                i -= 1
                # Over the target and already too slow: lower concurrency is slower still.
                if _pruned(at(ladder[i]), against, spec.prune_pct):
                    pruned = True
                    break
        best = _best_point(points.values(), target_ms)
        if best is not None and not pruned and _potential_rps(points.values()) >= refine_above_rps:
            # Bisect between the best level within the target and the lowest one above it that broke it: worth it
            # when any of its points, the one over the target included, served about as much as the best config
            # (a doubling of concurrency can jump from well below the target to just over it).
            lo = int(best.load)
            hi = min((c for c, p in points.items() if c > lo and not ok(p)), default=None)
            for _ in range(spec.refine_steps):
                if hi is None or hi - lo <= max(1, int(lo * spec.refine_resolution_pct / 100)) or not in_budget():
                    break
                mid = (lo + hi) // 2
                if ok(at(mid)):
                    lo = mid
                else:
                    hi = mid
            best = _best_point(points.values(), target_ms)
        trial = Trial(candidate, tuple(points[c] for c in sorted(points)), best, load_s, pruned=pruned)
        trials[candidate] = trial
        return trial

    def tried(candidate: Candidate) -> Trial | None:
        """The trial of ``candidate``, or of one the server serves alike (:func:`served_form`)."""
        served = served_form(candidate)
        return next((t for c, t in trials.items() if served_form(c) == served), None)

    def peak_of(trial: Trial) -> int:
        """The ladder index at or just below the concurrency where ``trial`` peaked."""
        return max(
            k
            for k, c in enumerate(ladder)
            if c <= max(ladder[0], int(trial.best.load if trial.best is not None else 0))
        )

    def descend(start: Trial) -> Trial:
        incumbent = start
        if incumbent.best is not None:
            peak_index[0] = peak_of(incumbent)
        improved = True
        while improved and in_budget():
            improved = False
            for dim, values in space.items():
                current = (
                    getattr(incumbent.candidate, dim) if dim != "preferred" else _preferred_kind(incumbent.candidate)
                )
                if current not in values:
                    continue
                if dim == "preferred":  # categories, not an order: every other kind is tried from the incumbent
                    chosen_kind = incumbent
                    for value in values:
                        if value == current or not in_budget():
                            continue
                        trial = measure(
                            _neighbour(incumbent.candidate, dim, value),
                            refine_above_rps=incumbent.score * (1 - spec.refine_within_pct / 100.0),
                            against=incumbent,
                        )
                        if beats(trial, chosen_kind):
                            chosen_kind = trial
                    if chosen_kind is not incumbent:
                        incumbent, improved = chosen_kind, True
                        peak_index[0] = peak_of(chosen_kind)
                    continue
                at_index = values.index(current)
                for step in (1, -1):
                    moved = False
                    j = at_index + step
                    while 0 <= j < len(values) and in_budget():
                        trial = measure(
                            _neighbour(incumbent.candidate, dim, values[j]),
                            refine_above_rps=incumbent.score * (1 - spec.refine_within_pct / 100.0),
                            against=incumbent,
                        )
                        if beats(trial, incumbent):
                            incumbent, improved, moved = trial, True, True
                            peak_index[0] = peak_of(trial)
                            j += step
                        else:
                            break
                    if moved:
                        break  # improved going up: no need to look down
        return incumbent

    checks: list[dict[str, Any]] = []  # the paired descent's side-by-side checks, in order

    def beats(challenger: Trial, incumbent: Trial) -> bool:
        if challenger.score <= incumbent.score * (1 + spec.margin_pct / 100.0):
            return False
        if not spec.paired_descent or not in_budget():
            return True
        return _beats_side_by_side(challenger, incumbent, again, checks)

    confirmation: list[tuple[Trial, PerfPoint]] = []
    chosen: tuple[Trial, PerfPoint] | None = None
    # What the server must serve when tune ends, however it ends: config.pbtxt's config, the written winner once it
    # is on disk. Loaded with a config override, as the candidates were: a plain load after an override does not
    # read config.pbtxt again when its files have not changed, and a `tritongen serve` server reads a checked copy
    # of the repository, which tune does not write.
    serving = _Serving(base_config, "config.pbtxt's config")
    ending = False  # the final load has begun (an error there is its own: it is not tried a second time)
    try:
        try:
            baseline = measure(base, start=_start_index(ladder, base))
            start = baseline
            seeds = (
                (_batching_seed(space, base), "one instance, the largest max batch size, no preferred sizes"),
                (_parallel_seed(space, base), "the most instances, the same max batch size, no preferred sizes"),
            )
            for seed, text in seeds:
                if seed is not None and tried(seed) is None and in_budget():
                    progress(f"also from {text}")
                    other = measure(seed, start=_start_index(ladder, seed))
                    if beats(other, start):
                        start = other
            incumbent = descend(start)
            if spec.confirm and incumbent.best is not None:
                confirm_engine = _confirm_engine(spec)
                contenders = _contenders(list(trials.values()), spec.confirm_top, spec.confirm_within_pct)
                confirmation = _confirm(contenders, again, confirm_engine)
                chosen = _pick_confirmed(confirmation, target_ms)
                more = (
                    []
                    if chosen is not None
                    else _fallback_contenders(list(trials.values()), contenders, spec.confirm_top)
                )
                if more:
                    # The search's best figures can be one lucky point: rather than write nothing, measure the next
                    # configs again (each with up to three of its points); only a re-measurement that holds wins.
                    progress(f"no re-measured point held the target: measuring the next {len(more)} configs again")
                    confirmation += _confirm(more, again, confirm_engine)
                    chosen = _pick_confirmed(confirmation, target_ms)
                rivals = _rivals(confirmation, target_ms) if spec.confirm_paired else []
                if chosen is not None and len(rivals) == 2:
                    # Two configs held: which serves more is decided on two measurements each, taken A B B A.
                    progress("two configs held: measuring both a second time, in the reverse order")
                    seconds = _paired(rivals, again)
                    confirmation += seconds
                    chosen = _after_paired(chosen, rivals, seconds, target_ms, progress)
                if chosen is not None and spec.climb_steps:
                    climbed = _climb(chosen, again)
                    confirmation += climbed
                    chosen = _pick_confirmed([chosen, *climbed], target_ms)  # the winner's own points only
        except ServerGone as gone:
            raise TritongenError(
                f"the server stopped answering while tuning ({gone})", "restart it and run tune again"
            ) from None
        finally:
            search_s = time.monotonic() - started

        confirmed = chosen[1] if chosen is not None else None
        if chosen is not None:
            winner: Trial | None = chosen[0]
        elif spec.confirm or incumbent.best is None:
            winner = None
        else:
            winner = incumbent
        standing = confirmed.throughput_rps if confirmed is not None else (winner.score if winner is not None else 0.0)
        meets = winner is not None and (spec.min_throughput_rps is None or standing >= spec.min_throughput_rps)
        all_points = [(t.candidate, p) for t in trials.values() for p in t.points if not p.errors]
        frontier = _frontier(all_points)
        written = record = None
        # The starting config won: config.pbtxt stays as it is (not rewritten, reformatted, nor its manifest touched).
        unchanged = winner is not None and config_from_candidate(base_config, winner.candidate) == base_config
        if spec.write and meets and winner is not None and not unchanged:
            written, record = _write_winner(
                spec,
                base_config,
                winner,
                baseline,
                list(trials.values()),
                frontier,
                search_s,
                confirmation,
                confirmed,
                checks,
                serving,
            )
        ending = True
        served = _serve(server, model, serving, served_versions)
    except TritongenError:
        if not ending and again.changed:
            _serve_after_stop(server, model, serving, progress, served_versions)
        raise
    except BaseException:
        if ending:  # Ctrl-C again while the final config loaded
            progress(f"tune stopped while the server loaded {serving.name}: run tune again, or restart the server")
        elif again.changed:
            _serve_after_stop(server, model, serving, progress, served_versions)
        raise
    finally:
        server.close()
    return TuneResult(
        model,
        winner,
        baseline,
        tuple(trials.values()),
        tuple(frontier),
        search_s,
        written,
        record,
        meets,
        tuple(p for _, p in confirmation),
        confirmed,
        tuple(t.candidate for t, _ in confirmation),
        target_ms,
        tuple(checks),
        unchanged=unchanged,
        served=served,
        max_concurrency=spec.max_concurrency,
        checked_max_batch=checked_max_batch(spec.model_dir),
    )


@dataclass
class _Serving:
    """The config the server must serve when tune ends (``config``, a ModelConfig) and how to name it."""

    config: Any
    name: str


def _served_policy(server: Triton, model: str) -> Any:
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


def _serve_after_stop(server: Triton, model: str, serving: _Serving, progress: Progress, versions: Any = None) -> None:
    """Ctrl-C, SIGTERM (the CLI takes it as Ctrl-C), a failed measurement or write: the server is put back on what
    config.pbtxt says now before the error goes on, and the user is told whether that worked."""
    try:
        progress(f"tune stopped: {_serve(server, model, serving, versions)}")
    except TritongenError as failed:
        progress(f"tune stopped: {failed.problem}; {failed.fix}")


def _serve(server: Triton, model: str, serving: _Serving, versions: Any = None) -> str:
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


# --------------------------------------------------------------------------------------------- selection


def _within(p: PerfPoint, target_p99_ms: float) -> bool:
    return p.latency.p99_ms <= target_p99_ms and not p.errors


def _best_point(points, target_p99_ms: float) -> PerfPoint | None:
    """The highest-throughput point within the target, or None."""
    feasible = [p for p in points if _within(p, target_p99_ms)]
    return max(feasible, key=lambda p: p.throughput_rps) if feasible else None


def _potential_rps(points) -> float:
    """The most any point served, within the target or not (errored points aside)."""
    return max((p.throughput_rps for p in points if not p.errors), default=0.0)


def _start_index(ladder: Sequence[int], candidate: Candidate) -> int:
    """Where a config's ladder starts when no config has peaked yet: at the concurrency that fills every
    instance's largest batch once (instances x max batch size), or the level just below it."""
    fill = candidate.instances * max(1, candidate.max_batch_size)
    return max((k for k, c in enumerate(ladder) if c <= fill), default=0)


def _next_up(point: PerfPoint, target_p99_ms: float, max_concurrency: int) -> int | None:
    """The next concurrency up from a point within the target: where its p99 would reach the target if p99 grows
    in proportion to concurrency (a saturated server: each request more waits its share), at least one more and at
    most double; None at ``max_concurrency``. Below saturation p99 grows slower than that, so the guess falls short
    of the crossing rather than past it, and the walk goes on from there."""
    c = int(point.load)
    if c >= max_concurrency:
        return None
    p99 = point.latency.p99_ms
    guess = math.floor(c * target_p99_ms / p99) if p99 > 0 else 2 * c
    return min(max_concurrency, 2 * c, max(c + 1, guess))


def _pruned(first: PerfPoint, against: Trial | None, prune_pct: float) -> bool:
    """A config's first point is so far below what the best config served at the same load that more concurrency
    is not worth measuring. The comparison is at the same concurrency or below (the best config's highest
    throughput there): its best point usually sits higher, at a bisected level the ladder does not visit, and a
    closed loop serves more at a higher concurrency. Only against a config that has a best point and a point at
    or below this load, and never at 0% (pruning off)."""
    if against is None or against.best is None or prune_pct <= 0:
        return False
    at_or_below = [p.throughput_rps for p in against.points if p.load <= first.load and not p.errors]
    if not at_or_below:
        return False
    return first.throughput_rps < max(at_or_below) * (1 - prune_pct / 100.0)


def _batching_seed(space: Mapping[str, list], base: Candidate) -> Candidate | None:
    """One instance, the largest max batch size searched, no preferred sizes, the starting queue delay."""
    if "max_batch_size" not in space:
        return None
    return Candidate(1, base.max_queue_delay_us, max(space["max_batch_size"]), ())


def _parallel_seed(space: Mapping[str, list], base: Candidate) -> Candidate | None:
    """The other end from the batching seed: the most instances searched, the starting max batch size and queue
    delay, no preferred sizes (where Model Analyzer's sweeps found instances beating one large batch: on a CPU
    whose cores one instance's batches leave idle). None when only one instance is searched."""
    most = max(space["instances"])
    if most <= 1:
        return None
    return Candidate(most, base.max_queue_delay_us, base.max_batch_size, ())


def _contenders(trials: Sequence[Trial], top: int, within_pct: float) -> list[Trial]:
    """The configs worth measuring again: the best by search figure, and up to ``top - 1`` more whose figure is
    within ``within_pct`` of it, best first."""
    ranked = sorted((t for t in trials if t.best is not None), key=lambda t: t.score, reverse=True)
    if not ranked:
        return []
    floor = ranked[0].score * (1 - within_pct / 100.0)
    return [t for t in ranked if t.score >= floor][: max(1, top)]


def _fallback_contenders(trials: Sequence[Trial], tried: Sequence[Trial], top: int) -> list[Trial]:
    """When no contender's re-measurement held the target: the next ``top`` configs by search figure (with a point
    within the target) that were not measured again yet, best first."""
    seen = {t.candidate for t in tried}
    ranked = sorted(
        (t for t in trials if t.best is not None and t.candidate not in seen), key=lambda t: t.score, reverse=True
    )
    return ranked[: max(1, top)]


def _pick_confirmed(
    remeasured: Sequence[tuple[Trial, PerfPoint]], target_p99_ms: float
) -> tuple[Trial, PerfPoint] | None:
    """The re-measurement with the highest throughput whose p99 holds the target (the earliest on a tie)."""
    best: tuple[Trial, PerfPoint] | None = None
    for trial, p in remeasured:
        if _within(p, target_p99_ms) and (best is None or p.throughput_rps > best[1].throughput_rps):
            best = (trial, p)
    return best


def _confirm_engine(spec: TuneSpec) -> str:
    """perf_analyzer where it is installed (``auto``), so the confirmed figure is what it will see."""
    if spec.confirm_engine != "auto":
        return spec.confirm_engine
    if spec.engine == "perf_analyzer":
        return "perf_analyzer"
    from .perf_analyzer import find_perf_analyzer

    try:
        find_perf_analyzer()
    except TritongenError:
        return spec.engine
    return "perf_analyzer"


@dataclass
class _Remeasure:
    """What measuring a config again needs: the server and model, the config candidates derive from, the perf
    settings and requests, the tune spec, and where progress goes; ``loaded``: the candidate the server holds
    now, serving warm (the last one loaded and measured), or None (not known); ``changed``: whether any load was
    sent (what the server serves is then tune's doing)."""

    server: Triton
    model: str
    base_config: Any
    perf: PerfSpec
    requests: Any
    spec: TuneSpec
    progress: Progress
    versions: Any = None  # the version policy the server served with when tune began (JSON), kept by every load
    loaded: Candidate | None = None
    changed: bool = False  # a candidate was loaded (or its load began): the server must be given config.pbtxt's back

    def load(self, candidate: Candidate, concurrency: int) -> None:
        """Load ``candidate`` and warm it up at ``concurrency`` (``spec.load_warmup_s``); nothing where it is the
        one loaded already (it has just been measured: reloading would only cost a load and a warm-up)."""
        if candidate == self.loaded:
            return
        self.swap(candidate)
        _warm(self.perf, self.requests, concurrency, self.spec)

    def swap(self, candidate: Candidate) -> None:
        """Load ``candidate``, not warmed; ``loaded`` is None until it has loaded (a refused load leaves the
        server's holding unknown). Raises :class:`ModelLoadError` for a config Triton refuses."""
        self.loaded = None
        changed, self.changed = self.changed, True
        try:
            self.server.load(
                self.model, override_json(config_from_candidate(self.base_config, candidate), self.versions)
            )
        except ModelLoadError:
            raise
        except TritongenError:
            self.changed = changed  # refused before loading anything: no explicit model control, no answer
            raise
        self.loaded = candidate

    def at(self, concurrency: int, engine_name: str, duration_s: float | None = None) -> PerfPoint:
        """One measurement at ``concurrency`` with ``engine_name``, ``duration_s`` long (default: confirm_s)."""
        from .run import points_from_engine

        level = replace(
            self.perf,
            concurrency=(concurrency,),
            request_rates=(),
            duration_s=self.spec.confirm_s if duration_s is None else duration_s,
            engine=engine_name,
        )
        return points_from_engine(level, self.requests)[0]


def _confirm(contenders: Sequence[Trial], again: _Remeasure, engine_name: str) -> list[tuple[Trial, PerfPoint]]:
    """Measure each contender's best point again, ``spec.confirm_s`` long, with ``engine_name``; where its p99
    breaks the target, its next point by search figure at a lower load (at most three tries; once a figure holds, a
    later contender's next point is tried only where its search figure beats the best figure that held: it could
    still win). Returns every re-measurement with its config, in order."""
    spec, progress = again.spec, again.progress
    target_ms = spec.target_p99_ms
    measured: list[tuple[Trial, PerfPoint]] = []
    for trial in contenders:
        feasible = sorted(
            (p for p in trial.points if _within(p, target_ms)), key=lambda p: p.throughput_rps, reverse=True
        )
        if not feasible:
            continue
        again.load(trial.candidate, int(feasible[0].load))
        held = _pick_confirmed(measured, target_ms)
        tries, over_at = 0, None
        for point in feasible:
            if tries == 3:
                break
            if over_at is not None and point.load >= over_at:  # more load than a point that broke the target
                continue
            if tries and held is not None and point.throughput_rps <= held[1].throughput_rps:
                break  # it could not win (nor could the rest: they serve less)
            tries += 1
            try:
                try:
                    remeasured = again.at(int(point.load), engine_name)
                except TritongenError as failed:
                    if spec.confirm_engine != "auto" or engine_name == spec.engine:
                        raise
                    progress(f"  perf_analyzer could not measure it ({failed.problem}); confirming with {spec.engine}")
                    engine_name = spec.engine
                    remeasured = again.at(int(point.load), engine_name)
            except TritongenError as failed:
                progress(f"  measuring {trial.candidate.label()} again failed ({failed.problem}): it cannot win")
                break
            measured.append((trial, remeasured))
            holds = _within(remeasured, target_ms)
            progress(
                f"measured again ({engine_name}, {spec.confirm_s:g} s) {trial.candidate.label()} at concurrency "
                f"{int(point.load)}: {remeasured.throughput_rps:.1f} req/s p99 {remeasured.latency.p99_ms:.2f} ms"
                + ("" if holds else "  (over the target)")
            )
            if holds:
                break
            over_at = point.load
    return measured


def ladder_line(p: PerfPoint, within: bool) -> str:
    """tune's progress line for one measured concurrency of a config's ladder (``within``: the point holds the
    target)."""
    p99 = "no answers" if math.isnan(p.latency.p99_ms) else f"p99 {p.latency.p99_ms:7.2f} ms"
    verdict = "" if within else "  (over the target)" if not p.errors else f"  errors {dict(p.errors)}"
    return f"  concurrency {int(p.load):>3}: {p.throughput_rps:8.1f} req/s  {p99}{verdict}"


def _warm(perf: PerfSpec, requests, concurrency: int, spec: TuneSpec) -> None:
    """``spec.load_warmup_s`` of load at ``concurrency`` from the built-in engine, nothing measured: what a freshly
    loaded config needs before its figures mean anything (each instance's runtime warms up on the batch sizes it
    gets). A failure here is left for the measurement that follows to report."""
    from .loadgen import points_from_builtin
    from .spec import STABLE_WINDOWS

    if spec.load_warmup_s <= 0:
        return
    level = replace(
        perf,
        concurrency=(concurrency,),
        request_rates=(),
        duration_s=spec.load_warmup_s,
        warmup_s=0.0,
        max_windows=STABLE_WINDOWS,
        engine="builtin",
    )
    try:
        points_from_builtin(level, requests)
    except TritongenError:
        pass


def _climb_loads(load: int, factor: float, steps: int, max_concurrency: int) -> list[int]:
    """The concurrencies a climb from ``load`` tries, in order: each ``factor`` higher (at least one more), at most
    ``steps`` of them, none above ``max_concurrency``."""
    loads: list[int] = []
    for _ in range(steps):
        load = max(load + 1, math.ceil(load * factor))
        if load > max_concurrency:
            break
        loads.append(load)
    return loads


def _climb(chosen: tuple[Trial, PerfPoint], again: _Remeasure) -> list[tuple[Trial, PerfPoint]]:
    """From the winner's confirmed point, re-measure higher concurrencies (``spec.climb_factor`` apart, as long and
    with the same engine as the confirmation) while each holds the target and serves more than the one below.

    Opt-in (``spec.climb_steps``): a level the search saw break the target may hold it when measured for longer,
    and the climb claims that throughput on one re-measurement within the target. On a noisy machine one such
    re-measurement is lucky as often as not, and the first lucky one is kept, so the climbed point breaks the
    bound more often afterwards (measured: 9 of 10 rounds); hence off by default. Returns the re-measurements."""
    spec = again.spec
    trial, below = chosen
    engine_name = below.engine if below.engine in ENGINES else spec.engine
    loads = _climb_loads(int(below.load), spec.climb_factor, spec.climb_steps, spec.max_concurrency)
    measured: list[tuple[Trial, PerfPoint]] = []
    if not loads:
        return measured
    again.load(trial.candidate, loads[0])
    for load in loads:
        try:
            point = again.at(load, engine_name)
        except TritongenError as failed:
            again.progress(f"  measuring concurrency {load} failed ({failed.problem}): the climb stops")
            break
        measured.append((trial, point))
        holds = _within(point, spec.target_p99_ms)
        more = point.throughput_rps > below.throughput_rps
        again.progress(
            f"climbing ({engine_name}, {spec.confirm_s:g} s) {trial.candidate.label()} at concurrency {load}: "
            f"{point.throughput_rps:.1f} req/s p99 {point.latency.p99_ms:.2f} ms"
            + ("" if holds else "  (over the target)")
            + ("" if more or not holds else "  (no more than below: the climb stops)")
        )
        if not holds or not more:
            break
        below = point
    return measured


def _rivals(remeasured: Sequence[tuple[Trial, PerfPoint]], target_p99_ms: float) -> list[tuple[Trial, PerfPoint]]:
    """The two configs whose best re-measurement within the target served most (each with that re-measurement),
    in the order they were measured."""
    best: dict[Candidate, tuple[int, Trial, PerfPoint]] = {}
    for index, (trial, p) in enumerate(remeasured):
        held = best.get(trial.candidate)
        if _within(p, target_p99_ms) and (held is None or p.throughput_rps > held[2].throughput_rps):
            best[trial.candidate] = (index, trial, p)
    top = sorted(best.values(), key=lambda itp: itp[2].throughput_rps, reverse=True)[:2]
    return [(trial, p) for _, trial, p in sorted(top, key=lambda itp: itp[0])]


def _pick_paired(
    rivals: Sequence[tuple[Trial, PerfPoint]], again: Sequence[tuple[Trial, PerfPoint]], target_p99_ms: float
) -> tuple[Trial, PerfPoint] | None:
    """Of two configs each measured twice (``rivals``, then ``again`` in the reverse order, so a steady drift of the
    machine weighs on both alike), the one with the higher mean throughput whose both measurements hold the target;
    its figure is the lower of its two. None when neither held twice."""
    firsts = {t.candidate: p for t, p in rivals}
    best: tuple[float, Trial, PerfPoint] | None = None
    for trial, second in again:
        first = firsts.get(trial.candidate)
        if first is None or not (_within(first, target_p99_ms) and _within(second, target_p99_ms)):
            continue
        mean_rps = (first.throughput_rps + second.throughput_rps) / 2
        if best is None or mean_rps > best[0]:
            best = (mean_rps, trial, min(first, second, key=lambda p: p.throughput_rps))
    return None if best is None else (best[1], best[2])


def _after_paired(
    chosen: tuple[Trial, PerfPoint],
    rivals: Sequence[tuple[Trial, PerfPoint]],
    again: Sequence[tuple[Trial, PerfPoint]],
    target_p99_ms: float,
    progress: Callable[[str], None],
) -> tuple[Trial, PerfPoint]:
    """The winner after the paired measurement: ``_pick_paired``'s, or where neither config held the target both
    times, ``chosen`` (the first re-measurement's best), saying so."""
    paired = _pick_paired(rivals, again, target_p99_ms)
    if paired is not None:
        return paired
    progress(
        "neither held the target both times (a busy machine reads both slower): kept "
        f"{chosen[0].candidate.label()}, the first re-measurement's best; run tune again on a quiet machine to "
        "decide between the two"
    )
    return chosen


def _paired(rivals: Sequence[tuple[Trial, PerfPoint]], again: _Remeasure) -> list[tuple[Trial, PerfPoint]]:
    """Measure the two rivals again at the same loads, in the reverse order of their first re-measurement (the
    machine drifts by more than two good configs differ: measured A, B, B, A, both means see the same drift)."""
    spec = again.spec
    measured: list[tuple[Trial, PerfPoint]] = []
    for trial, first in reversed(rivals):
        engine_name = first.engine if first.engine in ENGINES else spec.engine
        again.load(trial.candidate, int(first.load))
        try:
            second = again.at(int(first.load), engine_name)
        except TritongenError as failed:
            again.progress(f"  measuring {trial.candidate.label()} a second time failed ({failed.problem})")
            continue
        measured.append((trial, second))
        again.progress(
            f"measured a second time ({engine_name}, {spec.confirm_s:g} s) {trial.candidate.label()} at concurrency "
            f"{int(first.load)}: {second.throughput_rps:.1f} req/s p99 {second.latency.p99_ms:.2f} ms"
            + ("" if _within(second, spec.target_p99_ms) else "  (over the target)")
        )
    return measured


def _beats_side_by_side(challenger: Trial, incumbent: Trial, again: _Remeasure, checks: list[dict[str, Any]]) -> bool:
    """``challenger``'s search figure beat ``incumbent``'s, which was measured minutes before. Measure the incumbent
    again now (its config loaded and warmed up, at its best point's load, as long and with the same engine as the
    search) and say whether the challenger beats that figure too, by ``spec.margin_pct``. Where the incumbent's
    point breaks the target now, or cannot be measured, its old figure does not stand: the challenger is kept.
    Each check is appended to ``checks`` for the record."""
    spec, progress = again.spec, again.progress
    if incumbent.best is None:
        return True
    load = int(incumbent.best.load)
    check: dict[str, Any] = {
        "challenger": asdict(challenger.candidate),
        "challenger_rps": challenger.score,
        "incumbent": asdict(incumbent.candidate),
        "incumbent_search_rps": incumbent.score,
    }
    try:
        again.load(incumbent.candidate, load)
        now = again.at(load, spec.engine, spec.duration_s)
    except TritongenError as failed:
        progress(f"  measuring the best config again beside it failed ({failed.problem}): the newcomer is kept")
        checks.append({**check, "again": None, "kept": True})
        return True
    holds = _within(now, spec.target_p99_ms)
    kept = not holds or challenger.score > now.throughput_rps * (1 + spec.margin_pct / 100.0)
    checks.append({**check, "again": _point_dict(now), "kept": kept})
    progress(
        f"  beside it, the best so far ({incumbent.candidate.label()}) measured again at concurrency {load}: "
        f"{now.throughput_rps:.1f} req/s p99 {now.latency.p99_ms:.2f} ms"
        + ("  (over the target)" if not holds else "")
        + (f"; {challenger.score:.1f} req/s " + ("beats it" if kept else f"does not beat it by {spec.margin_pct:g}%"))
    )
    return kept


def _frontier(points: list[tuple[Candidate, PerfPoint]]) -> list[tuple[Candidate, PerfPoint]]:
    """Points no other point beats on both throughput (higher) and p99 (lower), by throughput."""
    out: list[tuple[Any, PerfPoint]] = []
    for cand, p in sorted(points, key=lambda cp: (cp[1].latency.p99_ms, -cp[1].throughput_rps)):
        if not out or p.throughput_rps > out[-1][1].throughput_rps:
            out.append((cand, p))
    return out


def _write_winner(
    spec: TuneSpec,
    base_config,
    winner: Trial,
    baseline: Trial,
    trials: list[Trial],
    frontier,
    search_s: float,
    confirmation: Sequence[tuple[Trial, PerfPoint]] = (),
    confirmed: PerfPoint | None = None,
    checks: Sequence[dict[str, Any]] = (),
    serving: _Serving | None = None,
) -> tuple[Path, Path]:
    """Write the winner's config into config.pbtxt (validated first) and the record of how it was chosen;
    ``serving`` (what the server must serve when tune ends) becomes the written config once it is on disk."""
    from google.protobuf import text_format

    from ..layout import ARTIFACT_DIR, TUNED_CONFIG_HEADER, config_text, version_numbers
    from ..manifest import rehash_files
    from ..validate import config_from_text, problems_in_config

    config = config_from_candidate(base_config, winner.candidate)
    text = TUNED_CONFIG_HEADER + text_format.MessageToString(config)
    problems = problems_in_config(config_from_text(text), spec.model_dir)
    if problems:
        raise TritongenError(
            "the tuned config does not validate",
            "report this as a bug; the repository was left unchanged",
            details="\n".join(problems),
        )
    config_path = spec.model_dir / "config.pbtxt"
    previous = config_text(config_path)  # bounded, one open
    versions = version_numbers(spec.model_dir)
    record_dir = spec.model_dir / str(versions[-1] if versions else 1) / ARTIFACT_DIR
    record_dir.mkdir(parents=True, exist_ok=True)
    record_path = record_dir / TUNE_RECORD
    record = {
        "created_unix_s": round(time.time(), 3),
        "constraint": {"max_p99_ms": spec.max_p99_ms, "min_throughput_rps": spec.min_throughput_rps},
        "target_p99_ms": spec.target_p99_ms,  # what every counted point met: the bound less p99_margin_pct
        "search": {
            "p99_margin_pct": spec.p99_margin_pct,
            "prune_pct": spec.prune_pct,
            "duration_s": spec.duration_s,
            "engine": spec.engine,
            "confirm_s": spec.confirm_s,
            "confirm_engine": confirmation[0][1].engine if confirmation else None,
            "confirm_paired": spec.confirm_paired,
            "client_cpus": list(spec.client_cpus),
            "climb_steps": spec.climb_steps,
            "climb_factor": spec.climb_factor,
            "paired_descent": spec.paired_descent,
        },
        "search_s": round(search_s, 2),
        "winner": _trial_dict(winner),
        # Every re-measurement of the best configs, in order; the winner is the highest whose p99 held the target.
        "confirmation": [{"config": asdict(t.candidate), **_point_dict(p)} for t, p in confirmation],
        "confirmed": None if confirmed is None else _point_dict(confirmed),
        # Each time a config's search figure beat the best one's: the best measured again beside it, and the verdict.
        "descent_checks": list(checks),
        "baseline": _trial_dict(baseline),
        "trials": [_trial_dict(t) for t in trials],
        "frontier": [
            {"config": asdict(c), "concurrency": p.load, "throughput_rps": p.throughput_rps, "p99_ms": p.latency.p99_ms}
            for c, p in frontier
        ],
        "previous_config": previous,
    }
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    tmp = config_path.with_name(".config.pbtxt.tune")
    tmp.write_text(text)
    os.replace(tmp, config_path)
    if serving is not None:
        serving.config, serving.name = config, f"the tuned config written to {CONFIG_NAME}"
    if versions:  # the build's manifest now vouches for the tuned config (and the record of how it was chosen)
        rehash_files(spec.model_dir, versions[-1], [config_path, record_path])
    return config_path, record_path


def _trial_dict(t: Trial) -> dict[str, Any]:
    return {
        "config": asdict(t.candidate),
        "load_s": round(t.load_s, 3),
        "error": t.error,
        "pruned": t.pruned,
        "best": None
        if t.best is None
        else {
            "concurrency": t.best.load,
            "throughput_rps": t.best.throughput_rps,
            "p99_ms": t.best.latency.p99_ms,
            "mean_ms": t.best.latency.mean_ms,
        },
        "points": [_point_dict(p) for p in t.points],
    }


def _point_dict(p: PerfPoint) -> dict[str, Any]:
    return {
        "concurrency": p.load,
        "throughput_rps": p.throughput_rps,
        "p99_ms": p.latency.p99_ms,
        "measured_s": p.measured_s,
        "engine": p.engine,
        "errors": dict(p.errors),
    }
