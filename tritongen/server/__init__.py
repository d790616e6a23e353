"""Boot a real Triton Inference Server on a model repository and wait until every model is READY.

:func:`find_server_binary` (:mod:`.install`) locates ``tritonserver`` (``--server-bin``, ``PATH``, or the binary
that the ``nvidia-pytriton`` wheel ships, installed by ``pip install 'tritongen[server]'``). For the wheel it also
prepares what the Python backend needs: a backend directory where the stub built for the running Python sits
next to ``libtriton_python.so``, and an environment in which that stub embeds *this* Python and imports
packages (numpy, onnxruntime, ...) from *this* environment.

:func:`server_from_repository` (:mod:`.process`) starts the server, bound to ``127.0.0.1`` unless told otherwise
(:mod:`.ports`), writes its log to a file, polls the repository index until every model is READY
(:mod:`.readiness`), and turns a failed load into a :class:`TritongenError` that quotes the server's own error.
:class:`RunningServer` stops it again (on Ctrl-C, and on SIGTERM within :func:`stop_on_sigterm`).
:mod:`.docker` writes the ``docker run`` line for NGC's image.
"""

from .docker import docker_command
from .install import ServerInstall, check_numpy, find_server_binary, venv_bin
from .ports import is_loopback, port_is_free
from .process import RunningServer, server_args, server_from_repository
from .sigterm import Terminated, stop_on_sigterm
from .spec import (
    ADMIN_HEADER,
    DEFAULT_IMAGE,
    DEFAULT_PORTS,
    INSTALL_FIX,
    MODEL_CONTROL_MODES,
    RESTRICTED_APIS,
    WHEEL_SERVER_VERSION,
    ServeSpec,
)

__all__ = [
    "ADMIN_HEADER",
    "DEFAULT_IMAGE",
    "DEFAULT_PORTS",
    "INSTALL_FIX",
    "MODEL_CONTROL_MODES",
    "RESTRICTED_APIS",
    "WHEEL_SERVER_VERSION",
    "RunningServer",
    "ServeSpec",
    "ServerInstall",
    "Terminated",
    "check_numpy",
    "docker_command",
    "find_server_binary",
    "is_loopback",
    "port_is_free",
    "server_args",
    "server_from_repository",
    "stop_on_sigterm",
    "venv_bin",
]
