"""The rollout gate: the live version and the candidate answer the same golden set on the served endpoint.

Requests alternate between the two (live pinned to its version, the candidate pinned to its own), so both see
the same server load. Per output: the smallest per-request cosine similarity, the largest absolute error and,
for outputs with a class axis, top-1 agreement; accuracy of each version when the golden set has labels;
client-side p50/p90/p99 per version and Triton's per-version mean latency (statistics API); failed requests.

**Latency verdict.** One tail percentile of one sample is mostly noise: with 100 one-at-a-time requests the
p99 is about the second-slowest answer, so one scheduler hiccup on a busy machine decides it (an identical model
was refused 2 times in 6 at a 1.2 ratio on a 2-core machine). The gate therefore judges latency as a paired,
repeated comparison:

1. the timed requests (``latency_requests`` per version, default 200) are sent in up to :data:`ROUNDS`
   consecutive rounds of at least :data:`MIN_PER_ROUND` requests per version; within a round each golden request
   goes to both versions back to back, which one first alternating (live-candidate, candidate-live, ...), so
   both see the same moment of the machine;
2. per round and version the p90 of the client latencies (a tail statistic, of the round's own requests, whose
   noise is far smaller than a p99's); per round the ratio candidate p90 / live p90;
3. the **latency ratio** is the median of the per-round ratios (a round that a hiccup hit is outvoted), and its
   90% interval is a bootstrap over the rounds (:data:`BOOTSTRAP_SAMPLES` resamples of the rounds, a fixed seed:
   the same times give the same verdict);
4. the candidate is refused for latency only when the **whole interval lies above** ``max_latency_ratio``: it was
   slower than that in most rounds, consistently, not in one unlucky one. A ratio above the threshold whose
   interval reaches below it is reported ("within noise"), not refused; nor is one measured in fewer than
   :data:`MIN_JUDGED_ROUNDS` rounds (fewer than 30 timed requests: one round's hiccup would decide it).

A real regression stays refused: a version 3x slower gives ratios near 3 in every round (tests/test_rollout_gate.py
checks both ways on a real server, with a model whose latency is a fixed sleep). The pooled p50/p99 are reported
as before; the p99 ratio is not gated.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TritongenError
from ..fields import check_fields
from ..files import read_problem, regular_bytes, replace_file, size_text, text_lines
from ..names import shown
from ..npz import arrays_from_npz

LABELS_KEY = "labels"  # optional in a golden .npz: one class index per row
MAX_LABEL = 2**31 - 1  # the largest class index a label may name
ROUNDS = 10  # the most rounds the timed requests are split into
MIN_PER_ROUND = 10  # timed requests per version in a round, at least (fewer requests: fewer rounds)
MIN_JUDGED_ROUNDS = 3  # rounds a latency refusal needs: with fewer, one hiccup would decide it
ROUND_PERCENTILE = 90  # the latency statistic of each round and version
BOOTSTRAP_SAMPLES = 2000
INTERVAL = 0.90  # the latency ratio's interval: refused when all of it lies above the threshold
LATENCY_REASON = "latency ratio"  # how a latency refusal's reason starts
MAX_LATENCY_REQUESTS = 100_000  # timed requests per version, with the candidate loaded meanwhile
MAX_GOLDEN_ROWS = 4096  # requests in a golden set: each is sent to both versions, one at a time
MAX_GOLDEN_TEXT_BYTES = 16 << 20  # a text golden file, read whole
Target = tuple[str, int | None]  # (model name, version to pin; None: the highest READY)


@dataclass(frozen=True)
class GateThresholds:
    min_cosine: float = 0.99  # every request's output, each output
    min_top1_agreement: float = 0.99  # outputs with a class axis
    max_abs_error: float | None = None  # None: reported, not gated (a retrained model differs in absolute terms)
    max_latency_ratio: float = 1.2  # candidate / live latency, refused only when consistently above (module doc)
    max_accuracy_drop: float = 0.01  # live accuracy - candidate accuracy, with labels
    latency_requests: int = 200  # timed requests per version (the golden set is repeated to reach it)

    def __post_init__(self) -> None:
        # named as rollout's keywords (tritongen.rollout, --min-top1, --gate-requests)
        check_fields(self, "rollout", names={"min_top1_agreement": "min_top1", "latency_requests": "gate_requests"})
        for name in ("min_cosine", "min_top1_agreement"):
            value = getattr(self, name)
            if not -1.0 <= value <= 1.0:
                raise TritongenError(f"{name} {value} is outside [-1, 1]", "pass a similarity such as 0.99")
        if self.max_latency_ratio <= 0:
            raise TritongenError(f"max latency ratio {self.max_latency_ratio} is not positive", "pass e.g. 1.2")
        if self.max_abs_error is not None and self.max_abs_error < 0:
            raise TritongenError(f"max abs error {self.max_abs_error} is negative", "pass 0 or more")
        if not 1 <= self.latency_requests <= MAX_LATENCY_REQUESTS:
            raise TritongenError(
                f"--gate-requests (gate_requests) {self.latency_requests} is not 1 to {MAX_LATENCY_REQUESTS:,}",
                f"pass 1 to {MAX_LATENCY_REQUESTS:,} timed requests per version (200 by default)",
            )
        if not 0 <= self.max_accuracy_drop <= 1:
            raise TritongenError(
                f"--max-accuracy-drop {self.max_accuracy_drop:g} is not a drop in accuracy (0 to 1)",
                "pass e.g. 0.01 (a point of accuracy); a negative drop would refuse a version as good as the live one",
            )


@dataclass(frozen=True)
class OutputAgreement:
    min_cosine: float  # the smallest over the golden set's requests
    max_abs_error: float
    top1_agreement: float | None  # None: the output has no class axis


@dataclass(frozen=True)
class LatencyComparison:
    """Candidate vs live latency over interleaved rounds (module doc): the median of the per-round ratios of
    the rounds' p90s, and its bootstrap interval."""

    ratio: float
    low: float
    high: float
    round_ratios: tuple[float, ...]
    per_round: int  # timed requests per version in each round

    @property
    def judged(self) -> bool:
        """Whether there were rounds enough to refuse on (:data:`MIN_JUDGED_ROUNDS`)."""
        return len(self.round_ratios) >= MIN_JUDGED_ROUNDS

    def consistently_above(self, threshold: float) -> bool:
        return self.judged and self.low > threshold

    def text(self) -> str:
        return (
            f"{self.ratio:.2f} ({INTERVAL:.0%} interval {self.low:.2f}-{self.high:.2f}; p{ROUND_PERCENTILE} of "
            f"{len(self.round_ratios)} rounds of {self.per_round})"
        )


