"""Command line: each command builds one spec and calls one public function.

:class:`~tritongen.errors.TritongenError` becomes one line on stderr (plus its details) and exit code 1;
``--debug`` shows tracebacks instead.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import click

from . import __version__, api
from .cli_options import ALLOW_UNVERIFIED, PROTOCOL, PUBLIC_KEY, SIGNATURE, echo_err, name_from_folder
from .cpus import cpus_text
from .errors import TritongenError
from .logs import attach_cli_handler
from .names import one_line
from .plan_compat import DEFAULT_TRITON_VERSION
from .server import Terminated, stop_on_sigterm
from .server.allocator import ALLOCATORS
from .server.spec import MODEL_CONTROL_MODES

_DEBUG = {"on": False}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110, "terminal_width": 110})
@click.version_option(__version__, prog_name="tritongen")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
def cli(debug: bool) -> None:
    """From a trained PyTorch model to a Triton model repository that is proven to serve."""
    _DEBUG["on"] = debug
    attach_cli_handler(debug)
    click.get_current_context().with_resource(api.cli_words())  # errors name the flags as typed here


@cli.command(short_help="Convert a PyTorch model, ONNX file or Hugging Face folder into a validated model folder.")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--name", help="Model name in the repository (default: the file name without extension).")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="NAME:DTYPE:DIMS",
    help="A model input, e.g. x:FP32:3,224,224 (dims without batch, -1 variable; t:INT64: with no dims: one value "
    "per item, the model reads [batch]). Repeat per input, in forward() order. Read from the file for ONNX and "
    "torch.export .pt2.",
)
@click.option(
    "--output", "outputs", multiple=True, metavar="NAME", help="Output name, in the order forward() returns them."
)
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(path_type=Path),
    help="YAML file with name, inputs, outputs, max_batch_size, ...",
)
@click.option(
    "--sample-inputs",
    type=click.Path(path_type=Path),
    help=".npz with one array per input (batch axis first): inputs are inferred from it and it feeds the parity gate.",
)
@click.option("--max-batch-size", type=int, help="Largest batch Triton may form (0: no batching). Default 8.")
@click.option(
    "--target",
    type=click.Choice(["local", "onnxruntime", "tensorrt"]),
    help="local: Python backend + ONNX Runtime on CPU (runs here); onnxruntime: Triton's ONNX "
    "Runtime backend on GPU; tensorrt: prepared ONNX + profiles for `tritongen engine`.",
)
@click.option(
    "--repo",
    type=click.Path(path_type=Path),
    default="model_repository",
    show_default=True,
    help="Model repository folder to write into.",
)
@click.option(
    "--model-factory",
    metavar="MODULE:CALLABLE",
    help="Builds the nn.Module for a state_dict file (module path or file.py).",
)
@click.option(
    "--allow-pickle", is_flag=True, help="Load a whole pickled module. Unpickling runs code: only for files you trust."
)
@click.option(
    "--opset", type=int, help="ONNX opset, 17-23 (TorchScript modules: 17-20). Default 18; never changed silently."
)
@click.option("--atol", type=float, help="Parity gate absolute tolerance. Default 1e-4.")
@click.option("--rtol", type=float, help="Parity gate relative tolerance. Default 1e-3.")
@click.option("--force", is_flag=True, help="Replace an existing model of the same name.")
@click.option("--new-version", is_flag=True, help="Add version N+1 beside the existing versions.")
@click.option("--instances", "instance_count", type=int, help="Model instances (instance_group count). Default 1.")
@click.option(
    "--preferred-batch-size",
    "preferred_batch_sizes",
    type=int,
    multiple=True,
    help="Dynamic batching preferred size (repeatable).",
)
@click.option(
    "--queue-delay-us",
    "max_queue_delay_us",
    type=int,
    help="Dynamic batching max queue delay in microseconds. Default 500.",
)
@click.option(
    "--priority-levels", type=int, help="Dynamic batching priority levels (1 is the highest). Default 0: none."
)
@click.option(
    "--default-priority",
    type=int,
    help="Priority level of requests that give none. Default: the lowest (--priority-levels).",
)
@click.option(
    "--queue-policy",
    "queue_policies",
    multiple=True,
    metavar="[LEVEL:]timeout_us=T,action=reject|delay,allow_override=BOOL,max_size=N",
    help="Dynamic batching queue policy: the default one, or with LEVEL: that priority level's. Repeatable.",
)
@click.option(
    "--rate-limiter",
    "rate_limiter",
    multiple=True,
    metavar="RESOURCE:COUNT[:global]",
    help="Rate limiter resource one execution of an instance takes (with tritonserver --rate-limit=execution_count). "
    "Repeatable.",
)
@click.option("--rate-limiter-priority", type=int, help="Rate limiter weight of the instances (2: half the chances).")
@click.option("--no-warmup", is_flag=True, help="Do not add a model_warmup request.")
@click.option(
    "--task",
    type=click.Choice(["text-classification", "feature-extraction", "image-classification"]),
    help="Ensemble task (default: detected from a Hugging Face folder's config.json).",
)
@click.option(
    "--tokenizer", type=click.Path(path_type=Path), help="Tokenizer folder for a model file: builds a text-in ensemble."
)
@click.option(
    "--preprocess", metavar="KIND|FILE.py", help="tokenizer, image, none, or a .py with preprocess(batch) -> dict."
)
@click.option(
    "--postprocess",
    metavar="KIND|FILE.py",
    help="mean-pool, normalize, softmax-topk, raw, or a .py with postprocess(batch) -> dict.",
)
@click.option("--top-k", type=int, help="Labels returned by softmax-topk (default min(5, classes)).")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8"]),
    help="Precision put into the ONNX graph (FP16 casts or INT8 Q/DQ), behind the accuracy guard. Default fp32.",
)
@click.option(
    "--calib-data",
    type=click.Path(path_type=Path),
    help="Calibration samples: .npz file or folder, a text file of lines (with "
    "--tokenizer), or a folder of images. Every 4th is held out for the guard.",
)
@click.option(
    "--calib-method",
    type=click.Choice(["auto", "minmax", "entropy", "percentile"]),
    help="INT8 calibration range: auto (min/max, or the 99.99th percentile for tensors whose outliers dominate), "
    "or one method for every tensor. Default auto.",
)
@click.option(
    "--min-cosine",
    type=float,
    help="Accuracy guard: mean cosine vs FP32 PyTorch >= this (min >= this - 0.01). Default 0.99.",
)
@click.option("--min-top1", type=float, help="Accuracy guard: top-1 agreement with FP32 for [batch, classes] outputs.")
@click.option(
    "--max-abs-error",
    multiple=True,
    metavar="OUTPUT=VALUE",
    help="Accuracy guard: judge OUTPUT by its largest absolute error vs FP32 (<= VALUE) instead of cosine, for "
    "outputs whose meaning is absolute (offsets, landmarks). Repeatable. Without it, a sample whose error vector "
    "is within 10% of the output's FP32 range passes the per-sample cosine minimum (the mean is still gated).",
)
@click.option(
    "--max-dim",
    "max_dynamic_dim",
    type=int,
    help="Largest size of every -1 dimension: what the parity gate and the samples reach (every target) and the "
    "TensorRT profiles' MAX. Default 128.",
)
@click.option(
    "--dim-range",
    "dim_ranges",
    multiple=True,
    metavar="INPUT:AXIS:MIN:OPT:MAX",
    help="Sizes of a -1 dim (AXIS without batch, from 0): samples, "
    "parity at MIN/OPT/MAX, warm-up, TensorRT profile. Repeatable.",
)
@click.option(
    "--const",
    "consts",
    multiple=True,
    metavar="NAME=VALUE",
    help="Fix an int/float/bool argument of forward() at export, e.g. sr=16000 (recorded in the manifest). Repeatable.",
)
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="IN:OUT",
    help="A stateful streaming model: input IN is the state, output OUT its next value. Served on Triton's "
    "sequence batcher (one state per sequence). Repeatable.",
)
@click.option(
    "--state-from-attributes",
    metavar="auto|NAME,NAME",
    help="A module that keeps its state in attributes between calls: make them state inputs/outputs "
    "(auto: every attribute forward() writes).",
)
@click.option(
    "--exporter",
    type=click.Choice(["auto", "dynamo", "torchscript"]),
    help="ONNX exporter. auto (default): dynamo, then TorchScript if dynamo fails (TorchScript modules: TorchScript).",
)
def build(model: Path, no_warmup: bool, **options) -> None:
    """Convert MODEL into a validated model folder. MODEL is TorchScript, a torch.export .pt2, an ONNX file, a
    Hugging Face folder, a state_dict (with --model-factory) or a whole pickled module (with --allow-pickle): the
    form is detected from the content, not the extension.

    A Hugging Face folder, --tokenizer, --task, --preprocess or --postprocess builds an ensemble NAME =
    NAME_preprocess -> NAME_model -> NAME_postprocess that takes text or image bytes and returns labels or embeddings.

    Examples:

    \b
      tritongen build resnet.pt --name resnet --input x:FP32:3,224,224 --max-batch-size 32
      tritongen build model.pt2 --target onnxruntime             # inputs read from the exported program
      tritongen build model.onnx --name detector                  # inputs and outputs read from the graph
      tritongen build weights.safetensors --model-factory mypkg.models:make_net --input x:FP32:-1,80
      tritongen build path/to/hf-folder/ --name minilm            # text in, embeddings or labels out
      tritongen build model.pt --precision int8 --calib-data calib.npz --min-cosine 0.99
      tritongen build retrained.pt --name resnet --input x:FP32:3,224,224 --new-version
    """
    made = api.build(model, progress=echo_err, warmup=False if no_warmup else None, **options)
    click.echo(made.text())


@cli.command()
@click.argument("repo", type=click.Path(path_type=Path), default="model_repository")
@click.option(
    "--triton-version",
    default=DEFAULT_TRITON_VERSION,
    show_default=True,
    help="Triton release that will serve REPO: TensorRT plans must have been built with its TensorRT.",
)
def validate(repo: Path, triton_version: str) -> None:
    """Check every config.pbtxt in REPO offline with Triton's own rules (ensembles included)."""
    click.echo(api.validate(repo, triton_version=triton_version).summary())


