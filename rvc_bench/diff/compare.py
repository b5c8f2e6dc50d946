"""Compare two captures: module by module in execution order, then along the time axis of the outputs.

Layouts are reconciled by shape: an array of a channels-first framework (torch, ONNX) is also tried with axis 1
moved last, and both sides with their size-1 axes dropped; where more than one reading fits (a square tensor), the
closer one is taken. A module run a different number of times on the two sides (a chunked side against a whole one)
cannot be paired call by call: it is listed, not judged, and the time axis of the outputs says where they part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from rvc_bench import parity
from rvc_bench.diff.capture import Entry

OK, PAST, CALLS, ONLY_A, ONLY_B, SHAPE = "ok", "PAST", "calls differ", "only in A", "only in B", "shape differs"


@dataclass
class Row:
    name: str
    call: int
    shape: tuple[int, ...]
    max_abs: float
    rel_l2: float
    bound: float
    status: str
    order: int  # position in A's execution order (B's, after A's, for names only B has)

    @property
    def label(self) -> str:
        return self.name if self.call == 0 else f"{self.name}#{self.call}"


def _candidates(x: np.ndarray, channels_first: bool, other_channels_first: bool) -> list[np.ndarray]:
    out = [x]
    if channels_first and not other_channels_first and x.ndim >= 3:
        out.append(np.moveaxis(x, 1, -1))
    return out


def align(a: Entry, b: Entry) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The arrays of two entries paired in one layout (None where no reading makes the shapes agree); extra
    outputs of one side (torch's GRU also returns its last state) are left out."""
    pairs = []
    for x, y in zip(a.arrays, b.arrays):
        readings = [
            (xs, ys)
            for xc in _candidates(x, a.channels_first, b.channels_first)
            for yc in _candidates(y, b.channels_first, a.channels_first)
            for xs, ys in [(np.squeeze(xc), np.squeeze(yc))]
            if xs.shape == ys.shape
        ]
        if not readings:
            return None
        pairs.append(min(readings, key=lambda p: rel_l2(*p)))
    return pairs


def rel_l2(x: np.ndarray, ref: np.ndarray) -> float:
    """‖x - ref‖ / ‖ref‖ in float64 (inf where a value is not finite, or where ref is zero and x is not)."""
    d = np.asarray(x, np.float64) - np.asarray(ref, np.float64)
    if not np.all(np.isfinite(d)):
        return math.inf
    norm, err = float(np.linalg.norm(ref)), float(np.linalg.norm(d))
    return err / norm if norm > 0 else (0.0 if err == 0 else math.inf)


def judge(a: Entry, b: Entry, bound: float, order: int) -> Row:
    """One module call of A (the reference) against the same call of B."""
    pairs = align(a, b)
    shape = tuple(a.arrays[0].shape)
    if pairs is None:
        return Row(a.name, a.call, shape, math.nan, math.nan, bound, SHAPE, order)
    err = max(rel_l2(y, x) for x, y in pairs)
    max_abs = max(float(np.max(np.abs(np.asarray(y, np.float64) - x))) if x.size else 0.0 for x, y in pairs)
    return Row(a.name, a.call, shape, max_abs, err, bound, OK if err <= bound else PAST, order)


class Matcher:
    """Holds A's entries; judges each of B's as it arrives (B's arrays are dropped once judged)."""

    def __init__(self, a_entries: list[Entry], bound: float):
        self.a = {(e.name, e.call): (i, e) for i, e in enumerate(a_entries)}
        self.a_calls: dict[str, int] = {}
        for e in a_entries:
            self.a_calls[e.name] = self.a_calls.get(e.name, 0) + 1
        self.bound = bound
        self.rows: dict[tuple[str, int], Row] = {}
        self.b_calls: dict[str, int] = {}

    def __call__(self, b: Entry) -> None:
        self.b_calls[b.name] = self.b_calls.get(b.name, 0) + 1
        hit = self.a.get((b.name, b.call))
        if hit is not None:
            self.rows[(b.name, b.call)] = judge(hit[1], b, self.bound, hit[0])
        else:
            shape = tuple(b.arrays[0].shape)
            self.rows[(b.name, b.call)] = Row(b.name, b.call, shape, math.nan, math.nan, self.bound, ONLY_B, 0)

    def result(self) -> list[Row]:
        """Every row in A's execution order (then B's own); a name called a different number of times on the two
        sides is not judged call by call."""
        rows = dict(self.rows)
        for key, (i, e) in self.a.items():
            rows.setdefault(
                key, Row(e.name, e.call, tuple(e.arrays[0].shape), math.nan, math.nan, self.bound, ONLY_A, i)
            )
        n = len(self.a)
        for k, row in enumerate(r for r in self.rows.values() if r.status == ONLY_B):
            row.order = n + k
        for row in rows.values():
            a, b = self.a_calls.get(row.name, 0), self.b_calls.get(row.name, 0)
            if a and b and a != b:
                row.status = f"{CALLS} ({a} vs {b})"
        return sorted(rows.values(), key=lambda r: r.order)


