"""``tritongen perf`` and ``tritongen tune``: thin click commands over :mod:`tritongen.perf`."""

from __future__ import annotations

from pathlib import Path

import click

from . import api
from .cli_options import PROTOCOL, echo_err, name_from_folder, repo_and_name
from .errors import TritongenError
from .perf.spec import ARRIVALS, ENGINES, PerfSpec, defaults_of, numbers_from_text
from .perf.tune import TuneSpec

# The defaults shown in --help are the specs' own (one place: the dataclasses).
PERF_DEFAULTS = defaults_of(PerfSpec)
TUNE_DEFAULTS = defaults_of(TuneSpec)


@click.command(short_help="Load-test a served model: throughput, latency percentiles, HTML report.")
@click.argument("targets", nargs=-1, required=True, metavar="MODEL | --compare A.json B.json ...")
@click.option("--concurrency", help="Closed loop: comma-separated requests in flight, e.g. 1,2,4,8,16. Default 1,4.")
@click.option("--request-rate", help="Open loop: comma-separated request rates in req/s, e.g. 50,100,200.")
@click.option(
    "--arrival",
    type=click.Choice(ARRIVALS),
    default=PERF_DEFAULTS["arrival"],
    show_default=True,
    help="Open-loop arrival pattern.",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default=PERF_DEFAULTS["engine"],
    show_default=True,
    help="builtin: tritongen's async client; perf_analyzer: the real perf_analyzer with generated input data.",
)
@click.option(
    "--seed",
    type=int,
    help="Seed of --arrival poisson's schedule, to repeat a run's (results.json's settings.seed). Default: a fresh "
    "one per run.",
)
@click.option(
    "--duration-s",
    type=float,
    default=PERF_DEFAULTS["duration_s"],
    show_default=True,
    help="Measured time per load level (3 windows; more until stable).",
)
@click.option(
    "--warmup-s",
    type=float,
    default=PERF_DEFAULTS["warmup_s"],
    show_default=True,
    help="Unmeasured load before each level.",
)
@click.option(
    "--max-windows",
    type=int,
    default=PERF_DEFAULTS["max_windows"],
    show_default=True,
    help="Cap on measurement windows per level.",
)
@click.option(
    "--max-time-s", type=float, help="Cap on the whole run: fewer windows per level so that every level fits."
)
@click.option(
    "--stability-pct",
    type=float,
    default=PERF_DEFAULTS["stability_pct"],
    show_default=True,
    help="Allowed variation across the last 3 windows.",
)
@click.option(
    "--sequence-length",
    type=int,
    default=PERF_DEFAULTS["sequence_length"],
    help="A stateful (sequence) model: requests per sequence; each concurrent client streams sequences one after "
    "another. Default 20 for sequence models.",
)
@click.option("--url", help="Server address (default 127.0.0.1:8001 for gRPC, :8000 for HTTP, or $TRITONGEN_URL).")
@PROTOCOL
@click.option(
    "--repo",
    type=click.Path(path_type=Path),
    default="model_repository",
    show_default=True,
    help="Where the build's saved samples are.",
)
@click.option(
    "--input-data",
    type=click.Path(path_type=Path),
    help=".npz with one array per input (batch axis first) instead of the saved samples.",
)
@click.option(
    "--text-file",
    type=click.Path(path_type=Path),
    help="Text ensembles: one request text per line, sent to the model's BYTES input.",
)
@click.option(
    "--metrics-url",
    help="Triton's metrics endpoint host:port (default: the URL's host on 8002 when the URL's port is 8000 or 8001; "
    "else the metrics port of a server tritongen serve started on this machine; none otherwise).",
)
@click.option(
    "--timeout-s", type=float, default=PERF_DEFAULTS["timeout_s"], show_default=True, help="Per-request timeout."
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(path_type=Path),
    help="Folder for report.html, results.json and results.csv.",
)
@click.option("--force", is_flag=True, help="Replace an earlier run's report in the --report folder.")
@click.option(
    "--version-split",
    help="A/B on one server: VERSION:PERCENT pairs, e.g. 1:90,2:10; version-pinned requests in those proportions "
    "(interleaved), figures per version.",
)
@click.option(
    "--perf-analyzer-args",
    default="",
    help="More perf_analyzer options with --engine perf_analyzer, e.g. '--async --max-threads 1' (not the ones "
    "tritongen sets: model, URL, protocol, inputs, load, windows).",
)
@click.option(
    "--client-cpus",
    default="",
    help="CPU ids the load generator (and perf_analyzer) runs on, e.g. 0 or 0-1; keep them off the server's "
    "(tritongen serve --cpus) on one machine. Default: wherever tritongen runs.",
)
@click.option(
    "--label", default=PERF_DEFAULTS["label"], help="Name of this run in reports (default: model and engine)."
)
@click.option(
    "--compare",
    is_flag=True,
    help="Arguments are results.json files: write one report comparing them (needs --report).",
)
def perf(targets: tuple[str, ...], concurrency, request_rate, report_dir, compare, version_split, **options) -> None:
    """Load-test MODEL on a running server: throughput, latency percentiles, server-side breakdown, HTML report.

    Examples:

    \b
      tritongen perf minilm --concurrency 1,4,16 --report perf-minilm/
      tritongen perf minilm --request-rate 100,200 --arrival poisson --report perf-open/
      tritongen perf minilm --concurrency 4 --engine perf_analyzer --report pa/
      tritongen perf --compare perf-minilm/ pa/ --report compare/        # report folders or results.json files
    """
    from .perf.results import LevelFailed
    from .perf.run import stopped_exit_code
    from .signals import sigterm_as_keyboard_interrupt

    if compare:
        measuring = _given_options(("targets", "compare", "report_dir", "force"))
        if measuring:
            raise TritongenError(
                f"--compare reads finished runs: {', '.join(measuring)} would measure nothing there",
                "drop " + ("it" if len(measuring) == 1 else "them") + ", or run perf without --compare to measure",
            )
        click.echo(api.compare(targets, report_dir, force=options["force"]).text())
        return
    if len(targets) != 1:
        raise TritongenError(
            f"perf takes one model name, got {len(targets)} arguments",
            "pass one MODEL, or --compare with results.json files",
        )
    name = name_from_folder(targets[0], options)  # REPO/NAME: the model and its repository, as infer takes it
    # SIGTERM (kill, a CI job's timeout, docker stop) ends perf as Ctrl-C does: the levels measured so far are
    # reported and written, marked partial, rather than lost with the process.
    try:
        with sigterm_as_keyboard_interrupt():
            run = api.perf(
                name,
                concurrency=numbers_from_text(concurrency, int, "--concurrency"),
                request_rates=numbers_from_text(request_rate, float, "--request-rate"),
                version_split=version_split or (),
                report_dir=report_dir,  # checked before any load is sent; the report is written there after the run
                progress=echo_err,
                **options,
            )
    except LevelFailed as failed:  # a level where every request failed: the table first, then the one error
        _show(failed.run, report_dir)
        raise
    _show(run, report_dir)
    if run.partial:  # stopped by Ctrl-C or a signal: its exit code (130, 143), as an abort before any level
        raise TritongenError(
            f"the run is partial: {run.partial_reason}",
            "the levels measured before it stopped are reported" + (f" in {report_dir}" if report_dir else ""),
            exit_code=stopped_exit_code(run.partial_reason) or 1,
        )