@cli.command(short_help="Check that every file Triton would load from REPO is in a build manifest (and signed).")
@click.argument("repo", type=click.Path(path_type=Path), default="model_repository")
@ALLOW_UNVERIFIED
@PUBLIC_KEY
@SIGNATURE
def verify(repo: Path, allow_unverified: tuple[str, ...], public_key: Path | None, signature: Path | None) -> None:
    """Check that every file Triton would load from REPO is listed, with its sha256, in a build manifest.

    Every model folder (a hidden one is refused), every version folder and every file in them: an unlisted file,
    a version without manifest or a model without manifest fails. With --public-key the signature is checked first.
    """
    report = api.verify(repo, allow_unverified=allow_unverified, public_key=public_key, signature=signature)
    click.echo(report.summary())  # its last line says so where a signature was not checked (no --public-key)


@cli.command()
@click.argument("repo", type=click.Path(path_type=Path), default="model_repository")
@click.option(
    "--private-key",
    type=click.Path(path_type=Path),
    required=True,
    help="PEM elliptic-curve private key (P-256, P-384 or P-521; unencrypted). Never printed.",
)
@SIGNATURE
@ALLOW_UNVERIFIED
def sign(repo: Path, private_key: Path, signature: Path | None, allow_unverified: tuple[str, ...]) -> None:
    """Sign every file in REPO (after it verifies) with an EC key: verify/serve --public-key check it.

    build, tune and engine rewrite files of the repository: sign again after them.
    """
    path = api.sign(repo, private_key, signature=signature, allow_unverified=allow_unverified)
    click.echo(f"signed {repo}: signature {path}")