def compare_latency(live: Sequence[Sequence[float]], candidate: Sequence[Sequence[float]]) -> LatencyComparison:
    """The latency ratio of ``candidate`` to ``live``, each given as rounds of latencies (the same number of
    rounds, paired): per round p90 / p90, their median, and a bootstrap interval of that median over the rounds
    (a fixed seed: the same latencies, the same answer)."""
    if not live or len(live) != len(candidate) or not all(len(r) for r in (*live, *candidate)):
        raise ValueError("compare_latency needs the same number of non-empty rounds for both")
    ratios = np.array(
        [
            float(np.percentile(c, ROUND_PERCENTILE)) / max(float(np.percentile(v, ROUND_PERCENTILE)), 1e-9)
            for v, c in zip(live, candidate)
        ]
    )
    picks = np.random.default_rng(0).integers(0, len(ratios), size=(BOOTSTRAP_SAMPLES, len(ratios)))
    medians = np.median(ratios[picks], axis=1)
    tail = (1 - INTERVAL) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return LatencyComparison(
        float(np.median(ratios)), float(low), float(high), tuple(float(r) for r in ratios), min(map(len, live))
    )


@dataclass(frozen=True)
class GoldenSet:
    requests: tuple[dict[str, np.ndarray], ...]  # one request each (batch 1 for a batching model)
    labels: tuple[int, ...] | None
    source: str


