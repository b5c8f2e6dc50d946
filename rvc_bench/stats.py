"""Statistics for timings: median and IQR, ratios of medians with seeded bootstrap intervals, and the slowdown
decision the gate makes. Seeded, so the same rounds always give the same interval (the report is byte-reproducible).

Why a bootstrap of the ratio of medians: rounds are few (3-10) and skewed by the odd slow round; the median ignores
that round, and resampling each side's rounds independently gives an interval without assuming a distribution.
With n rounds per side the interval can only be as fine as the order statistics allow: at n = 3 its lower end is
min(slow side) / max(fast side), i.e. it excludes 1 exactly when the two samples do not overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
N_BOOT = 4000
SEED = 20260106  # any fixed number: the interval must depend on the data only
MIN_ROUNDS = 3  # below this a bootstrap interval is degenerate (n = 1) or two points (n = 2): no decision


def median_iqr(x) -> tuple[float, float, float]:
    """(median, first quartile, third quartile); NaNs for an empty sample."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    return float(med), float(q1), float(q3)


def _groups(x) -> list[np.ndarray]:
    """One sample of rounds (array-like of numbers), or several runs' samples (a list of arrays)."""
    if isinstance(x, (list, tuple)) and len(x) and np.ndim(x[0]) == 1:
        return [np.asarray(g, np.float64) for g in x]
    return [np.asarray(x, np.float64)]