def _given_options(leave_out: tuple[str, ...]) -> list[str]:
    """The options of the current command given on the command line (not left at their defaults), as spelled
    there, less ``leave_out`` (parameter names)."""
    context = click.get_current_context()
    given = []
    for param in context.command.params:
        if param.name in leave_out or not isinstance(param, click.Option) or param.name is None:
            continue
        source = context.get_parameter_source(param.name)
        if source not in (None, click.core.ParameterSource.DEFAULT):
            given.append(param.opts[0])
    return given


def _show(run, report_dir: Path | None) -> None:
    from .perf.results import table_from_run

    click.echo(table_from_run(run))
    if report_dir:
        click.echo(f"report: {Path(report_dir) / 'report.html'}")


@click.command(short_help="Search instances, queue delay and batch sizes under a p99 bound.")
@click.argument("model", nargs=-1, required=True, metavar="MODEL_DIR | REPO NAME")
@click.option("--max-p99-ms", type=float, required=True, help="p99 latency bound every operating point must meet.")
@click.option(
    "--min-throughput", "min_throughput_rps", type=float, help="Write a config only if it reaches this many req/s."
)
@click.option(
    "--url", help="Server address (default 127.0.0.1:8001 for gRPC). The server needs explicit model control."
)
@PROTOCOL
@click.option(
    "--max-instances",
    type=int,
    default=TUNE_DEFAULTS["max_instances"],
    help="Largest instance count tried, 1 to 256 (default: CPU cores for CPU models, at most 256, else 4).",
)
@click.option(
    "--max-concurrency",
    type=int,
    default=TUNE_DEFAULTS["max_concurrency"],
    show_default=True,
    help="Largest concurrency tried.",
)
@click.option(
    "--duration-s",
    type=float,
    default=TUNE_DEFAULTS["duration_s"],
    show_default=True,
    help="Measured time per operating point.",
)
@click.option(
    "--budget-s",
    type=float,
    default=TUNE_DEFAULTS["budget_s"],
    show_default=True,
    help="Stop searching after this long; the best so far wins (its confirming re-measurements come after).",
)
@click.option(
    "--input-data", type=click.Path(path_type=Path), help=".npz of inputs instead of the build's saved samples."
)
@click.option(
    "--text-file",
    type=click.Path(path_type=Path),
    help="Text ensembles: one request text per line, sent to the model's BYTES input.",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default=TUNE_DEFAULTS["engine"],
    show_default=True,
    help="What measures each point: tritongen's async client, or the real perf_analyzer.",
)
@click.option(
    "--p99-margin-pct",
    type=float,
    default=TUNE_DEFAULTS["p99_margin_pct"],
    show_default=True,
    help="Count only points whose p99 is this much under --max-p99-ms, so the figure holds when measured again.",
)
@click.option(
    "--confirm-engine",
    type=click.Choice(("auto", *ENGINES)),
    default=TUNE_DEFAULTS["confirm_engine"],
    show_default=True,
    help="What measures the best configs again before one is chosen (auto: perf_analyzer where installed).",
)
@click.option(
    "--client-cpus",
    default="",
    help="CPU ids every measurement runs on, e.g. 0; keep them off the server's (tritongen serve --cpus).",
)
@click.option(
    "--climb-steps",
    type=click.IntRange(min=0),
    default=TUNE_DEFAULTS["climb_steps"],
    show_default=True,
    help="From the winner's confirmed point, re-measure up to this many higher concurrencies (0: none).",
)
@click.option("--dry-run", is_flag=True, help="Search and show the result, but leave config.pbtxt as it is.")
def tune(model: tuple[str, ...], dry_run: bool, **options) -> None:
    """Search instance count, queue delay and batch sizes for MODEL_DIR (<repository>/<model>, or REPO NAME) under a
    p99 bound.

    The server must run with explicit model control (tritongen serve REPO --model-control explicit).

    Examples:

    \b
      tritongen tune model_repository/minilm --max-p99-ms 20
      tritongen tune model_repository/minilm --max-p99-ms 20 --min-throughput 500 --dry-run
      tritongen tune model_repository/minilm --max-p99-ms 20 --budget-s 120 --max-concurrency 64
    """
    from .signals import sigterm_as_keyboard_interrupt

    folder = Path(model[0])
    if len(model) > 1 or (folder.is_dir() and not (folder / "config.pbtxt").is_file()):
        folder = Path(*repo_and_name(model, "tune"))  # REPO NAME; a repository alone is refused naming its models
    model_dir = folder
    # SIGTERM (kill, a CI job's timeout, docker stop) ends tune as Ctrl-C does: the server is loaded with what
    # config.pbtxt says before "aborted" (exit 143), rather than left on the candidate being measured.
    with sigterm_as_keyboard_interrupt():
        result = api.tune(model_dir, write=not dry_run, progress=echo_err, **options)
    click.echo(result.table())
    config = Path(model_dir) / "config.pbtxt"
    served = f"; {result.served}" if result.served else ""
    if result.config_path is not None:
        click.echo(f"wrote {result.config_path} (validated){served}; measurements in {result.record_path}")
    elif result.unchanged and result.meets_constraints:
        click.echo(f"the starting config is best: {config} left as it was{served}")
    elif dry_run and result.meets_constraints:
        click.echo(f"dry run: {config} left as it was{served}; drop --dry-run to write the winner")
    elif not result.meets_constraints:
        if result.served:
            click.echo(f"{config} left as it was{served}")
        if result.confirmation and result.confirmed is None:
            raise TritongenError(
                "the best configs broke the p99 target (the bound less --p99-margin-pct) when measured again",
                "run tune again on a quieter machine, or relax --max-p99-ms",
            )
        raise TritongenError(
            "no config met the constraints", "relax --max-p99-ms or --min-throughput, or add instances/hardware"
        )