@dataclass(frozen=True)
class GateReport:
    model: str
    live_version: int
    candidate_version: int
    thresholds: GateThresholds
    outputs: dict[str, OutputAgreement]
    accuracy: dict[str, float] | None
    latency_ms: dict[str, dict[str, float]]
    errors: dict[str, int]
    reasons: tuple[str, ...]
    golden: str
    requests_per_version: int = 0
    latency: LatencyComparison | None = None  # None: not measured (a report built by hand)
    path: Path | None = field(default=None, compare=False)
    # requests of other clients the live version answered during the timed comparison (traffic on it)
    live_traffic: int = 0
    queue_delay_us: int = 0  # how long the model's dynamic batcher may hold a request for a batch (its config)

    @property
    def traffic_note(self) -> str:
        """Why a latency ratio measured under traffic overstates the candidate's latency ("" without traffic, with
        no batcher's delay, or with the candidate no slower)."""
        if not self.live_traffic or not self.queue_delay_us or self.latency is None or self.latency.ratio <= 1.0:
            return ""
        return (
            f"the live version answered {self.live_traffic} requests of other clients during the comparison: its "
            "dynamic batcher fills batches from that traffic, while the candidate, with no traffic of its own, may "
            f"hold each request up to its queue delay ({self.queue_delay_us} us) waiting for a batch; the latency "
            "ratio then overstates the candidate's latency by up to that delay per request: gate it with the "
            "traffic off to compare the models alone"
        )

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def latency_only(self) -> bool:
        """Refused for latency alone (every answer agreed)."""
        return bool(self.reasons) and all(r.startswith(LATENCY_REASON) for r in self.reasons)

    @property
    def p99_ratio(self) -> float:
        """The pooled p99 ratio: reported, not gated (noisy: see the module doc)."""
        return self.latency_ms["candidate"]["p99"] / max(self.latency_ms["live"]["p99"], 1e-9)

    @property
    def latency_ratio(self) -> float:
        return self.latency.ratio if self.latency is not None else self.p99_ratio

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("path")
        out["passed"], out["p99_ratio"], out["latency_ratio"] = self.passed, self.p99_ratio, self.latency_ratio
        return out

    def summary(self) -> str:
        lines = [
            f"gate: '{self.model}' version {self.candidate_version} vs live version {self.live_version} "
            f"({self.golden}, {self.requests_per_version} timed requests each)"
        ]
        for name, m in self.outputs.items():
            top1 = "" if m.top1_agreement is None else f"  top-1 agreement {m.top1_agreement:.4f}"
            lines.append(f"  {name}: min cosine {m.min_cosine:.6f}  max abs error {m.max_abs_error:.3g}{top1}")
        if self.accuracy:
            lines.append(f"  accuracy: live {self.accuracy['live']:.4f}  candidate {self.accuracy['candidate']:.4f}")
        live, cand = self.latency_ms["live"], self.latency_ms["candidate"]
        lines.append(
            f"  p50 ms: live {live['p50']:.2f}  candidate {cand['p50']:.2f}   p99 ms: live {live['p99']:.2f}"
            f"  candidate {cand['p99']:.2f} (reported, not gated)"
        )
        if self.latency is not None:
            limit = self.thresholds.max_latency_ratio
            noise = ""
            if self.latency.ratio > limit and not self.latency.judged:
                noise = (
                    f" (above {limit:g} in too few rounds to judge: not refused; --gate-requests "
                    f"{MIN_JUDGED_ROUNDS * MIN_PER_ROUND} or more judges latency)"
                )
            elif self.latency.ratio > limit and not self.latency.consistently_above(limit):
                noise = f" (above {limit:g} but within noise: not refused)"
            lines.append(f"  latency ratio candidate/live: {self.latency.text()}{noise}")
        lines.append(f"  server mean ms: live {live['server_mean']:.2f}  candidate {cand['server_mean']:.2f}")
        lines.append(f"  failed requests: live {self.errors['live']}  candidate {self.errors['candidate']}")
        if self.traffic_note:
            lines.append(f"  note: {self.traffic_note}")
        lines.append("  verdict: promote" if self.passed else "  verdict: refused: " + "; ".join(self.reasons))
        return "\n".join(lines)