def first_past(rows: list[Row]) -> Row | None:
    return next((r for r in rows if r.status == PAST), None)


@dataclass
class Along:
    """Where one output signal parts along time: its frames past the signal's bound, and the seam nearest the first."""

    signal: str
    frames: int
    seconds_per_frame: float
    first: int | None  # first frame past the bound (None: none)
    count: int
    worst: float  # the largest per-frame error
    bound: float
    unit: str  # what a frame's error is measured in
    seam: str = ""  # the structure the first frame sits at ("" when none is near)
    notes: list[str] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.count / self.frames if self.frames else 0.0


def frame_errors(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Time-major arrays [..., T, C] (or [T]) -> [T]: each frame's L2 error relative to the reference's mean frame
    norm (so their root mean square is the whole signal's relative L2, and a bound on it bounds that too)."""
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    if ref.ndim == 1:
        x, ref = x[:, None], ref[:, None]
    d = np.moveaxis(x - ref, -2, 0).reshape(ref.shape[-2], -1)
    r = np.moveaxis(ref, -2, 0).reshape(ref.shape[-2], -1)
    scale = math.sqrt(float(np.sum(r * r)) / r.shape[0])
    err = np.sqrt(np.sum(d * d, axis=1))
    err[~np.all(np.isfinite(d), axis=1)] = math.inf
    return err / scale if scale > 0 else np.where(err > 0, math.inf, 0.0)


def along(signal: str, errors: np.ndarray, bound: float, seconds_per_frame: float, unit: str) -> Along:
    past = np.flatnonzero(errors > bound)
    return Along(
        signal,
        int(errors.size),
        seconds_per_frame,
        int(past[0]) if past.size else None,
        int(past.size),
        float(np.max(errors)) if errors.size else 0.0,
        bound,
        unit,
    )


def pitch_along(f0: np.ndarray, f0_ref: np.ndarray, seconds_per_frame: float, margin=None) -> Along:
    """Frames of two f0 tracks apart (a voicing flip or > 50 cents). Given the reference's decision margins, a frame
    apart that the reference decided by less than parity.TIE_MARGIN is a tie (float32 rounding alone can flip it):
    noted with its frame, not counted as a divergence."""
    apart = parity.frames_apart(f0, f0_ref)
    tied = apart & (np.asarray(margin) < parity.TIE_MARGIN) if margin is not None else np.zeros_like(apart)
    both = (np.asarray(f0) > 0) & (np.asarray(f0_ref) > 0)
    cents = np.zeros(apart.shape)
    cents[both] = np.abs(parity.hz_to_cents(np.asarray(f0)[both]) - parity.hz_to_cents(np.asarray(f0_ref)[both]))
    out = along(
        "f0",
        np.where(apart & ~tied, math.inf, np.where(apart, 0.0, cents)),
        parity.CENT_TOLERANCE,
        seconds_per_frame,
        "cents",
    )
    out.worst = float(np.max(np.where(apart, 0.0, cents))) if cents.size else 0.0
    if tied.any():
        n, frames = int(tied.sum()), ", ".join(map(str, np.flatnonzero(tied)[:5]))
        out.notes.append(
            f"{n} frame{'s are ties' if n > 1 else ' is a tie'} (apart, but A's decision margin < "
            f"{parity.TIE_MARGIN:g}), not counted: frame {frames}{' ...' if n > 5 else ''}"
        )
    return out


def name_seam(finding: Along, seams: dict[str, list[int]], reach: int) -> None:
    """Say which structure (chunk, window, tile, ...) the first frame past sits at, if one starts within `reach`
    frames of it."""
    if finding.first is None:
        return
    near = [
        (abs(finding.first - s), kind, s)
        for kind, starts in seams.items()
        for s in starts
        if abs(finding.first - s) <= reach
    ]
    if near:
        _, kind, s = min(near)
        gap = finding.first - s
        where = "at" if gap == 0 else (f"{gap} frames after" if gap > 0 else f"{-gap} frames before")
        finding.seam = f"{where} the {kind} at frame {s}"
