"""The three-way gate decision and the history threshold, on hand-made timing samples (no benchmarking)."""

import numpy as np
import pandas as pd

from rvc_bench import budget, gate, stats, store

RNG = np.random.default_rng(7)


def rounds(centre: float, n: int, spread: float = 0.02) -> np.ndarray:
    return centre * (1 + spread * RNG.standard_normal(n))


def test_a_clear_regression_is_one():
    d = stats.compare(rounds(1.0, 10), rounds(1.5, 10), 1.15, interval=True)
    assert d.verdict == "slower" and d.lo > 1.15 and abs(d.ratio - 1.5) < 0.05


def test_a_clear_non_regression_is_one():
    d = stats.compare(rounds(1.0, 10), rounds(1.0, 10), 1.15, interval=True)
    assert d.verdict == "no change" and d.hi < 1.15


def test_an_interval_across_the_threshold_asks_for_more_then_decides():
    # a 1.3x slowdown in noisy (15 %) rounds: 3 rounds a side straddle 1.15, 60 a side lie above it
    rng = np.random.default_rng(3)
    old, new = 1.0 * (1 + 0.15 * rng.standard_normal(60)), 1.3 * (1 + 0.15 * rng.standard_normal(60))
    few = stats.compare(old[:3], new[:3], 1.15, interval=True)
    assert few.verdict == "cannot decide" and str(few).startswith("cannot decide yet: ")
    assert stats.compare(old[:3], new[:3], 1.15).verdict == "no change"  # the point rule passes it
    assert stats.compare(old, new, 1.15, interval=True).verdict == "slower"


def test_too_few_rounds_are_undecided_whatever_the_ratio():
    d = stats.compare([1.0, 1.0], [9.0, 9.0], 1.15, interval=True)
    assert d.verdict == "cannot decide" and "n too small" in str(d)


def test_three_way_reads_the_interval_against_the_threshold():
    assert stats.three_way(1.16, 1.3, 1.15) == stats.REGRESSION
    assert stats.three_way(0.9, 1.14, 1.15) == stats.NO_REGRESSION
    assert stats.three_way(1.1, 1.2, 1.15) == stats.UNDECIDED
    assert stats.three_way(float("nan"), float("nan"), 1.15) == stats.UNDECIDED


def test_history_threshold_is_q3_plus_three_iqr_of_past_changes():
    # medians whose run-to-run changes are exactly 0.01, 0.02, ..., 0.12 (alternating up/down)
    changes = np.arange(1, 13) / 100
    medians = [1.0]
    for i, c in enumerate(changes):
        medians.append(medians[-1] * (1 + c if i % 2 == 0 else 1 - c))
    q1, q3 = np.percentile(changes, [25, 75])  # 0.0375, 0.0925 by hand: 1 + 0.0925 + 3 * 0.055 = 1.2575
    assert abs(stats.history_threshold(medians, 1.15) - (1 + q3 + 3 * (q3 - q1))) < 1e-12
    assert abs(stats.history_threshold(medians, 1.15) - 1.2575) < 1e-9


def test_short_history_falls_back_to_the_table_threshold():
    assert stats.history_threshold([1.0] * stats.MIN_HISTORY, 1.15) == 1.15  # 9 changes: too few
    assert stats.history_threshold([1.0] * (stats.MIN_HISTORY + 1), 1.15) == 1.0  # 10 changes of 0


# ---------------------------------------------------------------------------------------------------------------
# The gate's absolute-time checks on hand-made runs: the budget loop, and thresholds from a benchmark's history

COMMON = dict(
    stage="synth", variant="v2-40k", device="cpu", device_name="cpu", dtype="float32", audio_seconds=5, unit="s"
)


def one_run(times, run_id: str = "", started_at: str = "") -> pd.DataFrame:
    run = store.Run(machine_id="m-a", model_size="full", run_id=run_id, started_at=started_at)
    for i, t in enumerate(times):
        run.add(backend="mlx", metric="time_warm", value=t, round=i, **COMMON)
    return run.frame()


class Job:
    """A fake A/B job: each pair adds one run a side (5 rounds around base 1.0 and head `factor`, 10 % noise) and
    takes 60 s of a fake clock."""

    def __init__(self, factor: float, seed: int = 5):
        self.rng, self.factor, self.now, self.runs = np.random.default_rng(seed), factor, 0.0, {"base": [], "head": []}

    def measure_pair(self, n: int) -> bool:
        for side, level in (("base", 1.0), ("head", self.factor)):
            self.runs[side].append(one_run(level * (1 + 0.1 * self.rng.standard_normal(5)), f"{side}{n}"))
        self.now += 60
        return True

    def judge(self):
        return (gate.compare_runs(pd.concat(self.runs["base"]), pd.concat(self.runs["head"]), 1.15, interval=True),)

    def run(self, repeats: int, budget_minutes: float | None):
        (checks,), pairs = budget.measure_pairs(
            self.measure_pair, self.judge, repeats, budget_minutes and budget_minutes * 60, lambda: self.now
        )
        return gate.exit_status(checks), pairs


def test_an_undecided_gate_adds_pairs_until_it_decides():
    job = Job(1.3)
    assert job.run(3, None) == (3, 3)  # without a budget: 3 pairs, cannot decide
    status, pairs = Job(1.3).run(3, 20)
    assert status == 1 and 3 < pairs < 20  # the slowdown is found before the budget is spent


def test_a_clear_answer_needs_no_more_pairs():
    assert Job(2.0).run(3, 20) == (1, 3)
    assert Job(1.0).run(3, 20)[0] == 0


def test_a_spent_budget_cannot_decide():
    # a slowdown right at the threshold never leaves it; 5 min of 1-min pairs: pairs 4 and 5 fit, a 6th does not
    assert Job(1.15).run(3, 5) == (3, 5)


def test_history_sets_the_threshold_and_a_short_one_does_not():
    changes = np.arange(1, 13) / 100  # the same changes as above: threshold 1.2575
    medians = np.cumprod([1.0] + [1 + c if i % 2 == 0 else 1 - c for i, c in enumerate(changes)])
    history = pd.concat([one_run([m] * 3, f"past{i:02d}", f"2026-01-01T00:00:{i:02d}Z") for i, m in enumerate(medians)])
    (key, threshold), *rest = gate.history_thresholds(history, 1.15).items()
    assert not rest and abs(threshold - 1.2575) < 1e-9
    assert gate.history_thresholds(history[history.run_id < "past10"], 1.15) == {}  # 9 changes: table's threshold
    # a steady 1.2x slowdown: a regression against 1.15, within this benchmark's own run-to-run changes
    base, head = one_run(np.linspace(0.99, 1.01, 10)), one_run(1.2 * np.linspace(0.99, 1.01, 10))
    assert [c.status for c in gate.compare_runs(base, head, 1.15, interval=True)] == [gate.FAIL]
    (check,) = gate.compare_runs(base, head, 1.15, interval=True, thresholds={key: threshold})
    assert check.status == gate.OK and "x1.26 from this machine's history" in check.detail