@cli.command(short_help="Verify REPO, boot a real tritonserver on it and wait until every model is READY.")
@click.argument("repo", type=click.Path(path_type=Path), default="model_repository")
@click.option(
    "--server-bin",
    type=click.Path(path_type=Path),
    help="tritonserver binary (default: on PATH, else the nvidia-pytriton wheel's).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind. Anything but loopback restricts the model-control API.",
)
@click.option("--http-port", type=int, help="Default 8000 if free, else a free port; 0: any free port.")
@click.option("--grpc-port", type=int, help="Default 8001 if free, else a free port; 0: any free port.")
@click.option("--metrics-port", type=int, help="Default 8002 if free, else a free port; 0: any free port.")
@click.option(
    "--timeout-s",
    "ready_timeout_s",
    type=float,
    default=180,
    show_default=True,
    help="How long to wait for every model to be READY.",
)
@click.option(
    "--python-env",
    type=click.Path(path_type=Path),
    help="A venv (this Python's version) the Python-backend models import from, instead of this one.",
)
@click.option(
    "--model-control",
    type=click.Choice(MODEL_CONTROL_MODES),
    default="none",
    show_default=True,
    help="explicit: models can be loaded/unloaded through the API; poll: Triton rescans REPO and loads what "
    "changed (build --new-version into it is picked up).",
)
@click.option(
    "--poll-interval-s",
    type=int,
    default=1,
    show_default=True,
    help="With --model-control poll: seconds between repository scans.",
)
@click.option(
    "--allocator",
    type=click.Choice(ALLOCATORS),
    default="auto",
    show_default=True,
    help="The malloc tritonserver runs with (LD_PRELOAD). auto: jemalloc, else tcmalloc, else the system's; "
    "Triton's guide recommends either for model load/unload (glibc keeps the freed memory).",
)
@click.option(
    "--stub-blas-threads",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="OPENBLAS_NUM_THREADS for the Python-backend stubs (0: numpy's default, a thread per core; a value already "
    "in the environment is kept). 1 makes a stub's start (a rollout's switch) cheaper; the generated models call "
    "no BLAS.",
)
@click.option(
    "--cpus",
    default="",
    help="CPU ids the server (and its Python-backend stubs) may run on, e.g. 1 or 1-3,5; default: all this "
    "process may use. Leaves the other CPUs to a load generator (tritongen perf --client-cpus).",
)
@click.option(
    "--ignore-rollout-record",
    "rollout_record",
    flag_value=False,
    default=None,
    help="Serve config.pbtxt's versions (the newest by default) even where a model's rollout record names another "
    "live version (by default serve pins the recorded one in the checked copy it serves).",
)
@click.option(
    "--docker",
    is_flag=True,
    help="Print how to serve REPO with NGC's Triton image (docker run, or the deploy steps it needs).",
)
@ALLOW_UNVERIFIED
@PUBLIC_KEY
@SIGNATURE
def serve(
    repo: Path,
    docker: bool,
    allow_unverified: tuple[str, ...],
    public_key: Path | None,
    signature: Path | None,
    **options,
) -> None:
    """Boot a real tritonserver on REPO (signature checked with --public-key, then validated and verified), wait
    until every model is READY, serve until Ctrl-C or SIGTERM."""
    checks = {"allow_unverified": allow_unverified, "public_key": public_key, "signature": signature}
    if docker:  # checked against the image's Triton release
        click.echo(api.docker_steps(repo, **checks, **options).text())
        return
    serving = api.serve(repo, **checks, progress=echo_err, **options)  # its options and folder refused first
    # checked as a private copy, which tritongen serves: the server's own Triton checks plans at boot
    echo_err(f"checking {repo.resolve()} and starting tritonserver on a checked copy of it ...")
    # SIGTERM (docker stop, systemd, kill) stops the server as Ctrl-C does, with the same "stopped:" line and the
    # same exit code 0: a stop that was asked for and done is the command's success (docker stop then shows
    # Exited (0), systemd a clean stop; 143 would be a failure to systemd unless SuccessExitStatus=143). Cut short
    # before the server is ready, serve exits 143 as it exits 130 on Ctrl-C (main()).
    with stop_on_sigterm(), serving as server:
        try:
            _print_ready(server, repo, public_key)
            code = server.wait()
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM while the banner was printed, before wait() took it over
            server.interrupted = True
            code = server.stop()
        log = f"; its log: {server.log_path}" if server.log_path.exists() else ""
        if server.interrupted:
            echo_err(f"stopped: {server.stop_words()}{log}")
            return
        if code != 0:
            # how it ended, in its own log's words (a signal by name; "terminate called after ...", "Signal (6) ...")
            raise TritongenError(f"tritonserver ended on its own: {server.crash()}", f"read its log {server.log_path}")
        echo_err("tritonserver exited on its own (code 0: a signal asked it to stop)")