def golden_from_file(path: Path | None, default: Path, inputs: Sequence[Mapping[str, Any]], batched: bool) -> GoldenSet:
    """The golden set: ``path`` (an ``.npz`` keyed by input name, optional ``labels``; or a text file, one text
    per line, ``label<TAB>text`` for labels) or, without it, the build's samples (``default``). Checked
    against the served model's ``inputs`` (``{"name", "datatype", "shape"}``, batch dimension included)."""
    if path is None:  # the build's samples, as many rows as its max batch size: the first MAX_GOLDEN_ROWS of them
        samples = {k: v[:MAX_GOLDEN_ROWS] if batched else v for k, v in arrays_from_npz(default).items()}
        return _golden(samples, None, inputs, batched, f"the build's samples ({default.name})")
    path = Path(path)
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise TritongenError(f"golden set {path} {what}", "pass an .npz of inputs or a text file")
    source = f"golden set {path.name}"
    if path.suffix == ".npz":
        arrays = dict(arrays_from_npz(path))
        labels = arrays.pop(LABELS_KEY, None)
        return _golden(arrays, labels, inputs, batched, source)
    try:
        raw = regular_bytes(path, MAX_GOLDEN_TEXT_BYTES)  # bounded, one open
    except OSError as exc:
        raise TritongenError(
            f"golden set {path} {read_problem(exc)}",
            f"pass an .npz of inputs or a text file of at most {size_text(MAX_GOLDEN_TEXT_BYTES)}, one text per line",
        ) from None
    lines: list[str] = []
    for text in text_lines(raw.decode(errors="replace")):  # split on \n only, as --calib-data text is
        lines.append(text)
        _check_rows(len(lines), source)  # before a file of short lines becomes millions of strings
    parts = [ln.split("\t", 1) for ln in lines]
    if lines and all(len(p) == 2 and _looks_like_label(p[0]) for p in parts):
        return golden_from_texts([p[1] for p in parts], [_label(p[0], source) for p in parts], inputs, batched, source)
    return golden_from_texts(lines, None, inputs, batched, source)


def _looks_like_label(text: str) -> bool:
    """Whether a line's part before its tab is meant as a label (digits, maybe signed): checked by :func:`_label`."""
    return text.strip().lstrip("-+").isdigit()


def _label(text: str, source: str) -> int:
    """A text golden file's ``label<TAB>`` as a class index: ASCII digits, at most :data:`MAX_LABEL` (``--3``,
    ``-1``, ``²``, Arabic-Indic digits and 5000 digits passed ``isdigit``)."""
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit() and len(digits) <= len(str(MAX_LABEL))) or int(digits) > MAX_LABEL:
        raise TritongenError(
            f"{source}: label '{shown(text, 40)}' is not a class index", "write each line as label<TAB>text, label 0-N"
        )
    return int(digits)


def golden_from_texts(
    texts: Sequence[str],
    labels: Sequence[int] | None,
    inputs: Sequence[Mapping[str, Any]],
    batched: bool,
    source: str,
) -> GoldenSet:
    """A golden set of texts for a model (a text ensemble) with one string input: one request per text."""
    if len(inputs) != 1 or inputs[0]["datatype"] != "BYTES":
        raise TritongenError(
            f"{source} is text, but the model takes {[i['name'] for i in inputs]} (not one string input)",
            "pass an .npz keyed by the model's input names",
        )
    if not texts:
        raise TritongenError(f"{source} has no texts", "write one text per line")
    _check_rows(len(texts), source)
    shape = inputs[0]["shape"]
    array = np.array([t.encode() for t in texts], dtype=object).reshape((len(texts),) + (1,) * (len(shape) - 1))
    return _golden({inputs[0]["name"]: array}, None if labels is None else np.asarray(labels), inputs, batched, source)


