"""The perf spec: one frozen description of a load test, defaults resolved here."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..client import default_url, spec_protocol
from ..cpus import cpus_from_text
from ..errors import TritongenError
from ..fields import check_fields
from ..names import one_line, shown
from .results import ENGINES, MAX_CONCURRENCY, MAX_LEVELS, MAX_REQUEST_RATE, check_report_dir, setting_problem

ARRIVALS = ("constant", "poisson")
DEFAULT_CONCURRENCY = (1, 4)
STABLE_WINDOWS = 3  # the reported figures come from the last 3 windows, as in perf_analyzer
# Open loop: the highest request rate one run offers (results.MAX_REQUEST_RATE). The built-in client spends 35-65 us
# of CPU per request (about 15,000-30,000 req/s on one core) and perf_analyzer about as much; a rate far above that
# is a typo (1e12), which would only fill the windows with requests never sent.
MAX_WINDOWS = 100  # per level: with every other figure at its bound, a results.json stays within its reader's limit


def numbers_from_text(text: str | None, kind: type, option: str) -> tuple:
    """``"1,4"`` -> ``(1, 4)`` (``kind`` each): the text form of ``--concurrency`` and ``--request-rate``. None (not
    given) is ``()``; a text that names no number (``""``, ``","``) is refused rather than read as not given."""
    if text is None:
        return ()
    what = "whole numbers" if kind is int else "numbers"
    example = "1,2,4,8" if kind is int else "50,100,200"
    parts = [v.strip() for v in text.split(",")]
    if "" in parts[:-1] and any(parts):  # "1,,4", ",4": a level left out by a slip (one trailing comma is none)
        raise TritongenError(f"{option} '{shown(text)}' has an empty item", f"write it like {option} {example}")
    try:
        numbers = tuple(kind(v) for v in parts if v)  # "1 4" is no number
    except ValueError:
        raise TritongenError(
            f"{option} '{shown(text)}' is not a comma-separated list of {what}", f"write it like {option} {example}"
        ) from None
    if not numbers:
        raise TritongenError(f"{option} '{shown(text)}' names no load level", f"write it like {option} {example}")
    return numbers


ABOVE_0_S = "give a time above 0 seconds"


def refuse_not_positive(spec: Any, fixes: dict[str, str]) -> None:
    """Each field of ``spec`` that ``fixes`` names, where it holds a number, must be above 0: one message for -1 and 0
    alike (the field checks' own "negative: pass 0 or more" would accept the 0 this refuses)."""
    for name, fix in fixes.items():
        value = getattr(spec, name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise TritongenError(f"--{name.replace('_', '-')} {value:g} is not above 0", fix)


def defaults_of(spec_class: type) -> dict[str, Any]:
    """A spec dataclass's field defaults, by field name (what the CLI shows and leaves to the spec)."""
    return {f.name: f.default for f in dataclasses.fields(spec_class) if f.default is not dataclasses.MISSING}


# Times a run cannot be measured in at 0 (a --max-time-s of 0 fits no level).
POSITIVE_PERF_FIELDS = {
    "duration_s": ABOVE_0_S,
    "timeout_s": "give a timeout above 0 seconds, e.g. 30",
    "max_time_s": "give the most seconds the whole run may take, above 0",
}


@dataclass(frozen=True)
class PerfSpec:
    """What to load-test and how.

    ``duration_s`` is the measured time per load level: it is split into 3 windows; more windows follow (up to
    ``max_windows``) until the last 3 agree within ``stability_pct`` on throughput and mean latency, and the
    figures reported come from those last 3. ``warmup_s`` of load runs first and is not measured.
    """

    model: str
    url: str | None = None  # None: tritongen.client.default_url(protocol)
    protocol: str = ""  # "": the URL's scheme (http://, grpc://), else $TRITONGEN_URL's, else grpc
    concurrency: tuple[int, ...] = ()
    request_rates: tuple[float, ...] = ()
    arrival: str = "constant"
    engine: str = "builtin"
    duration_s: float = 6.0
    warmup_s: float = 1.0
    max_windows: int = 10
    stability_pct: float = 10.0
    timeout_s: float = 30.0
    repo: Path | None = Path("model_repository")
    input_data: Path | None = None
    text_file: Path | None = None
    metrics_url: str | None = None  # None: the URL's host on port 8002 when the URL uses a default port
    label: str = ""
    # Poisson arrivals' random seed: None draws a fresh one per run (a fixed one biased every short run the same
    # way), kept in the spec and so in results.json's settings; pass it again to repeat a run's schedule.
    seed: int | None = None
    max_in_flight: int = 4096  # open loop: requests outstanding before the client counts itself overloaded
    max_time_s: float | None = None  # cap on the whole run: lowers max_windows so every level fits
    sequence_length: int = 0  # stateful models: requests per sequence (0: 20 when the model is a sequence model)
    version_split: tuple[tuple[str, int], ...] = ()  # A/B: (version, percent) pairs, e.g. "1:90,2:10"
    # CPU ids the load generator runs on for the measurement (the builtin engine's process; perf_analyzer as its
    # child), e.g. (0,) or "0"; (): wherever this process runs. Keep them off the server's (serve --cpus).
    client_cpus: tuple[int, ...] = ()
    # More perf_analyzer options (engine perf_analyzer), e.g. ("--async", "--max-threads", "1") or that as one
    # string; not the ones tritongen sets itself (model, URL, protocol, inputs, load, windows, output).
    perf_analyzer_args: tuple[str, ...] = ()
    # The folder the report will go to (report.report_from_runs, after the run; tritongen perf --report): checked
    # here, before any load is sent, so that a path no report can be written to costs no run. None: no report.
    report_dir: Path | None = None
    force: bool = False  # with report_dir: replace an earlier run's report there (tritongen perf --force)

    def __post_init__(self) -> None:
        from .split import version_split_from_text

        refuse_not_positive(self, POSITIVE_PERF_FIELDS)  # before the field checks: -1 and 0 get one message
        check_fields(
            self,
            "perf",
            parse={
                "concurrency": lambda v: numbers_from_text(v, int, "concurrency") if isinstance(v, str) else v,
                "request_rates": lambda v: numbers_from_text(v, float, "request_rates") if isinstance(v, str) else v,
                "client_cpus": lambda v: cpus_from_text(v, "--client-cpus"),
                "version_split": version_split_from_text,
                "perf_analyzer_args": lambda v: _split_args(v) if isinstance(v, str) else v,
            },
        )
        object.__setattr__(self, "protocol", spec_protocol(self.url, self.protocol))
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise TritongenError(f"--seed {self.seed} is outside 0..2**63-1", "give a whole number of 0 or more")
        if self.arrival == "poisson" and not self.request_rates:
            raise TritongenError(
                "--arrival poisson shapes the schedule of --request-rate's open loop, and no --request-rate is given "
                "(a concurrency's closed loop sends each request when one returns)",
                "pass --request-rate, or drop --arrival",
            )
        if self.seed is not None and self.engine == "perf_analyzer":
            raise TritongenError(
                f"--seed {self.seed} draws the built-in engine's Poisson schedule; perf_analyzer draws its own and "
                "takes no seed",
                "drop --seed, or measure with --engine builtin",
            )
        if self.seed is not None and self.arrival != "poisson":
            raise TritongenError(
                f"--seed {self.seed} draws --arrival poisson's schedule, and the arrival is {self.arrival}",
                "pass --arrival poisson with --request-rate, or drop --seed",
            )
        if self.seed is None and self.arrival == "poisson" and self.engine != "perf_analyzer":  # recorded
            import secrets

            object.__setattr__(self, "seed", secrets.randbits(32))
        if self.engine not in ENGINES:
            raise TritongenError(f"engine '{self.engine}' is not known", f"use one of {', '.join(ENGINES)}")
        if self.arrival not in ARRIVALS:
            raise TritongenError(f"arrival '{self.arrival}' is not known", f"use one of {', '.join(ARRIVALS)}")
        conc, rates = self.concurrency, self.request_rates
        if not conc and not rates:
            conc = DEFAULT_CONCURRENCY
        if any(c < 1 for c in conc):
            raise TritongenError(f"concurrency {min(conc)} is below 1", "use concurrencies of 1 or more")
        if any(c > MAX_CONCURRENCY for c in conc):
            raise TritongenError(
                f"concurrency {max(conc)} is over the {MAX_CONCURRENCY} requests in flight one client keeps",
                f"use concurrencies of at most {MAX_CONCURRENCY} (or measure from several clients)",
            )
        if any(r <= 0 for r in rates):
            raise TritongenError(
                f"request rate {min(rates):g} is not positive", "use request rates above 0 (requests per second)"
            )
        if any(r > MAX_REQUEST_RATE for r in rates):
            raise TritongenError(
                f"request rate {max(rates):g} req/s is over the {MAX_REQUEST_RATE:.0f} req/s one client can offer",
                f"use request rates of at most {MAX_REQUEST_RATE:.0f} (requests per second)",
            )
        for kind, values in (("concurrency", conc), ("request rate", rates)):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise TritongenError(
                    f"{kind} {repeated[0]:g} is given more than once (each level is measured once)",
                    f"drop the repeated {kind} values",
                )
        object.__setattr__(self, "concurrency", conc)
        object.__setattr__(self, "request_rates", rates)
        from ..client import host_port_from_url

        if self.url is not None:
            host_port_from_url(self.url)
        if self.metrics_url:
            host_port_from_url(self.metrics_url, "--metrics-url")
        refuse_not_positive(self, POSITIVE_PERF_FIELDS)  # a value the field checks converted
        if self.warmup_s < 0:
            raise TritongenError(f"--warmup-s {self.warmup_s} is negative", "give 0 or more seconds")
        if self.max_in_flight < 1:  # 0: every request of an open loop failed as client_overloaded
            raise TritongenError(
                f"perf option max_in_flight={self.max_in_flight} is below 1",
                "pass the requests that may be outstanding",
            )
        if not STABLE_WINDOWS <= self.max_windows <= MAX_WINDOWS:  # more: a results.json its own reader refuses
            raise TritongenError(
                f"--max-windows {self.max_windows} is outside {STABLE_WINDOWS}..{MAX_WINDOWS}",
                f"use {STABLE_WINDOWS} to {MAX_WINDOWS} windows (a longer --duration-s makes each window steadier)",
            )
        if len(self.levels) > MAX_LEVELS:
            raise TritongenError(
                f"{len(self.levels)} load levels are more than the {MAX_LEVELS} one run measures (and its "
                "results.json holds)",
                "measure fewer --concurrency/--request-rate values per run",
            )
        if self.sequence_length < 0:
            raise TritongenError(
                f"--sequence-length {self.sequence_length} is negative", "give the requests per sequence, e.g. 20"
            )
        if self.max_time_s is not None:
            object.__setattr__(self, "max_windows", self._windows_within(self.max_time_s))
        for name in ("repo", "input_data", "text_file"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value).expanduser())
        if self.version_split and self.engine != "builtin":
            raise TritongenError(
                "--version-split needs the builtin engine", "leave out --engine perf_analyzer (it pins one version)"
            )
        if self.input_data is not None and self.text_file is not None:
            raise TritongenError("--input-data and --text-file both given", "pass one source of inputs")
        object.__setattr__(self, "perf_analyzer_args", _perf_analyzer_args(self.perf_analyzer_args, self.engine))
        for key, value in self.recorded_settings().items():  # what perf records, its readers take back
            problem = setting_problem(key, value)
            if problem:  # refused here, before the run, not at the next read of its results.json
                raise TritongenError(
                    f"--{key.replace('_', '-')} '{one_line(str(value)[:60])}' {problem}, and results.json records it",
                    "give it without control characters, line separators or bidirectional overrides (at most "
                    "4096 characters)",
                )
        if self.report_dir is not None:
            object.__setattr__(self, "report_dir", Path(self.report_dir))
            check_report_dir(self.report_dir, self.force)

    @property
    def window_s(self) -> float:
        return self.duration_s / STABLE_WINDOWS

    def _windows_within(self, max_time_s: float) -> int:
        per_level_s = max_time_s / len(self.levels)
        fits = int(min((per_level_s - self.warmup_s) / self.window_s + 1e-9, 1e9))  # 1e308 s: no OverflowError
        if fits < STABLE_WINDOWS:
            shortest_s = len(self.levels) * (self.warmup_s + STABLE_WINDOWS * self.window_s)
            raise TritongenError(
                f"--max-time-s {max_time_s:g} is too short for {len(self.levels)} load level(s): each needs "
                f"{self.warmup_s:g} s of warm-up and {STABLE_WINDOWS} windows "
                f"of {self.window_s:.3g} s ({shortest_s:.3g} s in all)",
                "raise --max-time-s, shorten --duration-s or --warmup-s, or measure fewer levels",
            )
        return min(self.max_windows, fits)

    def time_budget_s(self) -> tuple[float, float]:
        """The shortest and longest the run can take: every level stable after 3 windows, or none before the cap."""
        levels = len(self.levels)
        return (
            levels * (self.warmup_s + STABLE_WINDOWS * self.window_s),
            levels * (self.warmup_s + self.max_windows * self.window_s),
        )

    @property
    def probe_timeout_s(self) -> float:
        """How long a question to the server before the load (its metadata, its config) may take: the request
        timeout, at most 30 s, and never past ``--max-time-s``."""
        return min(self.timeout_s, 30.0, self.max_time_s if self.max_time_s is not None else math.inf)

    def budget_text(self) -> str:
        shortest_s, longest_s = self.time_budget_s()
        return (
            f"{len(self.levels)} level(s) x ({self.warmup_s:g} s warm-up + 3 to {self.max_windows} windows of "
            f"{self.window_s:.3g} s): {shortest_s:.0f} to {longest_s:.0f} "
            "s. A level stops once its last 3 windows agree "
            f"within {self.stability_pct:g}% on throughput and mean latency; --max-time-s caps the whole run"
        )

    @property
    def levels(self) -> tuple[tuple[str, float], ...]:
        return tuple(("concurrency", float(c)) for c in self.concurrency) + tuple(
            ("request_rate", r) for r in self.request_rates
        )

    def recorded_settings(self) -> dict[str, Any]:
        """The options a run records in results.json (``settings``): every field but where the report goes."""
        return {
            k: (str(v) if v is not None and not isinstance(v, (int, float, str, bool, tuple)) else v)
            for k, v in asdict(self).items()
            if k not in ("report_dir", "force")  # where the report goes, not how the load was made
        }

    def resolved_url(self) -> str:
        from ..client import default_url_source, host_port_from_url

        if self.url:
            return host_port_from_url(self.url)
        return host_port_from_url(default_url(self.protocol), default_url_source(self.protocol))  # an environment's

    def resolved_metrics_url(self) -> str | None:
        from ..client import host_port_from_url

        if self.metrics_url:  # host:port, as handoff writes it too (http://host:8002/metrics)
            return host_port_from_url(self.metrics_url, "--metrics-url").removesuffix("/metrics")
        host, _, port = self.resolved_url().rpartition(":")
        return f"{host}:8002" if port in ("8000", "8001") and host else None


# What tritongen sets on perf_analyzer's command line itself (perf_analyzer.command_from_spec): not to be given again.
MANAGED_PERF_ANALYZER_OPTIONS = frozenset(
    {
        "-m", "--model-name", "-u", "--url", "-i", "--protocol", "--input-data", "--measurement-interval", "-p",
        "--stability-percentage", "-s", "--max-trials", "-r", "-f", "--verbose-csv", "-b", "--batch-size",
        "--shape", "--sequence-length", "--sequence-length-variation", "--serial-sequences", "--concurrency-range",
        "--request-rate-range", "--request-distribution", "--request-intervals", "--periodic-concurrency-range",
        "-x", "--model-version", "--measurement-mode", "--latency-report-file",
    }
)  # fmt: skip


def _split_args(text: str) -> tuple[str, ...]:
    """``--perf-analyzer-args`` as the shell would split it; an unclosed quote is one error line."""
    import shlex

    try:
        return tuple(shlex.split(text))
    except ValueError as exc:  # "No closing quotation", "No escaped character"
        raise TritongenError(
            f"--perf-analyzer-args '{shown(text)}' cannot be split into options ({str(exc).lower()})",
            "close every quote, e.g. --perf-analyzer-args '--async --max-threads 1'",
        ) from None


def _perf_analyzer_args(value: str | tuple[str, ...] | list[str], engine: str) -> tuple[str, ...]:
    args = _split_args(value) if isinstance(value, str) else tuple(str(a) for a in value)
    if not args:
        return ()
    if engine != "perf_analyzer":
        raise TritongenError(
            "--perf-analyzer-args given without --engine perf_analyzer", "add --engine perf_analyzer or drop them"
        )
    if len(args) > 64 or any(len(a) > 256 or "\0" in a for a in args):
        raise TritongenError("--perf-analyzer-args is too long", "pass at most 64 options of at most 256 characters")
    for arg in args:
        name = arg.split("=", 1)[0]
        if name in MANAGED_PERF_ANALYZER_OPTIONS:
            raise TritongenError(
                f"--perf-analyzer-args sets '{name}', which tritongen sets itself",
                "use tritongen's own option for it (model, --url, --protocol, --concurrency, --duration-s, ...)",
            )
    return args
