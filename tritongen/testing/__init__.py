"""Helpers for tritongen's own tests and benches, not shipped in the wheel (``pyproject.toml`` excludes them).

:mod:`.faults` (soaks with malformed requests, killed stubs, reloads), :mod:`.malformed` (crafted requests),
:mod:`.procs` (a server's processes and memory, through psutil). Nothing in the package imports them.
"""
