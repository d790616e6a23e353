"""Boot a real Triton Inference Server on a model repository and wait until every model is READY.

:func:`find_server_binary` locates ``tritonserver`` (``--server-bin``, ``PATH``, or the binary that the
``nvidia-pytriton`` wheel ships, installed by ``pip install 'tritongen[server]'``). For the wheel it also
prepares what the Python backend needs: a backend directory where the stub built for the running Python sits
next to ``libtriton_python.so``, and an environment in which that stub embeds *this* Python and imports
packages (numpy, onnxruntime, ...) from *this* environment.

:func:`server_from_repository` starts the server, bound to ``127.0.0.1`` unless told otherwise, writes its
log to a file, polls the repository index until every model is READY, and turns a failed load into a
:class:`TritongenError` that quotes the server's own error. :class:`RunningServer` stops it again.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import ipaddress
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TritongenError
from .layout import cache_root
from .names import check_host

logger = logging.getLogger(__name__)

DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
DEFAULT_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51, the server the wheel ships
WHEEL_SERVER_VERSION = "2.51.0"  # nvidia-pytriton 0.7.0
MODEL_CONTROL_MODES = ("none", "explicit")
# APIs that change or expose server state; restricted to holders of the admin header off loopback.
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
ADMIN_HEADER = "tritongen-admin-token"
INSTALL_FIX = (
    "pip install 'tritongen[server]' (ships Triton 2.51 in the "
    "nvidia-pytriton wheel) or pass --server-bin /path/to/tritonserver"
)
LOG_TAIL_LINES = 25
POLL_INTERVAL_S = 0.2


@dataclass(frozen=True)
class ServeSpec:
    """How to serve a repository. Ports left as None take 8000/8001/8002 when free, else a free port."""

    repo: Path
    server_bin: Path | None = None
    host: str = "127.0.0.1"
    http_port: int | None = None
    grpc_port: int | None = None
    metrics_port: int | None = None
    ready_timeout_s: float = 180.0
    model_control: str = "none"  # "explicit" loads every model at start (--load-model=*), then allows load/unload
    log_verbose: int = 0
    extra_args: tuple[str, ...] = ()
    log_path: Path | None = None  # None: a new file in the temp directory
    # A virtual environment (of this Python's version) whose packages the Python-backend models import, instead of
    # this one: e.g. one with exactly the serving image's packages (tritongen deploy --to docker). Wheel server only.
    python_env: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "repo", Path(self.repo).expanduser().resolve())
        if self.python_env is not None:
            object.__setattr__(self, "python_env", Path(self.python_env).expanduser().absolute())
        if self.server_bin is not None:
            object.__setattr__(self, "server_bin", Path(self.server_bin).expanduser())
        if self.log_path is not None:
            object.__setattr__(self, "log_path", Path(self.log_path).expanduser().resolve())
        object.__setattr__(self, "extra_args", tuple(str(a) for a in self.extra_args))
        check_host(self.host)  # goes onto tritonserver's and docker's command line
        if self.model_control not in MODEL_CONTROL_MODES:
            raise TritongenError(
                f"model control mode '{self.model_control}' is not supported",
                f"use one of {', '.join(MODEL_CONTROL_MODES)}",
            )
        for kind in DEFAULT_PORTS:
            port = getattr(self, f"{kind}_port")
            if port is not None and not 0 < int(port) < 65536:
                raise TritongenError(
                    f"--{kind}-port {port} is not a port number",
                    "use a number from 1 to 65535, or leave it out to pick one",
                )
        if self.ready_timeout_s <= 0:
            raise TritongenError(
                f"ready timeout {self.ready_timeout_s} s is not positive", "give a timeout in seconds above 0"
            )


@dataclass(frozen=True)
class ServerInstall:
    """A tritonserver binary and what it needs to run: backend directory, extra environment variables."""

    binary: Path
    source: str  # "argument" (--server-bin), "path" (tritonserver on PATH) or "wheel" (nvidia-pytriton)
    backend_dir: Path | None = None
    cache_dir: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # set on top of os.environ (PATH/LD_LIBRARY_PATH prepended)
    version: str | None = None  # known for the wheel only
    notes: tuple[str, ...] = ()

    def environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment to start the server with: ``base`` (default os.environ) plus :attr:`env`."""
        env = dict(os.environ if base is None else base)
        for key, value in self.env.items():
            if key in ("PATH", "LD_LIBRARY_PATH") and env.get(key):
                env[key] = f"{value}{os.pathsep}{env[key]}"
            else:
                env[key] = value
        return env

    def args(self) -> list[str]:
        out = []
        if self.backend_dir is not None:
            out.append(f"--backend-directory={self.backend_dir}")
        if self.cache_dir is not None:
            out.append(f"--cache-directory={self.cache_dir}")
        return out


