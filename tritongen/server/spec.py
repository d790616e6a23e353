"""How to serve a repository (:class:`ServeSpec`) and the constants every part of the server package shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cpus import cpus_from_text
from ..errors import TritongenError
from ..fields import check_fields
from ..names import check_host
from ..plan_compat import DEFAULT_NGC_RELEASE, TRITON_IMAGE
from .allocator import check_allocator
from .blas import check_blas_threads

DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}


DEFAULT_IMAGE = TRITON_IMAGE.format(release=DEFAULT_NGC_RELEASE)  # 24.10: Triton 2.51, the server the wheel ships


WHEEL_SERVER_VERSION = "2.51.0"  # nvidia-pytriton 0.7.0


MODEL_CONTROL_MODES = ("none", "explicit", "poll")


# APIs that change or expose server state; restricted to holders of the admin header off loopback.
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")


ADMIN_HEADER = "tritongen-admin-token"


INSTALL_FIX = (
    "pip install 'tritongen[server]' (ships Triton 2.51 in the "
    "nvidia-pytriton wheel) or pass --server-bin /path/to/tritonserver"
)


LOG_TAIL_LINES = 25


POLL_INTERVAL_S = 0.2


def _split_args(value: Any) -> Any:
    """``extra_args`` given as one string (``"--log-verbose 1"``): its words, split as a shell would."""
    import shlex

    if not isinstance(value, str):
        return value
    try:
        return tuple(shlex.split(value))
    except ValueError as exc:
        raise TritongenError(f"extra_args {value[:80]!r} cannot be split ({exc})", "close the quote") from None


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
    # "poll": Triton rescans the repository every poll_interval_s and loads what changed (a new version folder)
    poll_interval_s: int = 1
    log_verbose: int = 0
    extra_args: tuple[str, ...] = ()
    restricted: bool = False  # the admin APIs need the admin header on loopback too (off loopback they always do)
    log_path: Path | None = None  # None: a new file in the temp directory
    # A virtual environment (of this Python's version) whose packages the Python-backend models import, instead of
    # this one: e.g. one with exactly the serving image's packages (tritongen deploy --to docker). Wheel server only.
    python_env: Path | None = None
    # The malloc tritonserver runs with (LD_PRELOAD): "auto" takes jemalloc, else tcmalloc, else the system's; see
    # server/allocator.py for why (memory that load/unload cycles leave behind with glibc's malloc).
    allocator: str = "auto"
    # OPENBLAS_NUM_THREADS for the Python-backend stubs (0: numpy's default, one thread per core; a value of it,
    # GOTO_NUM_THREADS or OMP_NUM_THREADS already in the environment is kept). numpy's OpenBLAS starts its threads
    # and buffers at import, which spin before they sleep: a stub's start measured 0.14-0.18 CPU-s with 1 against
    # 0.30 by default on an idle server, CPU a rollout's switch takes from the clients' cores; the generated
    # models call no BLAS. See server/blas.py.
    stub_blas_threads: int = 1
    # CPU ids tritonserver (and the Python-backend stubs it starts) may run on, e.g. (1, 2, 3) or "1-3"; ():
    # wherever this process may run. Keeps a load generator on the other CPUs from taking the server's time.
    cpus: tuple[int, ...] = ()
    # Serve each model's live version as its rollout record says, where config.pbtxt would serve another (a rollback
    # outlives a restart): pinned in the checked copy before Triton starts (not in poll mode, nor unverified).
    # False: config.pbtxt's versions (a warning names the difference).
    rollout_record: bool = True
    # The spec of a ``docker run`` (serve --docker), for a Docker host that may be another machine: CPU ids are
    # checked for their form, not against this machine's CPUs.
    docker_host: bool = False

    def __post_init__(self) -> None:
        check_fields(
            self,
            "serve",
            # one string of arguments is split as a shell would (as perf's perf_analyzer_args is)
            parse={"cpus": lambda v: cpus_from_text(v, "--cpus", here=not self.docker_host), "extra_args": _split_args},
            skip=("poll_interval_s", "stub_blas_threads"),  # checked below (poll: a whole number of seconds, 2.0 too)
        )
        if self.log_verbose < 0:
            raise TritongenError(f"serve option log_verbose={self.log_verbose} is negative", "pass 0 (off) or more")
        object.__setattr__(self, "repo", Path(self.repo).expanduser().resolve())
        if self.python_env is not None:
            object.__setattr__(self, "python_env", Path(self.python_env).expanduser().absolute())
        if self.server_bin is not None:
            object.__setattr__(self, "server_bin", Path(self.server_bin).expanduser())
        if self.log_path is not None:
            object.__setattr__(self, "log_path", Path(self.log_path).expanduser().resolve())
        object.__setattr__(self, "extra_args", tuple(str(a) for a in self.extra_args))
        check_host(self.host)  # goes onto tritonserver's and docker's command line
        check_allocator(self.allocator)
        check_blas_threads(self.stub_blas_threads)
        if self.model_control not in MODEL_CONTROL_MODES:
            raise TritongenError(
                f"model control mode '{self.model_control}' is not supported",
                f"use one of {', '.join(MODEL_CONTROL_MODES)}",
            )
        interval = self.poll_interval_s
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval < 1 or interval % 1:
            raise TritongenError(
                f"poll interval {self.poll_interval_s} s is not a whole number of seconds from 1",
                "give --poll-interval-s 1 or more (tritonserver's --repository-poll-secs takes whole seconds)",
            )
        object.__setattr__(self, "poll_interval_s", int(self.poll_interval_s))
        for kind in DEFAULT_PORTS:
            port = getattr(self, f"{kind}_port")
            if port is not None and not 0 <= int(port) < 65536:
                raise TritongenError(
                    f"--{kind}-port {port} is not a port number",
                    "use a number from 1 to 65535, or 0 for any free port (left out: the default if free)",
                )
        given = [(kind, getattr(self, f"{kind}_port")) for kind in DEFAULT_PORTS]
        for i, (kind, port) in enumerate(given):
            other = next((k for k, p in given[i + 1 :] if port and p == port), None)
            if other is not None:  # Triton boots, prints its --help and exits; the reason was a 19 KB log's last line
                raise TritongenError(
                    f"--{kind}-port and --{other}-port are both {port}: Triton listens on each port for one protocol",
                    f"give --{other}-port another port (or leave it out: the default, else a free one)",
                )
        if self.ready_timeout_s <= 0:
            raise TritongenError(
                f"ready timeout {self.ready_timeout_s} s is not positive", "give a timeout in seconds above 0"
            )