def _print_ready(server, repo: Path, public_key: Path | None = None) -> None:
    """The endpoints and settings of a server that is ready, what to type next, and how to stop it."""
    click.echo(f"ready: {', '.join(server.models)}")
    click.echo(f"  HTTP    {server.http_url}")
    click.echo(f"  gRPC    {server.grpc_url}")
    click.echo(f"  metrics {server.metrics_url}")
    click.echo(f"  log     {server.log_path}")
    if server.spec.repo != repo.resolve():
        later = "changes are checked before they load" if server.checked_poll else "later changes to it are not loaded"
        click.echo(f"  repo    {repo.resolve()}, served from a checked copy ({later})")
    if public_key is not None:
        after = {
            "explicit": "; tritongen rollout, rollback and tune load signed files only (the admin key bypasses this)",
            "poll": "; changes load if signed",
        }
        click.echo(f"  signed  checked with {public_key.resolve()}{after.get(server.spec.model_control, '')}")
    library = f" ({server.allocator_library})" if server.allocator_library else ""
    click.echo(f"  malloc  {server.allocator}{library}")
    click.echo(f"  stub BLAS {server.stub_blas}")
    if server.spec.cpus:
        click.echo(f"  CPUs    {cpus_text(server.spec.cpus)} (tritonserver and its stubs pinned there)")
    if server.checked_poll is not None:
        click.echo(
            f"  model control poll: {repo.resolve()} rescanned every {server.spec.poll_interval_s} s; a change is "
            "copied, checked and only then swapped into the copy Triton polls"
        )
    elif server.spec.model_control == "poll":
        click.echo(f"  model control poll: {repo.resolve()} rescanned every {server.spec.poll_interval_s} s")
    if server.admin_token:
        for protocol in ("http", "grpc"):
            ((key, value),) = server.admin_headers(protocol).items()
            click.echo(f"  model-control API restricted; {protocol} header: {key}: {value}")
    from .layout import has_manifest

    built = {m for m in server.models if has_manifest(repo.resolve() / m)}
    for line in _next_steps(server.models, server.grpc_url, repo.resolve(), server.metrics_url, built):
        click.echo(line)
    from .deploy.rollout_record import server_warnings

    for line in server.rollout_notes:  # the rollout records' live versions, pinned in the served copy
        if line.startswith("warning:"):
            echo_err(line)
        else:
            click.echo(f"  rollout {line}")
    told = {line.split("'")[1] for line in server.rollout_notes if line.count("'") >= 2}
    for line in server_warnings(server, repo.resolve()):  # a restart serves the newest version, not the record's
        if line.split("'")[1] not in told:  # a model the pin already spoke of
            echo_err(line)
    click.echo("press Ctrl-C to stop")