# --------------------------------------------------------------------------------------------- finding


def find_server_binary(server_bin: Path | str | None = None, python_env: Path | None = None) -> ServerInstall:
    """``server_bin`` if given, else ``tritonserver`` on PATH, else the nvidia-pytriton wheel's server.

    ``python_env``: the virtual environment the wheel server's Python-backend models run in (default: this one).
    """
    wheel_root = _wheel_root()
    if python_env is not None:
        if server_bin is not None or shutil.which("tritonserver") or wheel_root is None:
            raise TritongenError(
                "a Python environment for the Python-backend models can "
                "only be given to the nvidia-pytriton wheel's server",
                f"{INSTALL_FIX.split(' or ')[0]}, and leave --server-bin out (and tritonserver off PATH)",
            )
        return _wheel_install(wheel_root, python_env)
    if server_bin is not None:
        path = Path(server_bin).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            what = "does not exist" if not path.exists() else "is not an executable file"
            raise TritongenError(
                f"--server-bin {path} {what}",
                f"pass the path of a tritonserver binary, or {INSTALL_FIX.split(' or ')[0]} and leave --server-bin out",
            )
        if (
            wheel_root is not None
            and path.resolve() == (wheel_root / "tritonserver" / "bin" / "tritonserver").resolve()
        ):
            return _wheel_install(wheel_root)
        return ServerInstall(binary=path.resolve(), source="argument")
    on_path = shutil.which("tritonserver")
    if on_path:
        return ServerInstall(binary=Path(on_path).resolve(), source="path")
    if wheel_root is not None and (wheel_root / "tritonserver" / "bin" / "tritonserver").is_file():
        return _wheel_install(wheel_root)
    raise TritongenError("no tritonserver found (not on PATH, nvidia-pytriton not installed)", INSTALL_FIX)


def _wheel_root() -> Path | None:
    """The installed ``pytriton`` package folder, found without importing it."""
    try:
        found = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0])


def _wheel_install(root: Path, python_env: Path | None = None) -> ServerInstall:
    server_dir = root / "tritonserver"
    libs_dir = root.parent / "nvidia_pytriton.libs"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_dir / "python_backend_stubs" / version / "triton_python_backend_stub"
    backend_src = server_dir / "backends" / "python"
    if not stub.is_file():
        have = sorted(p.name for p in (server_dir / "python_backend_stubs").glob("*"))
        raise TritongenError(
            "the nvidia-pytriton wheel has no Python backend stub for "
            f"Python {version} (it has {', '.join(have) or 'none'})",
            f"run tritongen from a Python {' / '.join(have) or '3.10-3.12'} environment, or pass --server-bin",
        )
    env_bin, libpython, notes = _python_environment(python_env)
    cache = cache_root() / "backends" / _digest(stub, backend_src / "libtriton_python.so", sys.executable, libpython)
    backend_dir = cache / "backends"
    _prepare_backend_dir(backend_dir / "python", backend_src, stub)
    # The stub links libpython3.X.so.1.0; point the loader at this interpreter's own copy so that the embedded
    # Python is the same build as the one whose standard library it reads.
    ld_dirs = []
    if libpython is not None:
        lib_dir = cache / "libpython"
        _link(lib_dir / libpython.name, libpython)
        ld_dirs.append(str(lib_dir))
    ld_dirs.append(str(libs_dir))
    # The embedded interpreter finds its prefix by searching PATH for `python3`; with this environment's bin/
    # first it reads this environment's pyvenv.cfg and site-packages, as `python3` here would.
    env = {"LD_LIBRARY_PATH": os.pathsep.join(ld_dirs), "PATH": str(env_bin)}
    if not (env_bin / "python3").exists():
        env["PYTHONHOME"] = sys.base_prefix
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p.endswith("-packages"))
        notes = notes + (f"{env_bin} has no python3; Python-backend models get PYTHONHOME/PYTHONPATH instead",)
    caches = server_dir / "caches"
    return ServerInstall(
        binary=server_dir / "bin" / "tritonserver",
        source="wheel",
        backend_dir=backend_dir,
        cache_dir=caches if caches.is_dir() else None,
        env=env,
        version=WHEEL_SERVER_VERSION,
        notes=notes,
    )