def _boot_medians(groups: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Medians of N_BOOT resamples. Several runs are resampled in two levels, runs then rounds within each (a
    cluster bootstrap), so the run-to-run spread a single run cannot show enters the interval."""
    if len(groups) == 1:
        x = groups[0]
        return np.median(x[rng.integers(0, x.size, size=(N_BOOT, x.size))], axis=1)
    lens = np.array([g.size for g in groups])
    padded = np.full((len(groups), lens.max()), np.nan)
    for i, g in enumerate(groups):
        padded[i, : g.size] = g
    pick = rng.integers(0, len(groups), size=(N_BOOT, len(groups)))  # which runs
    n = lens[pick][..., None]
    idx = (rng.random((N_BOOT, len(groups), lens.max())) * n).astype(int)  # which rounds of each
    values = padded[pick[..., None], idx]
    values[np.arange(lens.max()) >= n] = np.nan  # a shorter run contributes only its own number of rounds
    return np.nanmedian(values.reshape(N_BOOT, -1), axis=1)


def _median(groups: list[np.ndarray]) -> float:
    return float(np.median(np.concatenate(groups)))


def ratio_ci(num, den, level: float = LEVEL) -> tuple[float, float, float]:
    """median(num) / median(den) and its percentile-bootstrap interval, both sides resampled independently.
    Either side may be one run's rounds or a list of several runs' rounds (pooled for the median)."""
    num, den = _groups(num), _groups(den)
    if sum(g.size for g in num) == 0 or sum(g.size for g in den) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(SEED)
    boot = _boot_medians(num, rng) / _boot_medians(den, rng)
    lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return _median(num) / _median(den), float(lo), float(hi)


def double_ratio_ci(num_a, den_a, num_b, den_b, level: float = LEVEL) -> tuple[float, float, float]:
    """(median(num_b)/median(den_b)) / (median(num_a)/median(den_a)) with its bootstrap interval: how a ratio
    measured inside run b moved against the same ratio inside run a (e.g. MLX/torch in two runs)."""
    samples = [np.asarray(s, np.float64) for s in (num_a, den_a, num_b, den_b)]
    if any(s.size == 0 for s in samples):
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(SEED)
    na, da, nb, db = (_boot_medians([s], rng) for s in samples)
    boot = (nb / db) / (na / da)
    lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    point = (np.median(samples[2]) / np.median(samples[3])) / (np.median(samples[0]) / np.median(samples[1]))
    return float(point), float(lo), float(hi)


@dataclass(frozen=True)
class Decision:
    """Did a timing get slower? `ratio` is new/old (> 1: slower) with its interval."""

    verdict: str  # "slower" | "faster" | "no change" | "cannot decide"
    ratio: float
    lo: float
    hi: float
    n: int  # the smallest sample behind the decision
    threshold: float

    @property
    def slower(self) -> bool:
        return self.verdict == "slower"

    def __str__(self) -> str:
        if self.verdict == "cannot decide" and (self.n < MIN_ROUNDS or not np.isfinite(self.lo)):
            return f"cannot decide (n too small: {self.n} round(s), need {MIN_ROUNDS})"
        if self.verdict == "cannot decide":
            return (
                f"cannot decide yet: x{self.ratio:.3g} ({LEVEL:.0%} CI {self.lo:.3g}-{self.hi:.3g}, n={self.n}) "
                f"straddles x{self.threshold:.3g}"
            )
        return f"{self.verdict}: x{self.ratio:.3g} ({LEVEL:.0%} CI {self.lo:.3g}-{self.hi:.3g}, n={self.n})"


def decide(point: float, lo: float, hi: float, n: int, threshold: float, interval: bool = False) -> Decision:
    """A change counts when it is big (point estimate beyond the threshold) and real (the interval excludes 1),
    as asv decides; fewer than MIN_ROUNDS rounds on any side cannot be decided. interval: the three-way rule
    instead (three_way below: the whole interval against the threshold), which may also answer "cannot decide"
    while the interval straddles the threshold, so that `rvc-bench ab --budget-minutes` measures more."""
    if n < MIN_ROUNDS or not np.isfinite(point):
        verdict = "cannot decide"
    elif interval:
        way = three_way(lo, hi, threshold)
        verdict = {REGRESSION: "slower", UNDECIDED: "cannot decide"}.get(way, "faster" if hi < 1 else "no change")
    elif point > threshold and lo > 1:
        verdict = "slower"
    elif point < 1 / threshold and hi < 1:
        verdict = "faster"
    else:
        verdict = "no change"
    return Decision(verdict, point, lo, hi, n, threshold)


def compare(old, new, threshold: float, interval: bool = False) -> Decision:
    """Absolute times of one benchmark, new/old: each side one run's rounds or a list of runs' rounds."""
    point, lo, hi = ratio_ci(new, old)
    return decide(point, lo, hi, min(sum(g.size for g in _groups(x)) for x in (old, new)), threshold, interval)


def compare_relative(old_num, old_den, new_num, new_den, threshold: float, interval: bool = False) -> Decision:
    """A within-run ratio (e.g. MLX time / torch time) in two runs: how much it grew."""
    point, lo, hi = double_ratio_ci(old_num, old_den, new_num, new_den)
    n = min(len(old_num), len(old_den), len(new_num), len(new_den))
    return decide(point, lo, hi, n, threshold, interval)


# Three-way decision (issue 23): the interval of the new/old ratio against the slowdown threshold, as Pinpoint
# answers "different / same / unknown". The ratio of medians is the estimator (ratio_ci): the median ignores the odd
# slow round a shared CPU adds, where a minimum would hide a real slowdown that shows only in typical rounds and a
# mean would be moved by one outlier.
REGRESSION, NO_REGRESSION, UNDECIDED = "regression", "no regression", "undecided"
MIN_HISTORY = 10  # fewer past changes than this give quartiles too coarse to set a threshold from


def three_way(lo: float, hi: float, threshold: float) -> str:
    """Regression when the whole interval lies above the threshold, no regression when it lies wholly below it,
    undecided while it straddles it (more repeats narrow it) or is not finite (too few samples)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return UNDECIDED
    if lo > threshold:
        return REGRESSION
    if hi < threshold:
        return NO_REGRESSION
    return UNDECIDED


def history_threshold(medians, fallback: float) -> float:
    """A benchmark's own threshold from its past runs' medians on one machine, in time order, as rustc-perf sets
    it: 1 + Q3 + 3 x IQR of the run-to-run relative changes |m[i] / m[i-1] - 1|. With fewer than MIN_HISTORY
    changes the table's threshold (`fallback`) is used."""
    m = np.asarray(medians, np.float64)
    changes = np.abs(m[1:] / m[:-1] - 1) if m.size > 1 else np.empty(0)
    if changes.size < MIN_HISTORY:
        return fallback
    q1, q3 = np.percentile(changes, [25, 75])
    return float(1 + q3 + 3 * (q3 - q1))