def _next_steps(
    models: tuple[str, ...], grpc_url: str, repo: Path, metrics_url: str = "", built: set[str] | None = None
) -> list[str]:
    """What to type next, for the models users call (an ensemble's steps are left out when it is served); the
    metrics URL is named where perf would not guess it (it guesses port 8002 beside gRPC on 8001). A model no build
    wrote (``built``: those one did; default all) has no saved samples or reference: its commands take inputs.
    The model named is one whose ``infer --check`` works (its newest build saved samples and a reference, or is a
    text ensemble with an FP32 end-to-end reference), an ensemble's model step where no ensemble has one."""
    from .end_to_end import checkable

    steps = {f"{m}{suffix}" for m in models for suffix in ("_preprocess", "_model", "_postprocess")}
    entry = [m for m in models if m not in steps] or list(models)
    if not entry:
        return []
    candidates = [m for m in entry + [m for m in models if m not in entry] if built is None or m in built]
    first = next(
        (m for m in candidates if checkable(repo / m)),
        next((m for m in entry if built is None or m in built), entry[0]),
    )
    metrics = f" --metrics-url {metrics_url}" if metrics_url and not _guessed_metrics(grpc_url, metrics_url) else ""
    if built is not None and first not in built:
        return [
            "next (in another shell; the model has no build's samples, so give it inputs):",
            f"  tritongen infer {first} --url {grpc_url} --input-file inputs.npz      # one array per input",
            f"  tritongen perf {first} --url {grpc_url}{metrics} --input-data inputs.npz --concurrency 1,4,16 "
            "--report perf/",
        ]
    shown = shlex.quote(str(repo))  # typed as written: a folder named with a space stays one argument
    return [
        "next (in another shell):",
        f"  tritongen infer {first} --repo {shown} --url {grpc_url} --check      # answers vs the build's reference",
        f"  tritongen perf {first} --repo {shown} --url {grpc_url}{metrics} --concurrency 1,4,16 --report perf/",
    ]