def _python_environment(python_env: Path | None = None) -> tuple[Path, Path | None, tuple[str, ...]]:
    """This interpreter's bin/ folder (not resolved: a venv's bin/ holds symlinks), or ``python_env``'s, and libpython.

    The stub embeds this interpreter's libpython, so ``python_env`` must be a virtual environment of the same
    Python version (``python -m venv``); the embedded interpreter then reads its pyvenv.cfg and site-packages.
    """
    env_bin = Path(sys.executable).absolute().parent if python_env is None else _venv_bin(python_env)
    notes: tuple[str, ...] = ()
    libpython = None
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and soname and (Path(libdir) / soname).is_file():
        libpython = Path(libdir) / soname
    else:
        notes = (
            "this Python has no shared libpython; the Python-backend "
            "stub uses the system's libpython of the same version",
        )
    return env_bin, libpython, notes


def _venv_bin(python_env: Path) -> Path:
    cfg = python_env / "pyvenv.cfg"
    stub_python = f"{sys.version_info.major}.{sys.version_info.minor}"
    fix = f"create it with `{Path(sys.executable).name} -m venv {python_env}` (Python {stub_python}, the stub's)"
    if not cfg.is_file() or not (python_env / "bin" / "python3").exists():
        raise TritongenError(f"{python_env} is not a virtual environment (no pyvenv.cfg or bin/python3)", fix)
    settings = dict(line.split("=", 1) for line in cfg.read_text().splitlines() if "=" in line)
    settings = {k.strip(): v.strip() for k, v in settings.items()}
    version = settings.get("version_info") or settings.get("version") or ""
    if version.split(".")[:2] != [str(sys.version_info.major), str(sys.version_info.minor)]:
        raise TritongenError(
            f"{python_env} is a Python {version or '?'} environment; the Python-backend stub "
            f"embeds Python {stub_python}",
            fix,
        )
    return python_env / "bin"


def _digest(*parts: Path | str | None) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode())
        if isinstance(part, Path) and part.exists():
            st = part.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _prepare_backend_dir(target: Path, backend_src: Path, stub: Path) -> None:
    """Copy the Python backend and the matching stub into ``target`` (atomically; safe to race)."""
    if (target / "triton_python_backend_stub").is_file() and (target / "libtriton_python.so").is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".python-", dir=target.parent))
    try:
        for item in backend_src.iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
        shutil.copy2(stub, tmp / "triton_python_backend_stub")
        try:
            tmp.rename(target)
        except OSError:  # another process made it first
            if not (target / "triton_python_backend_stub").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


# --------------------------------------------------------------------------------------------- running


