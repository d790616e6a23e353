"""The tritonserver on this machine that listens at a URL (found by its port): when it started, its options, and
the repositories it serves; infer and perf read a build from there when run from another folder than serve's."""

from __future__ import annotations

from pathlib import Path

from ..errors import TritongenError


def local_server(url: str) -> tuple[float, dict[str, list[str]], tuple[tuple[Path, Path | None], ...]] | None:
    """The tritonserver at ``url`` on this machine (found by the port it listens on): its start time, its options
    (:func:`~tritongen.server.ports.server_options`) and each repository it serves (Triton takes several), as
    (the repository, the source of the checked copy ``tritongen serve`` serves, where it is such a copy: then the
    source is the repository named); None where there is none or it cannot be read."""
    import psutil

    from ..client import host_port_from_url
    from .ports import server_options, server_pid_at
    from .snapshot import snapshot_source

    try:
        pid = server_pid_at(host_port_from_url(url).split("/", 1)[0])
    except TritongenError:
        return None
    if pid is None:
        return None
    try:
        process = psutil.Process(pid)
        started, options = process.create_time(), server_options(pid)
        if options is None:
            return None
        repos = []
        for named in options.get("--model-repository", []):
            served = Path(named) if Path(named).is_absolute() else Path(process.cwd()) / named
            source = snapshot_source(served)  # tritongen serve loads a checked copy of a repository, made at its start
            repos.append((source or served, source))
    except (psutil.Error, OSError):
        return None
    return started, options, tuple(repos)


def served_repository(repo: Path, name: str, url: str) -> Path:
    """The repository to read model ``name``'s build from: ``repo``, unless it is the default one
    (``model_repository``), does not hold the model, and the local server at ``url`` serves one that does (infer and
    perf from another folder than serve's)."""
    if repo != Path("model_repository") or (repo / name).is_dir():
        return repo
    found = local_server(url)
    holding = [served for served, _ in (found[2] if found is not None else ()) if (served / name).is_dir()]
    return holding[0] if holding else repo