def _guessed_metrics(grpc_url: str, metrics_url: str) -> bool:
    """Whether perf would guess ``metrics_url`` itself: port 8002 beside gRPC on 8001."""
    return grpc_url.endswith(":8001") and metrics_url.endswith(":8002")


@cli.command()
@click.argument("name")
@click.option(
    "--input-file",
    type=click.Path(path_type=Path),
    help=".npz with one array per input (default: the build's saved samples).",
)
@click.option(
    "--repo",
    type=click.Path(path_type=Path),
    default="model_repository",
    show_default=True,
    help="Where the build's samples and reference outputs are.",
)
@click.option("--url", help="Server address (default 127.0.0.1:8001 for gRPC, :8000 for HTTP, or $TRITONGEN_URL).")
@PROTOCOL
@click.option("--check", is_flag=True, help="Compare the outputs with the build's saved PyTorch reference outputs.")
@click.option(
    "--output-file",
    type=click.Path(path_type=Path),
    help="Save every output whole to this .npz (the lines printed show the first values).",
)
@click.option(
    "--expected",
    type=click.Path(path_type=Path),
    help="With --input-file: an .npz of the outputs those inputs should get (by output name), compared within "
    "--atol + --rtol x |expected|.",
)
@click.option("--atol", type=float, help="With --expected: absolute tolerance (default 1e-4).")
@click.option("--rtol", type=float, help="With --expected: relative tolerance (default 1e-3).")
@click.option("--text", "texts", multiple=True, help="A text to send to a text-in ensemble (repeat for a batch).")
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(path_type=Path),
    help="An image file (JPEG, PNG, ...) to send to an image-in ensemble (repeatable).",
)
@click.option(
    "--sequence",
    is_flag=True,
    help="A stateful model: stream --input-file (.wav, .npy or .npz) in chunks as one sequence (outputs per chunk).",
)
@click.option("--chunk-size", type=int, help="With --sequence: steps per request (default: the input's fixed size).")
@click.option("--sequence-id", type=int, default=1, show_default=True, help="With --sequence: the correlation ID.")
@click.option(
    "--model-version",
    type=click.IntRange(min=1),
    help="The version to send to and check against (default: the highest version the server has ready).",
)
def infer(name: str, **options) -> None:
    """Send inputs to model NAME on a running server and print its outputs.

    Examples:

    \b
      tritongen infer minilm --check                         # the build's samples vs its PyTorch reference
      tritongen infer resnet --input-file inputs.npz         # one array per input, batch axis first
      tritongen infer resnet --input-file in.npz --output-file out.npz   # every output saved whole
      tritongen infer resnet --input-file in.npz --expected mine.npz     # vs the outputs you expect
      tritongen infer minilm --text "a short sentence"       # a text-in ensemble
      tritongen infer resnet --url http://127.0.0.1:8000     # over HTTP (gRPC on 8001 by default)
      tritongen infer model_repository/resnet --check        # the model's folder: NAME and --repo in one
    """
    name = name_from_folder(name, options)
    output_file = options.pop("output_file")
    if output_file is not None:
        from .infer import checked_output_file

        checked_output_file(output_file)  # before anything is sent
    result = api.infer(name, **options)
    click.echo(result.text())
    if output_file is not None:
        click.echo(f"outputs saved: {result.save(output_file)}")
    if result.check is not None and not result.check.ok:
        # where the server started before this build (build --force into the repository it serves): why, and
        # what to do, in place of the table
        stale = result.stale
        why, fix = (f" ({stale.cause})", stale.fix) if stale is not None else ("", "see the table above")
        if options.get("expected") is not None:  # its tolerances, whatever precision the model was built at
            raise TritongenError(
                f"served outputs differ from --expected {options['expected']} beyond tolerance",
                "see the table above; raise --atol/--rtol if the differences are acceptable",
            )
        if result.precision != "fp32":
            raise TritongenError(f"the served {result.precision} answers are below the accuracy guard's bar{why}", fix)
        raise TritongenError(f"served outputs differ from the PyTorch reference beyond tolerance{why}", fix)