class RunningServer:
    """A started tritonserver whose models are all READY. Use as a context manager, or call :meth:`stop`."""

    def __init__(
        self,
        spec: ServeSpec,
        install: ServerInstall,
        process: subprocess.Popen,
        command: list[str],
        ports: Mapping[str, int],
        log_path: Path,
        admin_token: str | None,
    ) -> None:
        self.spec = spec
        self.install = install
        self.process = process
        self.command = command
        self.ports = dict(ports)
        self.log_path = log_path
        self.temporary_log = spec.log_path is None  # a log in the temp directory: removed after a clean stop
        self.admin_token = admin_token
        self.models: tuple[str, ...] = ()
        self.boot_s: float | None = None
        connect = _connect_host(spec.host)
        self.http_url = f"{connect}:{self.ports['http']}"
        self.grpc_url = f"{connect}:{self.ports['grpc']}"
        self.metrics_url = f"{connect}:{self.ports['metrics']}"
        _RUNNING.add(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def admin_headers(self, protocol: str = "http") -> dict[str, str]:
        """Headers that unlock the restricted APIs (empty on loopback, where nothing is restricted).

        Triton 2.51 expects the gRPC header with a ``triton-grpc-protocol-`` prefix.
        """
        if not self.admin_token:
            return {}
        key = f"triton-grpc-protocol-{ADMIN_HEADER}" if protocol == "grpc" else ADMIN_HEADER
        return {key: self.admin_token}

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.log_path, lines)

    def stop(self, timeout_s: float = 30.0, keep_log: bool = False) -> int:
        """SIGINT (Triton unloads models and exits), then SIGTERM, then SIGKILL to the whole process group.

        Whatever is left of the server's process group once the server is gone (Python-backend stubs of a
        server that crashed or was killed: they outlive it) is killed too. A log tritongen put in the temp
        directory is removed when the server exited cleanly, unless ``keep_log``; one named by
        ``ServeSpec.log_path`` is always kept.
        """
        _RUNNING.discard(self)
        proc = self.process
        if proc.poll() is None:
            _signal(proc, signal.SIGINT, group=False)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGTERM, group=True)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    _signal(proc, signal.SIGKILL, group=True)
                    proc.wait()
        _signal(proc, signal.SIGKILL, group=True)  # the group outlives its leader only through orphaned stubs
        if self.temporary_log and not keep_log and proc.returncode == 0:
            self.log_path.unlink(missing_ok=True)
        return proc.returncode

    def wait(self) -> int:
        """Block until the server exits; Ctrl-C stops it cleanly. Returns the server's exit code."""
        try:
            return self.process.wait()
        except KeyboardInterrupt:
            return self.stop()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else f"exited {self.process.returncode}"
        return (
            f"RunningServer(pid={self.pid}, {state}, http={self.http_url}, "
            f"grpc={self.grpc_url}, models={list(self.models)})"
        )


_RUNNING: weakref.WeakSet[RunningServer] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_RUNNING):
        try:
            server.stop(timeout_s=10)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


def _die_with_parent():
    """A preexec_fn asking Linux to SIGTERM the server when this process dies (even by SIGKILL), so no server
    outlives a killed test run. Only from the main thread: the signal fires when the *thread* that started it
    exits."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _signal(proc: subprocess.Popen, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, sig)  # the server leads its own session: this reaches the Python stubs too
        else:
            proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


def _check_plans(repo: Path, install: ServerInstall) -> None:
    """Refuse TensorRT plans built with another TensorRT than this server's (when its version is known)."""
    from .plan_compat import plan_problems_from_repository, triton_version_from_environment

    version = install.version if install.source == "wheel" else triton_version_from_environment()
    problems = plan_problems_from_repository(repo, version) if version else {}
    if problems:
        lines = [f"{model}: {p}" for model, found in problems.items() for p in found]
        raise TritongenError(
            f"{len(lines)} TensorRT plan(s) in {repo} cannot load in Triton {version}: {lines[0]}",
            "use the Triton image named above, or rebuild the plans "
            "with `tritongen engine` in the matching TensorRT image",
            details="\n".join(lines),
        )


def server_from_repository(spec: ServeSpec) -> RunningServer:
    """Start tritonserver on ``spec.repo`` and return once every model in the repository is READY."""
    if not spec.repo.is_dir():
        raise TritongenError(
            f"model repository {spec.repo} does not exist", "build one first (tritongen build) or pass the right folder"
        )
    install = find_server_binary(spec.server_bin, spec.python_env)
    _check_numpy(spec.repo, install, python_env=spec.python_env)
    _check_plans(spec.repo, install)
    auto_ports = all(getattr(spec, f"{k}_port") is None for k in DEFAULT_PORTS)
    attempts = 3 if auto_ports else 1
    for attempt in range(attempts):
        try:
            return _start(spec, install)
        except _PortRace:
            if attempt == attempts - 1:
                raise TritongenError(
                    "tritonserver could not bind its ports: another process took them",
                    "pass free ports with --http-port/--grpc-port/--metrics-port",
                ) from None
    raise AssertionError("unreachable")


