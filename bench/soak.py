"""Soak a real Triton with malformed requests mixed in, and kill a Python-backend stub half-way.

Builds two models into a temporary repository: ``seq`` (``--target local``: the Python backend running ONNX Runtime)
and ``pair`` (an ensemble: CSV text -> custom preprocess -> ONNX; it has a TYPE_STRING input, for garbage bytes),
boots tritonserver with explicit model control, and runs :func:`tritongen.testing.faults.soak_from_server` at
``--concurrency`` for ``--duration-s`` with ``--bad-fraction`` malformed requests. At ``--kill-at-s`` it kills -9
the ``seq`` stub; Triton 2.51 does not restart it, so the soak reloads the model (``--no-reload``: watch it stay
dead). Prints requests sent, good/bad outcomes, errors by kind, the server's RSS (tritonserver + stubs) at start and
end, and the recovery after the kill; then how long a graceful stop takes.

    .venv/bin/python bench/soak.py [--duration-s 300] [--kill-at-s 150] [--no-kill] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=300.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--bad-fraction", type=float, default=0.1)
    parser.add_argument("--kill-at-s", type=float, default=None, help="default: half-way")
    parser.add_argument("--no-kill", action="store_true")
    parser.add_argument(
        "--no-reload", action="store_true", help="leave a killed stub dead (shows Triton does not restart it)"
    )
    parser.add_argument(
        "--skip-kinds", default="", help="comma-separated malformed kinds not to send (e.g. bad_string_framing)"
    )
    parser.add_argument("--timeout-s", type=float, default=30.0, help="per request")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import contextlib
    import io

    from tests.test_faults import build_fault_repository, csv_samples
    from tritongen.server import ServeSpec, server_from_repository
    from tritongen.testing.faults import SoakSpec, soak_from_server
    from tritongen.testing.malformed import BAD_KINDS

    skip = {k.strip() for k in args.skip_kinds.split(",") if k.strip()}
    kill_at = None if args.no_kill else (args.kill_at_s if args.kill_at_s is not None else args.duration_s / 2)
    with tempfile.TemporaryDirectory(prefix="tritongen-soak-") as tmp:
        with contextlib.redirect_stdout(io.StringIO()):
            repo = build_fault_repository(Path(tmp))
        server = server_from_repository(ServeSpec(repo=repo, model_control="explicit"))
        print(
            f"tritonserver pid {server.pid} up in {server.boot_s:.1f} s, models {', '.join(server.models)}; "
            f"log {server.log_path}"
        )
        try:
            spec = SoakSpec(
                models=("seq", "pair"),
                duration_s=args.duration_s,
                concurrency=args.concurrency,
                bad_fraction=args.bad_fraction,
                samples={"pair": csv_samples()},
                kill_stub_at_s=kill_at,
                reload=not args.no_reload,
                bad_kinds=tuple(k for k in BAD_KINDS if k not in skip),
                timeout_s=args.timeout_s,
            )
            result = soak_from_server(server, spec, progress=print)
        finally:
            started = time.monotonic()
            code = server.stop(timeout_s=40)
            stop_s = time.monotonic() - started
    print(result.summary())
    framing = sum(
        n
        for k, n in result.errors.items()
        if k.startswith("good: ") and "incomplete string data" in result.error_samples.get(k, "")
    )
    killed = result.stub_kill.failed_requests if result.stub_kill else 0
    print(
        f"  good failed, by cause: {killed} after the stub kill, {framing} batched with a bad string framing, "
        f"{result.good_failed - killed - framing} other"
    )
    print(f"  graceful stop took {stop_s:.1f} s (exit code {code})")
    if args.json:
        args.json.write_text(json.dumps({**result.to_dict(), "stop_s": stop_s}, indent=2, default=str) + "\n")
    ok = result.server_alive and result.bad_accepted == 0 and result.good_failed == killed + framing
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
