"""Load tests (``tritongen perf``), their reports, and the config tuner (``tritongen tune``).

Stages: :mod:`.inputs` (requests from samples), :mod:`.loadgen` (built-in engine), :mod:`.perf_analyzer`
(the real perf_analyzer), :mod:`.results` (JSON/CSV), :mod:`.report` (HTML with plots), :mod:`.tune`.
"""

from .results import PerfPoint, PerfRun, run_from_json
from .run import perf_from_spec
from .spec import PerfSpec

__all__ = ["PerfPoint", "PerfRun", "PerfSpec", "perf_from_spec", "run_from_json"]
