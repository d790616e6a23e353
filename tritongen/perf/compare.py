"""``tritongen perf --compare``: finished runs side by side, as tables, lines on where they disagree and why, and
(with a folder) one report of them all."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TritongenError
from .results import (
    PerfRun,
    check_compare_dir,
    check_report_dir,
    comparison_lines,
    distinct_names,
    run_from_json,
    table_from_run,
)

ONE_RUN = "(one run: shown, nothing compared; pass two or more report folders or results.json files)"
NO_REPORT = "(no report written: pass --report DIR for report.html with the plots)"


@dataclass(frozen=True)
class Comparison:
    runs: tuple[PerfRun, ...]  # named apart where two share a name (distinct_names)
    lines: tuple[str, ...]  # where a run's served config or throughput differs from the first run's, and why
    report_path: Path | None  # report.html, where a folder was given

    def text(self) -> str:
        """What ``tritongen perf --compare`` prints: each run's table, the comparison's lines, the report."""
        out = [table_from_run(run) for run in self.runs] + list(self.lines)
        if len(self.runs) == 1:
            out.append(ONE_RUN)
        out.append(f"report: {self.report_path}" if self.report_path is not None else NO_REPORT)
        return "\n".join(out)


def runs_from_sources(runs: Sequence[Any], caller: str) -> list[PerfRun]:
    """Runs :func:`~tritongen.api.perf` returned, or results.json files (or report folders) read and checked."""
    loaded = []
    for run in runs:
        if isinstance(run, PerfRun):
            loaded.append(run)
        elif isinstance(run, (str, os.PathLike)):
            loaded.append(run_from_json(Path(run)))
        else:
            raise TritongenError(
                f"{caller}() got a {type(run).__name__} among its runs",
                "pass the runs perf() returned, or paths of results.json files",
            )
    return loaded


def check_comparison_dir(runs: Sequence[Any], report_dir: Path) -> None:
    """Refuse ``report_dir`` for a report of several ``runs`` when it is the folder of one of them given as a path
    (:func:`~tritongen.perf.results.check_compare_dir`); one run's report may replace its own."""
    if len(runs) > 1:
        check_compare_dir([Path(r) for r in runs if isinstance(r, (str, os.PathLike))], Path(report_dir))


def comparison_from_runs(
    runs: Sequence[Any], report_dir: Path | None = None, title: str | None = None, force: bool = False
) -> Comparison:
    """Compare ``runs`` (see :func:`runs_from_sources`); with ``report_dir``, write their report there. A folder that
    cannot take the report (one of the compared runs' own, an earlier report without ``force``) is refused before
    anything is read."""
    from .report import report_from_runs

    if not runs:
        raise TritongenError("compare() got no runs", "pass the runs perf() returned, or results.json files")
    if report_dir is not None:
        check_comparison_dir(runs, Path(report_dir))
        check_report_dir(Path(report_dir), force)
    named = distinct_names(runs_from_sources(runs, "compare"))  # each table named as the report names it
    path = report_from_runs(named, Path(report_dir), title, force) if report_dir is not None else None
    return Comparison(tuple(named), tuple(comparison_lines(named)), path)
