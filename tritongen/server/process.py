"""The tritonserver process: start it (:func:`server_from_repository`), watch it, stop it and its stubs."""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..client import ServerAddress
from ..cpus import affinity_preexec, cpus_text
from ..errors import TritongenError
from ..names import shell_special_chars
from .admin import SERVER_HOME_PREFIX, admin_headers, write_admin_key, write_signing_key
from .allocator import allocator_from_library, library_from_allocator, preload_environ
from .blas import blas_environ
from .install import ServerInstall, check_numpy, check_plans, find_server_binary
from .ports import choose_ports, connect_host, is_loopback
from .readiness import PortRace, crash_words, stop_words, tail_of, wait_ready
from .spec import ADMIN_HEADER, DEFAULT_PORTS, INSTALL_FIX, LOG_TAIL_LINES, RESTRICTED_APIS, ServeSpec

logger = logging.getLogger(__name__)


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
        allocator: Path | None = None,
        stub_blas: str = "",
    ) -> None:
        self.spec = spec
        self.stub_blas = stub_blas  # what the Python-backend stubs' OpenBLAS runs with, e.g. "OPENBLAS_NUM_THREADS=1"
        self.allocator_library = allocator  # preloaded into tritonserver; None: the system's malloc
        self.allocator = allocator_from_library(allocator)
        self.install = install
        self.process = process
        self.command = command
        self.ports = dict(ports)
        self.log_path = log_path
        self.temporary_log = spec.log_path is None  # a log in the temp directory: removed after a clean stop
        self.admin_token = admin_token
        self.models: tuple[str, ...] = ()
        self.interrupted = False  # set when Ctrl-C (or SIGTERM, within stop_on_sigterm()) ended wait()
        self.boot_s: float | None = None
        self.workdir: Path | None = None  # the empty folder it runs in, in its private folder (see _start)
        self.checked_poll: Any = None  # tritongen.server.snapshot.CheckedPoll where serve polls for it
        self.rollout_notes: tuple[str, ...] = ()  # the recorded live versions serve pinned in its copy (or not)
        # run once, in order, when the server has stopped: tritongen.serve's poll thread, then its checked copy
        self.cleanups: list[Callable[[], Any]] = []
        self.owner: Any = None  # what started it (tritongen.serve's context manager), kept alive as long as it
        connect = connect_host(spec.host)
        # host:port, each knowing its protocol: infer(url=server.http_url) speaks HTTP without protocol="http"
        self.http_url = ServerAddress(f"{connect}:{self.ports['http']}", "http")
        self.grpc_url = ServerAddress(f"{connect}:{self.ports['grpc']}", "grpc")
        self.metrics_url = f"{connect}:{self.ports['metrics']}"
        _RUNNING.add(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def admin_headers(self, protocol: str = "http") -> dict[str, str]:
        """Headers that unlock the restricted APIs (empty on loopback, where nothing is restricted unless
        ``ServeSpec.restricted``).

        Triton 2.51 expects the gRPC header with a ``triton-grpc-protocol-`` prefix.
        """
        return admin_headers(self.admin_token, protocol)

    def is_running(self) -> bool:
        return self.process.poll() is None

    def crash(self) -> str:
        """Empty while the server runs; once it is gone, how it ended: its exit (a signal by name) and its log's own
        last word on it, e.g. "killed by signal 6 (SIGABRT); its log: terminate called after throwing an instance
        of 'boost::interprocess::lock_exception'" (:func:`crash_words`)."""
        return crash_words(self.process.poll(), self.log_path)

    def stop_words(self) -> str:
        """How the server ended after a stop that was asked for (:func:`stop_words`); empty while it runs."""
        code = self.process.poll()
        return "" if code is None else stop_words(code, self.log_path)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail_of(self.log_path, lines)

    def stop(self, timeout_s: float = 30.0, keep_log: bool = False) -> int:
        """SIGINT (Triton unloads models and exits), then SIGTERM, then SIGKILL to the whole process group.

        Whatever is left of the server's process group once the server is gone (Python-backend stubs of a
        server that crashed or was killed: they outlive it) is killed too. A log tritongen put in the temp
        directory is removed when the server exited cleanly, unless ``keep_log``; one named by
        ``ServeSpec.log_path`` is always kept.
        """
        proc = self.process
        try:
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
        finally:  # a Ctrl-C while it unloads (pressed again and again) ends it now, and nothing is left behind
            if proc.poll() is None:
                _signal(proc, signal.SIGKILL, group=True)
                proc.wait()
            _signal(proc, signal.SIGKILL, group=True)  # the group outlives its leader only through orphaned stubs
            if self.temporary_log and not keep_log and proc.returncode == 0:
                self.log_path.unlink(missing_ok=True)
            elif self.temporary_log and not keep_log:  # kept for what it says: named, or nobody would find it
                logger.warning("tritonserver ended with code %s; its log is kept: %s", proc.returncode, self.log_path)
            if self.workdir is not None:  # and its key beside it
                shutil.rmtree(self.workdir.parent, ignore_errors=True)
            while self.cleanups:
                self.cleanups.pop(0)()
            _RUNNING.discard(self)  # only now: until it is gone, the exit-time hook still stops it
        return proc.returncode

    def wait(self) -> int:
        """Block until the server exits; Ctrl-C stops it cleanly (``interrupted`` tells which). Returns the server's
        exit code."""
        try:
            return self.process.wait()
        except KeyboardInterrupt:
            self.interrupted = True
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


def server_from_repository(spec: ServeSpec, *, signing_key: bytes | None = None) -> RunningServer:
    """Start tritonserver on ``spec.repo`` and return once every model in the repository is READY.
    ``signing_key``: the public key (PEM) the repository's signature was checked with, kept in the server's private
    folder for tritongen's commands that load models into it
    (:meth:`tritongen.server.admin.LocalServer.signing_key`)."""
    if not spec.repo.is_dir():
        raise TritongenError(
            f"model repository {spec.repo} does not exist", "build one first (tritongen build) or pass the right folder"
        )
    bad = shell_special_chars(str(spec.repo))
    if bad:
        raise TritongenError(
            f"the model repository path {ascii(str(spec.repo))} holds {', '.join(map(repr, bad))}: Triton's Python "
            "backend starts each model's stub through a shell that splits or runs them",
            "serve it checked (tritongen serve; tritongen.serve without verify=False: a private copy of it is "
            "served from the temp folder, $TMPDIR, whose path must hold none either), or move it to a path of "
            "letters, digits, '_', '-', '.' and '/'",
        )
    install = find_server_binary(spec.server_bin, spec.python_env)
    check_numpy(spec.repo, install, python_env=spec.python_env)
    check_plans(spec.repo, install)
    auto_ports = all(getattr(spec, f"{k}_port") is None for k in DEFAULT_PORTS)
    attempts = 3 if auto_ports else 1
    for attempt in range(attempts):
        try:
            return _start(spec, install, signing_key)
        except PortRace:
            if attempt == attempts - 1:
                raise TritongenError(
                    "tritonserver could not bind its ports: another process took them",
                    "pass free ports with --http-port/--grpc-port/--metrics-port",
                ) from None
    raise AssertionError("unreachable")


def _start(spec: ServeSpec, install: ServerInstall, signing_key: bytes | None = None) -> RunningServer:
    ports = choose_ports(spec)
    # An open model-control API runs whatever model a request hands it, for any process on a loopback address too:
    # explicit model control gets a key (tritongen.server.admin), as every address but loopback does. (It is on
    # tritonserver's command line, which other users can read unless /proc is mounted hidepid=2.)
    open_control = spec.model_control == "explicit"
    admin_token = (
        None if is_loopback(spec.host) and not spec.restricted and not open_control else secrets.token_urlsafe(24)
    )
    command = [str(install.binary), *server_args(spec, ports, install, admin_token)]
    allocator = library_from_allocator(spec.allocator)
    environ, stub_blas = blas_environ(preload_environ(install.environ(), allocator), spec.stub_blas_threads)
    if spec.log_path is not None:
        log_path = spec.log_path
    else:
        fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # The server runs in an empty folder of its own: the Python-backend stub imports from its working directory
    # first, so a json.py (or numpy/, ...) in the folder serve was started from would run inside the server,
    # outside every check of the repository.
    home = Path(tempfile.mkdtemp(prefix=SERVER_HOME_PREFIX))  # mode 0700: this user's only
    workdir = home / "cwd"
    try:  # removed again with its key if the server does not start
        workdir.mkdir(mode=0o700)
        if admin_token:
            write_admin_key(home, admin_token)  # for tritongen's own commands on this machine (rollout, tune)
        if signing_key is not None:
            write_signing_key(home, signing_key)  # what they hold the files they load to
        started = time.monotonic()
        try:
            log = open(log_path, "wb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise TritongenError(
                f"cannot write the server log {log_path}: {exc.strerror or exc}", "pass a file path you can write"
            ) from None
        with log:
            shown = shlex.join(command).replace(admin_token, "***") if admin_token else shlex.join(command)
            preload = f"LD_PRELOAD={allocator} " if allocator is not None else ""
            pin = f"taskset -c {cpus_text(spec.cpus)} " if spec.cpus else ""
            log.write(f"$ {preload}{pin}{shown}\n".encode())
            log.flush()
            try:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=environ,
                    cwd=workdir,
                    start_new_session=True,
                    preexec_fn=affinity_preexec(spec.cpus, then=_die_with_parent()),
                )
            except OSError as e:
                raise TritongenError(f"could not start {install.binary}: {e.strerror or e}", INSTALL_FIX) from None
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        if spec.log_path is None:  # a log of tritongen's own that names no server
            log_path.unlink(missing_ok=True)
        raise
    server = RunningServer(spec, install, process, command, ports, log_path, admin_token, allocator, stub_blas)
    server.workdir = workdir
    try:
        server.models = wait_ready(server, deadline=started + spec.ready_timeout_s)
    except PortRace:
        server.stop(timeout_s=10)
        if server.temporary_log:  # another start on other ports follows: this attempt's log names nothing
            log_path.unlink(missing_ok=True)
        raise
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while it booted: asked for, and nothing names the log
        server.stop(timeout_s=10)
        if server.temporary_log:
            log_path.unlink(missing_ok=True)
        raise
    except BaseException:
        server.stop(timeout_s=10, keep_log=True)  # the error names the log
        raise
    server.boot_s = time.monotonic() - started
    logger.info(
        "tritonserver pid %d ready in %.1f s (malloc: %s; stub BLAS: %s): %s (log %s)",
        server.pid,
        server.boot_s,
        server.allocator,
        stub_blas,
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
    elif spec.model_control == "poll":
        args += ["--model-control-mode=poll", f"--repository-poll-secs={spec.poll_interval_s}"]
    if spec.log_verbose:
        args.append(f"--log-verbose={spec.log_verbose}")
    if admin_token:
        # Triton 2.51 syntax: <apis>:<header>=<value>; gRPC calls the option "restricted-protocol".
        restriction = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={admin_token}"
        args += [f"--http-restricted-api={restriction}", f"--grpc-restricted-protocol={restriction}"]
    return args + list(spec.extra_args)