def _golden(
    arrays: dict[str, np.ndarray],
    labels: np.ndarray | None,
    inputs: Sequence[Mapping[str, Any]],
    batched: bool,
    source: str,
) -> GoldenSet:
    from ..perf.inputs import arrays_as_served

    # a scalar per item, saved as the model reads it ([batch]), goes as the server takes it ([batch, 1])
    arrays = arrays_as_served(arrays, {i["name"]: list(i["shape"]) for i in inputs})
    _check_matches(arrays, inputs, batched, source)
    for name, array in arrays.items():  # a NaN request answers NaN from both versions: "no agreement", refused
        if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
            raise TritongenError(
                f"{source}: input '{name}' holds NaN or infinite values",
                "pass a golden set of real requests (finite values), which both versions can be judged on",
            )
    rows = len(next(iter(arrays.values()))) if batched else 1
    if rows == 0:  # nothing to judge with (the gate divided by the number of requests)
        raise TritongenError(f"{source} holds no rows", "save one request or more per input (a few hundred judge well)")
    _check_rows(rows, source)
    if labels is not None:
        labels = np.asarray(labels)
        # one class index per row: [rows] or [rows, 1] (a [rows / 2, 2] array flattened to the right length), each
        # 0..MAX_LABEL (-1 or 2**64 - 1 never equals an argmax: both versions scored 0 and the gate compared them)
        one_per_row = labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1)
        if labels.dtype.kind not in "iu" or not one_per_row or len(labels) != rows:
            raise TritongenError(
                f"{source}: '{LABELS_KEY}' must hold one integer class per row ({rows}), is "
                f"{labels.dtype}{list(labels.shape)}",
                "store the expected class indices as an integer array of shape [rows]",
            )
        labels = labels.reshape(-1)
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) > MAX_LABEL):
            bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
            raise TritongenError(
                f"{source}: '{LABELS_KEY}' holds {bad}, not a class index",
                f"store class indices from 0 to the number of classes - 1 (at most {MAX_LABEL})",
            )
    requests = tuple({k: v[i : i + 1] for k, v in arrays.items()} for i in range(rows)) if batched else (dict(arrays),)
    return GoldenSet(requests, None if labels is None else tuple(int(x) for x in labels), source)


