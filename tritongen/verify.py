"""Integrity: check a repository's files against the sha256 recorded in each build's manifest.

Each version folder's own files are checked against that version's manifest; the files shared by all
versions (``config.pbtxt``, ``warmup/``) against the newest version's manifest, since a ``--new-version``
build rewrites them. Models without a manifest (written by hand) are listed as unverified, not failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TritongenError
from .manifest import ARTIFACT_DIR, MANIFEST_NAME, sha256_file
from .repository import numeric_versions


@dataclass(frozen=True)
class VerifyReport:
    repo: Path
    checked_files: int
    problems: tuple[str, ...]
    unverified_models: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [f"{self.checked_files} files match their manifests in {self.repo}" if self.ok
                 else f"{len(self.problems)} integrity problem(s) in {self.repo}:"]
        lines += [f"  {p}" for p in self.problems]
        if self.unverified_models:
            lines.append(f"no manifest (not built by tritongen, not verified): {', '.join(self.unverified_models)}")
        return "\n".join(lines)


def _is_shared(rel: str) -> bool:
    return not rel.split("/", 1)[0].isdigit()


def verify_repository(repo: Path) -> VerifyReport:
    repo = Path(repo)
    if not repo.is_dir():
        raise TritongenError(f"model repository {repo} is not a folder", "pass the folder that holds the model folders")
    problems: list[str] = []
    unverified: list[str] = []
    checked = 0
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = [v for v in numeric_versions(model_dir) if (model_dir / str(v) / ARTIFACT_DIR / MANIFEST_NAME).is_file()]
        if not versions:
            unverified.append(model_dir.name)
            continue
        for version in versions:
            path = model_dir / str(version) / ARTIFACT_DIR / MANIFEST_NAME
            try:
                files = json.loads(path.read_text())["files"]
            except (ValueError, KeyError, OSError):
                problems.append(f"{model_dir.name}: manifest {path.relative_to(repo)} is unreadable or has no file list")
                continue
            for rel, digest in files.items():
                if _is_shared(rel) and version != versions[-1]:
                    continue
                target = model_dir / rel
                shown = f"{model_dir.name}/{rel}"
                if not target.is_file():
                    problems.append(f"{shown} is missing")
                elif sha256_file(target) != digest:
                    problems.append(f"{shown} does not match its manifest (sha256 differs): the file was changed or swapped")
                else:
                    checked += 1
    return VerifyReport(repo=repo, checked_files=checked, problems=tuple(problems), unverified_models=tuple(unverified))


def check_verified(repo: Path) -> VerifyReport:
    """:func:`verify_repository`, raising :class:`TritongenError` naming the first bad file."""
    report = verify_repository(repo)
    if not report.ok:
        raise TritongenError(
            report.problems[0] + (f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""),
            "rebuild the model with tritongen build --force, or restore the original file",
            details="\n".join(report.problems),
        )
    return report