class _PortRace(Exception):
    pass


def _start(spec: ServeSpec, install: ServerInstall) -> RunningServer:
    ports = _choose_ports(spec)
    admin_token = None if is_loopback(spec.host) else secrets.token_urlsafe(24)
    command = [str(install.binary), *server_args(spec, ports, install, admin_token)]
    if spec.log_path is not None:
        log_path = spec.log_path
    else:
        fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "wb") as log:
        shown = shlex.join(command).replace(admin_token, "***") if admin_token else shlex.join(command)
        log.write(f"$ {shown}\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=install.environ(),
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        except OSError as e:
            raise TritongenError(f"could not start {install.binary}: {e.strerror or e}", INSTALL_FIX) from None
    server = RunningServer(spec, install, process, command, ports, log_path, admin_token)
    try:
        server.models = _wait_ready(server, deadline=started + spec.ready_timeout_s)
    except BaseException:
        server.stop(timeout_s=10, keep_log=True)  # the error names the log
        raise
    server.boot_s = time.monotonic() - started
    logger.info(
        "tritonserver pid %d ready in %.1f s: %s (log %s)",
        server.pid,
        server.boot_s,
        ", ".join(server.models),
        log_path,
    )
    return server


def server_args(
    spec: ServeSpec,
    ports: Mapping[str, int],
    install: ServerInstall | None = None,
    admin_token: str | None = None,
    repo: str | None = None,
) -> list[str]:
    """tritonserver's command-line arguments (without the binary) for ``spec`` on ``ports``."""
    args = [f"--model-repository={repo or spec.repo}"]
    for kind in ("http", "grpc", "metrics"):
        args += [f"--{kind}-address={spec.host}", f"--{kind}-port={ports[kind]}"]
    if install is not None:
        args += install.args()
        # Keep serving after a failed load so the repository index can say why; we stop it ourselves.
        args.append("--exit-on-error=false")
    if spec.model_control == "explicit":
        args += ["--model-control-mode=explicit", "--load-model=*"]
    if spec.log_verbose:
        args.append(f"--log-verbose={spec.log_verbose}")
    if admin_token:
        # Triton 2.51 syntax: <apis>:<header>=<value>; gRPC calls the option "restricted-protocol".
        restriction = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={admin_token}"
        args += [f"--http-restricted-api={restriction}", f"--grpc-restricted-protocol={restriction}"]
    return args + list(spec.extra_args)


def _check_numpy(
    repo: Path, install: ServerInstall, numpy_version: str | None = None, python_env: Path | None = None
) -> None:
    """Triton 2.51's Python backend answers with empty or mis-sized outputs under numpy 2: refuse up front.

    Only for the wheel's server, whose Python-backend models import numpy from this environment.
    """
    if install.source != "wheel" or not _has_python_models(repo):
        return
    if numpy_version is None:
        from importlib.metadata import PackageNotFoundError, distributions, version

        if python_env is not None:
            site = [str(p) for p in python_env.glob("lib/python3*/site-packages")]
            found = [d.version for d in distributions(path=site) if (d.metadata["Name"] or "").lower() == "numpy"]
            if not found:
                return
            numpy_version = found[0]
        else:
            try:
                numpy_version = version("numpy")
            except PackageNotFoundError:
                return
    if int(numpy_version.split(".")[0]) >= 2:
        raise TritongenError(
            f"numpy {numpy_version} is installed in {python_env or sys.prefix}, and the Python backend of Triton "
            f"{install.version} "
            "returns empty or wrong-sized outputs with numpy 2",
            "pip install 'numpy<2' in this environment (Python-backend models import numpy from it)",
        )


def _has_python_models(repo: Path) -> bool:
    pattern = re.compile(r'^\s*backend\s*:\s*"python"', re.MULTILINE)
    for config in repo.glob("*/config.pbtxt"):
        try:
            if pattern.search(config.read_text(errors="replace")):
                return True
        except OSError:
            continue
    return False


def _wait_ready(server: RunningServer, deadline: float) -> tuple[str, ...]:
    """Poll the repository index until every model is READY; raise with the server's reasons otherwise."""
    from .client import Triton

    with Triton(server.http_url, "http", timeout_s=5, headers=server.admin_headers("http")) as triton:
        return _poll_ready(server, triton, deadline)


def _poll_ready(server: RunningServer, triton, deadline: float) -> tuple[str, ...]:
    while True:
        code = server.process.poll()
        if code is not None:
            _raise_exited(server, code)
        index = _repository_index(triton)
        if index is not None:
            states: dict[str, list[dict[str, str]]] = {}
            for entry in index:
                states.setdefault(entry.get("name", "?"), []).append(entry)
            if not states:
                raise TritongenError(
                    f"the model repository {server.spec.repo} has no models",
                    "build a model into it first (tritongen build)",
                )
            pending = [n for n, es in states.items() if any(e.get("state") in ("LOADING", "UNLOADING") for e in es)]
            if not pending:
                failed = {n: es for n, es in states.items() if not any(e.get("state") == "READY" for e in es)}
                if failed:
                    _raise_failed(server, failed)
                return tuple(sorted(states))
        if time.monotonic() > deadline:
            raise TritongenError(
                f"tritonserver did not get all models ready within {server.spec.ready_timeout_s:g} s",
                f"raise --ready-timeout, or see the server log {server.log_path}",
                details=server.log_tail(),
            )
        time.sleep(POLL_INTERVAL_S)


def _repository_index(triton) -> list[dict] | None:
    """The repository index, or None while the server does not answer yet."""
    try:
        return triton.repository_index()
    except TritongenError:
        return None


def _raise_failed(server: RunningServer, failed: Mapping[str, list[dict]]) -> None:
    reasons = {}
    log_reasons = _log_load_errors(server.log_path)
    for name, entries in failed.items():
        reason = next((e.get("reason") for e in entries if e.get("reason")), "") or log_reasons.get(name, "")
        state = entries[0].get("state") or "not loaded"
        reasons[name] = reason or state
    names = ", ".join(f"'{n}'" for n in reasons)
    first_name, first_reason = next(iter(reasons.items()))
    first_line = first_reason.strip().splitlines()[0] if first_reason.strip() else "no reason given"
    details = "\n\n".join(f"{name}: {reason.strip()}" for name, reason in reasons.items())
    server.stop(timeout_s=10, keep_log=True)  # the error below names the log
    raise TritongenError(
        f"model {names} failed to load in tritonserver ({first_name}: {first_line})"
        if len(reasons) == 1
        else f"models {names} failed to load in tritonserver ({first_name}: {first_line})",
        f"fix the model and run again; full server log: {server.log_path}",
        details=details,
    )


def _raise_exited(server: RunningServer, code: int) -> None:
    tail = server.log_tail()
    errors = _log_errors(server.log_path)
    if any(
        re.search(r"address already in use|already in use|failed to start (http|grpc|metrics)", e, re.IGNORECASE)
        for e in errors
    ):
        if all(getattr(server.spec, f"{k}_port") is None for k in DEFAULT_PORTS):
            raise _PortRace()
    load_errors = _log_load_errors(server.log_path)
    if load_errors:
        name, reason = next(iter(load_errors.items()))
        problem = f"model '{name}' failed to load and tritonserver exited ({reason.strip().splitlines()[0]})"
    elif errors:
        problem = f"tritonserver exited with code {code} before its models were ready ({errors[-1]})"
    else:
        problem = f"tritonserver exited with code {code} before its models were ready"
    details = "\n".join(errors + ["", f"last lines of {server.log_path}:", tail]) if errors else tail
    raise TritongenError(problem, f"see the server log below, or all of it in {server.log_path}", details=details)


_ERROR_LINE_RE = re.compile(
    r"^E\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
    r"\"?(?P<msg>.*?)\"?$|^(?P<plain>(error|.*unrecognized option|.*invalid argument).*)$",
    re.IGNORECASE | re.MULTILINE,
)


def _log_errors(log_path: Path, limit: int = 10) -> list[str]:
    """The server's own error lines (``E1122 ...]`` or ``error: ...``), without the harmless NVML/DCGM noise."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return []
    found = []
    for m in _ERROR_LINE_RE.finditer(text):
        line = (m["msg"] or m["plain"] or "").strip()
        if line and not re.search(r"NVML|DCGM|CudaDriverHelper", line):
            found.append(line.replace("\\n", " ")[:500])
    return found[-limit:]


_LOAD_ERROR_RE = re.compile(r"failed to load '(?P<name>[^']+)' version \d+: (?P<reason>.*?)\"?$", re.MULTILINE)


def _log_load_errors(log_path: Path) -> dict[str, str]:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return {}
    return {m["name"]: m["reason"].replace("\\n", "\n") for m in _LOAD_ERROR_RE.finditer(text)}


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------- ports


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (there, nothing restricts the model-control APIs)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _connect_host(host: str) -> str:
    """Where a client on this machine connects to reach a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (connections left in TIME_WAIT do not count)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _choose_ports(spec: ServeSpec) -> dict[str, int]:
    chosen: dict[str, int] = {}
    holders = []
    try:
        for kind, default in DEFAULT_PORTS.items():
            port = getattr(spec, f"{kind}_port")
            if port is not None:
                if not port_is_free(spec.host, port):
                    raise TritongenError(
                        f"{kind} port {port} on {spec.host} is already in use",
                        f"stop what listens there, pass another --{kind}-port, or leave it out to pick a free one",
                    )
                chosen[kind] = int(port)
            elif default not in chosen.values() and port_is_free(spec.host, default):
                chosen[kind] = default
            else:
                s = socket.socket(_family(spec.host), socket.SOCK_STREAM)
                holders.append(s)  # held until all three are picked, so they differ
                s.bind((spec.host, 0))
                chosen[kind] = s.getsockname()[1]
    finally:
        for s in holders:
            s.close()
    return chosen


# --------------------------------------------------------------------------------------------- docker


def docker_command(spec: ServeSpec, image: str = DEFAULT_IMAGE, admin_token: str | None = None) -> str:
    """The ``docker run`` line that serves ``spec.repo`` with the NGC Triton image on a GPU host."""
    ports = {k: getattr(spec, f"{k}_port") or d for k, d in DEFAULT_PORTS.items()}
    publish = []
    for kind, container_port in DEFAULT_PORTS.items():
        bind = "" if spec.host in ("", "0.0.0.0", "::") else f"{_connect_host(spec.host)}:"
        publish += ["-p", f"{bind}{ports[kind]}:{container_port}"]
    if not is_loopback(spec.host) and admin_token is None:
        admin_token = secrets.token_urlsafe(24)
    token = None if is_loopback(spec.host) else admin_token
    # Inside the container the server listens on all interfaces; docker's -p decides who can reach it.
    inner = ServeSpec(
        repo=spec.repo,
        host="0.0.0.0",
        model_control=spec.model_control,
        log_verbose=spec.log_verbose,
        extra_args=spec.extra_args,
    )
    server = server_args(inner, DEFAULT_PORTS, install=None, admin_token=token, repo="/models")
    server = [a for a in server if not re.match(r"--(http|grpc|metrics)-(address|port)=", a)]
    # The Python backend moves tensors through /dev/shm; docker's 64 MB default is too small for real models.
    # Read-only: the server cannot change the verified files (nor write __pycache__/ beside model.py).
    command = [
        "docker",
        "run",
        "--gpus",
        "all",
        "--rm",
        "--shm-size=1g",
        *publish,
        "-v",
        f"{spec.repo}:/models:ro",
        image,
        "tritonserver",
        *server,
    ]
    return shlex.join(command)