def _finite(value: Any) -> Any:
    """``value`` with every inf or NaN float as the string JSON readers take (``"inf"``, ``"nan"``): Python wrote
    ``Infinity``, which is no JSON (node refused the file, jq read 1.797e308)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def check_labels_within(golden: GoldenSet, outputs: Sequence[Mapping[str, Any]]) -> None:
    """A golden set's labels name classes of the model's first output (``outputs``: served metadata, shapes with
    the batch dimension): a label past its last class never equals an argmax, so both versions scored 0 on it."""
    if not golden.labels or not outputs:
        return
    shape = list(outputs[0].get("shape") or [])
    classes = int(shape[-1]) if shape else -1
    if classes > 0 and max(golden.labels) >= classes:
        raise TritongenError(
            f"{golden.source}: label {max(golden.labels)} is past the {classes} classes of output "
            f"'{outputs[0].get('name')}'",
            f"store class indices from 0 to {classes - 1}",
        )


def _check_rows(rows: int, source: str) -> None:
    """A golden set of at most :data:`MAX_GOLDEN_ROWS` requests: each row is one request to each version, sent one
    at a time (a 256-byte .npz of shape (10**7, 0) asked for ten million of them)."""
    if rows > MAX_GOLDEN_ROWS:
        raise TritongenError(
            f"{source} holds {rows} rows (requests), more than the {MAX_GOLDEN_ROWS} the gate sends",
            f"pass a golden set of at most {MAX_GOLDEN_ROWS} rows (a few hundred judge a version well)",
        )


def _check_matches(arrays: Mapping[str, np.ndarray], inputs: Sequence[Mapping[str, Any]], batched: bool, source: str):
    fix = "pass a golden set with one array per model input, batch axis first, of the input's type and shape"
    wanted = {i["name"]: i for i in inputs}
    if set(arrays) != set(wanted):
        raise TritongenError(f"{source} has {sorted(arrays)}, the model takes {sorted(wanted)}", fix)
    rows = set()
    for name, array in arrays.items():
        spec = wanted[name]
        kind_ok = array.dtype.kind in "OSU" if spec["datatype"] == "BYTES" else _dtype_name(array) == spec["datatype"]
        dims = list(spec["shape"])
        shape_ok = len(array.shape) == len(dims) and all(d < 0 or d == s for d, s in zip(dims, array.shape))
        if not (kind_ok and shape_ok):
            raise TritongenError(
                f"{source}: input '{name}' is {array.dtype}{list(array.shape)}, the model takes "
                f"{spec['datatype']}{dims}",
                fix,
            )
        rows.add(array.shape[0] if batched else 0)
    if len(rows) > 1:
        raise TritongenError(f"{source}: the inputs have different numbers of rows {sorted(rows)}", fix)


def _dtype_name(array: np.ndarray) -> str:
    from ..dtypes import triton_from_numpy

    return triton_from_numpy(array.dtype).removeprefix("TYPE_")


def run_gate(
    infer: Callable[[Target, Mapping[str, np.ndarray]], dict[str, np.ndarray]],
    stats: Callable[[Target], tuple[int, int]],
    live: Target,
    candidate: Target,
    golden: GoldenSet,
    thresholds: GateThresholds,
    model: str,
    versions: tuple[int, int],
) -> GateReport:
    """Send the golden set to both targets, alternating, in rounds, until each has ``latency_requests`` timed
    answers (rounded up to whole rounds); judge latency as the module doc says.

    ``infer(target, inputs)`` answers one request; ``stats(target)`` is Triton's (success count, success ns)."""
    for request in golden.requests[:2]:  # warm both (first requests pay for lazy initialisation)
        for target in (live, candidate):
            try:
                infer(target, request)
            except TritongenError:
                pass
    before = {"live": stats(live), "candidate": stats(candidate)}
    answers: dict[str, list[dict[str, np.ndarray] | None]] = {"live": [], "candidate": []}
    errors = {"live": 0, "candidate": 0}
    wanted = max(thresholds.latency_requests, len(golden.requests))
    rounds = max(1, min(ROUNDS, wanted // MIN_PER_ROUND))
    per_round = -(-wanted // rounds)
    total = rounds * per_round
    times: dict[str, list[list[float]]] = {"live": [], "candidate": []}
    for i in range(total):
        if i % per_round == 0:
            for role in times:
                times[role].append([])
        request = golden.requests[i % len(golden.requests)]
        order = (("live", live), ("candidate", candidate)) if i % 2 == 0 else (("candidate", candidate), ("live", live))
        for role, target in order:
            start = time.perf_counter()
            try:
                answer: dict[str, np.ndarray] | None = infer(target, request)
            except TritongenError:
                answer, errors[role] = None, errors[role] + 1
            times[role][-1].append((time.perf_counter() - start) * 1e3)
            if i < len(golden.requests):
                answers[role].append(answer)
    after = {"live": stats(live), "candidate": stats(candidate)}
    pooled = {role: [t for r in rs for t in r] for role, rs in times.items()}
    latency = {
        role: {
            "p50": float(np.percentile(pooled[role], 50)),
            "p90": float(np.percentile(pooled[role], 90)),
            "p99": float(np.percentile(pooled[role], 99)),
            "server_mean": _server_mean_ms(before[role], after[role]),
        }
        for role in pooled
    }
    outputs, accuracy = _agreement(answers, golden.labels)
    report = GateReport(
        model=model,
        live_version=versions[0],
        candidate_version=versions[1],
        thresholds=thresholds,
        outputs=outputs,
        accuracy=accuracy,
        latency_ms=latency,
        errors=errors,
        reasons=(),
        golden=golden.source,
        requests_per_version=total,
        latency=compare_latency(times["live"], times["candidate"]),
        # Triton counts a request as a success once the model answered it, even where the gate saw an error after
        # (a later ensemble step, the client's timeout): all the gate's own requests are taken off
        live_traffic=max(0, (after["live"][0] - before["live"][0]) - total),
    )
    return _judged(report)


def _server_mean_ms(before: tuple[int, int], after: tuple[int, int]) -> float:
    count = after[0] - before[0]
    return (after[1] - before[1]) / count / 1e6 if count > 0 else 0.0


def _agreement(
    answers: Mapping[str, list[dict[str, np.ndarray] | None]], labels: tuple[int, ...] | None
) -> tuple[dict[str, OutputAgreement], dict[str, float] | None]:
    pairs = [(a, b) for a, b in zip(answers["live"], answers["candidate"]) if a is not None and b is not None]
    outputs: dict[str, OutputAgreement] = {}
    if not pairs:
        return outputs, None
    for name in pairs[0][0]:
        cosines, abs_errors, agree, classed = [], [], [], False
        for live, cand in pairs:
            a, b = np.asarray(live[name]), np.asarray(cand.get(name))
            if a.dtype.kind in "OSU" or a.shape != b.shape:
                same = a.shape == b.shape and bool(np.all(a == b))
                cosines.append(1.0 if same else 0.0)
                abs_errors.append(0.0 if same else float("inf"))
                continue
            a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
            finite = np.isfinite(a64)
            if not np.array_equal(finite, np.isfinite(b64)) or not np.array_equal(a64[~finite], b64[~finite]):
                # an inf or NaN one version answers and the other does not: no agreement (the cosine of an inf
                # answer was NaN, which passed every threshold, and a candidate answering inf was promoted)
                cosines.append(0.0)
                abs_errors.append(float("inf"))
                continue
            a64, b64 = a64[finite], b64[finite]  # the same non-finite values in both: compared on the rest
            norm = np.linalg.norm(a64) * np.linalg.norm(b64)
            cosine = float(a64 @ b64 / norm) if norm > 0 else float(np.array_equal(a64, b64))
            cosines.append(cosine if math.isfinite(cosine) else 0.0)
            abs_errors.append(float(np.max(np.abs(a64 - b64))) if a64.size else 0.0)
            if a.ndim >= 2 and a.shape[-1] > 1:
                classed = True
                agree.append(float(np.mean(np.argmax(a, axis=-1) == np.argmax(b, axis=-1))))
        outputs[name] = OutputAgreement(min(cosines), max(abs_errors), float(np.mean(agree)) if classed else None)
    accuracy = None
    if labels is not None and len(pairs) == len(labels):
        first = next(iter(pairs[0][0]))
        accuracy = {
            role: float(
                np.mean([int(np.argmax(np.asarray(p[i][first]).reshape(-1))) == y for p, y in zip(pairs, labels)])
            )
            for i, role in enumerate(("live", "candidate"))
        }
    return outputs, accuracy


def _judged(report: GateReport) -> GateReport:
    t, reasons = report.thresholds, []
    for role, count in report.errors.items():
        if count:
            reasons.append(f"{count} {role} request(s) failed")
    if not report.outputs:
        reasons.append("no request got an answer from both versions")
    for name, m in report.outputs.items():
        if not m.min_cosine >= t.min_cosine:  # a NaN is below every threshold
            reasons.append(f"{name}: cosine {m.min_cosine:.4f} < {t.min_cosine}")
        if m.top1_agreement is not None and m.top1_agreement < t.min_top1_agreement:
            reasons.append(f"{name}: top-1 agreement {m.top1_agreement:.4f} < {t.min_top1_agreement}")
        if t.max_abs_error is not None and m.max_abs_error > t.max_abs_error:
            reasons.append(f"{name}: max abs error {m.max_abs_error:.3g} > {t.max_abs_error}")
    if report.accuracy and report.accuracy["live"] - report.accuracy["candidate"] > t.max_accuracy_drop:
        reasons.append(f"accuracy {report.accuracy['candidate']:.4f} vs live {report.accuracy['live']:.4f}")
    if report.latency is not None and report.latency.consistently_above(t.max_latency_ratio):
        reasons.append(
            # "slower" only where the bar is 1 or more: below 1 (a candidate must be faster) a faster one is refused
            f"{LATENCY_REASON} {report.latency.ratio:.2f} > {t.max_latency_ratio:g}: "
            + ("slower" if t.max_latency_ratio >= 1 else f"above {t.max_latency_ratio:g}x the live latency")
            + f" in most of {len(report.latency.round_ratios)} rounds ({INTERVAL:.0%} interval "
            f"{report.latency.low:.2f}-{report.latency.high:.2f}, all above it)"
        )
    return GateReport(**{**report.__dict__, "reasons": tuple(reasons)})


def write_gate_report(report: GateReport, out: Path) -> GateReport:
    """Write ``comparison.json`` and ``comparison.html`` into ``out`` (created); the report with the JSON's path."""
    out = Path(out)
    path = out / "comparison.json"
    try:
        out.mkdir(parents=True, exist_ok=True)
        for target, text in (
            (path, json.dumps(_finite(report.to_json()), indent=2, default=str, allow_nan=False) + "\n"),
            (out / "comparison.html", html_from_gate(report)),
        ):
            replace_file(target, text)
    except OSError as exc:  # a full disk, a folder taken away since it was checked
        raise TritongenError(
            f"cannot write the gate's report into {shown(out, 120)}: {exc.strerror or exc}",
            "pass --out with a folder you can write (with free space)",
        ) from None
    return GateReport(**{**report.__dict__, "path": path})


def html_from_gate(report: GateReport) -> str:
    """The comparison as a self-contained HTML page (tables; ``templates/rollout_gate.html.j2`` lays it out)."""
    from ..templates import render

    def number(value: float | None, digits: str = ".4f") -> str:
        return "-" if value is None else format(value, digits)

    accuracy = report.accuracy or {}
    versions = {"live": report.live_version, "candidate": report.candidate_version}
    return render(
        "rollout_gate.html.j2",
        title=html.escape(
            f"tritongen rollout gate: {report.model} v{report.candidate_version} vs live v{report.live_version}"
        ),
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        golden=html.escape(f"{report.golden}, {report.requests_per_version} timed requests per version"),
        verdict="promote" if report.passed else html.escape("refused: " + "; ".join(report.reasons)),
        verdict_class="promote" if report.passed else "refuse",
        outputs=[
            {
                "name": html.escape(name),
                "cosine": number(m.min_cosine, ".6f"),
                "abs_error": number(m.max_abs_error, ".3g"),
                "top1": number(m.top1_agreement),
            }
            for name, m in report.outputs.items()
        ],
        versions=[
            {
                "name": f"{role} (v{versions[role]})",
                "p50": number(lat["p50"], ".2f"),
                "p99": number(lat["p99"], ".2f"),
                "server": number(lat["server_mean"], ".2f"),
                "errors": report.errors[role],
                "accuracy": number(accuracy.get(role)),
            }
            for role, lat in report.latency_ms.items()
        ],
        thresholds=[
            (html.escape(k), "not gated (reported only)" if v is None else html.escape(str(v)))
            for k, v in asdict(report.thresholds).items()
        ]
        + [
            ("latency ratio (measured)", html.escape(report.latency.text()) if report.latency else "-"),
            ("p99 ratio (measured, not gated)", f"{report.p99_ratio:.2f}"),
        ],
    )