# Commands defined in their own modules (one line each; keep this block sorted).
# --- registered commands ---
from .cli_perf import perf as _perf  # noqa: E402
from .cli_perf import tune as _tune

cli.add_command(_perf)
cli.add_command(_tune)
from .cli_deploy import deploy as _deploy  # noqa: E402

cli.add_command(_deploy)
from .cli_precision import engine as _engine  # noqa: E402
from .cli_precision import lint as _lint

cli.add_command(_engine)
cli.add_command(_lint)
from .cli_rollout import rollback as _rollback  # noqa: E402
from .cli_rollout import rollout as _rollout

cli.add_command(_rollback)
cli.add_command(_rollout)
# --- end registered commands ---


_LINE_BREAK = re.compile(r"\s*\n\s*")


def _usage_problem(exc: click.UsageError) -> str:
    """click's message on one line: its line breaks and their indentation (``Choose from:\\n\\ta,\\n\\tb``) read
    as one space (``Choose from: a, b``); any other control character is escaped."""
    return one_line(_LINE_BREAK.sub(" ", exc.format_message()).strip()).rstrip(".")


def _command_path(exc: click.UsageError, argv: list[str] | None) -> str:
    """``tritongen COMMAND``: the command whose options were misused. click leaves ``exc.ctx`` unset for some
    mistakes (an option missing its value), so the path is then read off the command line."""
    if exc.ctx is not None:
        return exc.ctx.command_path
    words: list[str] = ["tritongen"]
    command: click.Command = cli
    for arg in sys.argv[1:] if argv is None else argv:
        if arg.startswith("-"):  # the group's own options are flags (--debug, --version, --help)
            continue
        if not isinstance(command, click.Group) or arg not in command.commands:
            break
        words.append(arg)
        command = command.commands[arg]
    return " ".join(words)


def _usage_fix(exc: click.UsageError, argv: list[str] | None) -> str:
    command = _command_path(exc, argv)
    if isinstance(exc, click.NoSuchOption) and exc.option_name == "--debug" and command != "tritongen":
        rest = command[len("tritongen ") :]
        return f"--debug goes before the command: tritongen --debug {rest} ..."
    return f"see '{command} --help'"


def stopped_line(word: str, cause: BaseException | None) -> str:
    """The line for a command stopped by Ctrl-C or SIGTERM, with what it finished before the signal took effect
    (the notes :func:`tritongen.signals.signals_deferred` adds)."""
    notes = [one_line(n) for n in getattr(cause, "__notes__", ()) if isinstance(n, str)]
    return word + "".join(f" ({n})" for n in notes)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="tritongen", standalone_mode=False)
    except TritongenError as exc:
        if _DEBUG["on"]:
            raise
        echo_err(f"error: {one_line(exc.message)}")
        if exc.details:
            echo_err(exc.details)
        sys.exit(exc.exit_code)
    except OSError as exc:  # disk full, permissions on a path we did not foresee
        if _DEBUG["on"]:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        problem = one_line(f"{exc.strerror or exc}{where}")
        echo_err(f"error: {problem}: check the path and its permissions, or rerun with --debug")
        sys.exit(1)
    except click.exceptions.Abort as exc:  # click's for Ctrl-C; or SIGTERM, where serve takes it as Ctrl-C
        echo_err(stopped_line("aborted", exc.__cause__))
        sys.exit(exc.__cause__.exit_code if isinstance(exc.__cause__, Terminated) else 130)
    except click.exceptions.NoArgsIsHelpError as exc:  # `tritongen` alone: its help, as click prints it
        exc.show()
        sys.exit(0)
    except click.UsageError as exc:  # a missing argument, an unknown option, a value of the wrong type
        echo_err(f"error: {_usage_problem(exc)}: {_usage_fix(exc, argv)}")
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        echo_err(stopped_line("interrupted", exc))
        sys.exit(130)


if __name__ == "__main__":
    main()
