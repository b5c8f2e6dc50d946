"""The regression gate: parity bounds from the one table, and slowdown decisions that can fire at the rounds given,
say when they cannot, and are not moved by one outlier."""

import numpy as np
import pandas as pd
import pytest
from helpers import add_times

from rvc_bench import gate, stats, store, tolerances

THRESHOLD = gate.DEFAULT_MAX_SLOWDOWN


def run_with(mlx_times, torch_times, snr=80.0, machine_id="m-a", stage="synth") -> store.Run:
    run = store.Run(machine_id=machine_id, model_size="full")
    common = dict(stage=stage, variant="v2-40k", device="cpu", device_name="cpu", dtype="float32", audio_seconds=5)
    for backend, times in (("mlx", mlx_times), ("torch", torch_times)):
        for i, t in enumerate(times):
            run.add(backend=backend, metric="time_warm", value=t, unit="s", round=i, **common)
    run.add(backend="mlx", metric="parity.snr_db", value=snr, unit="", reference="torch", **common)
    return run


def statuses(checks, kind):
    return [c.status for c in checks if c.kind == kind]


def test_parity_bound_comes_from_the_table_and_fails_below_it():
    ok = gate.evaluate(run_with([1.0] * 5, [1.0] * 5, snr=75).frame(), None)
    bad = gate.evaluate(run_with([1.0] * 5, [1.0] * 5, snr=42).frame(), None)
    assert statuses(ok, "parity") == [gate.OK] and statuses(bad, "parity") == [gate.FAIL]
    bound = tolerances.bound("synth", tolerances.BENCHMARK, "snr_db")
    assert f"snr_db = 42 (bound snr_db >= {bound:g})" in bad[0].detail
    assert gate.exit_status(bad) == 1 and gate.exit_status(ok) == 0


def test_parity_against_another_variant_keeps_its_stored_bound():
    """Chunking rows are compared with another variant of the same backend ("mlx whole"): the gate applies the bound
    stored with them (their own check), and none to a measured-only row (a variant kept to show what it costs)."""
    run = run_with([1.0] * 5, [1.0] * 5)
    common = dict(stage="rmvpe", device="cpu", device_name="cpu", dtype="float32", audio_seconds=60, backend="mlx")
    run.add(
        variant="whole",
        metric="parity.max_abs",
        value=3e-4,
        unit="",
        reference="mlx e2e",
        bound=1e-4,
        bound_op="<=",
        within_bound=False,
        **common,
    )
    run.add(
        variant="chunked-4096-no-overlap", metric="parity.max_abs", value=0.9, unit="", reference="mlx whole", **common
    )
    checks = [c for c in gate.evaluate(run.frame(), None) if c.kind == "parity" and "rmvpe" in c.subject]
    assert [c.status for c in checks] == [gate.FAIL] and "rmvpe/whole" in checks[0].subject


def test_every_stage_has_a_bound_including_the_pipeline():
    from rvc_bench import tolerances

    for stage in ("mel", "rmvpe", "hubert", "synth", "pipeline"):
        assert tolerances.bounds(stage), stage


@pytest.mark.parametrize("n", [3, 4, 5])
def test_a_planted_slowdown_fires_at_n_rounds_and_equal_runs_do_not(n):
    rng = np.random.default_rng(n)
    base = 1.0 + 0.01 * rng.standard_normal(n)
    same = 1.0 + 0.01 * rng.standard_normal(n)
    slow = 1.3 * (1.0 + 0.01 * rng.standard_normal(n))
    assert stats.compare(base, slow, THRESHOLD).verdict == "slower"
    assert stats.compare(base, same, THRESHOLD).verdict == "no change"
    # through the gate: absolute time of the MLX benchmark and its ratio to torch both fire
    base_run = run_with(base, base).frame()
    slow_run = run_with(slow, base).frame()
    checks = gate.evaluate(slow_run, base_run)
    assert statuses(checks, "time") == [gate.FAIL, gate.OK]  # mlx slower, torch unchanged
    assert statuses(checks, "relative") == [gate.FAIL]
    assert gate.exit_status(checks) == 1


def test_too_few_rounds_cannot_be_decided_and_says_so():
    checks = gate.evaluate(run_with([2.0, 2.0], [1.0, 1.0]).frame(), run_with([1.0, 1.0], [1.0, 1.0]).frame())
    assert set(statuses(checks, "time")) == {gate.UNDECIDED}
    assert "cannot decide (n too small: 2 round(s), need 3)" in checks[-1].detail
    assert gate.exit_status(checks) == 3
    assert gate.exit_status(checks + [gate.Check("parity", "x", "y", gate.FAIL)]) == 1  # a failure wins


def test_an_outlier_that_moves_the_median_past_the_threshold_is_not_significant():
    base = [1.00, 0.98, 1.02, 1.00]
    cand = [0.99, 1.01, 1.30, 9.0]  # the 9.0 round lifts the median (n even) from 1.01 to 1.155
    d = stats.compare(base, cand, 1.15)
    assert d.ratio > 1.15  # big enough: the decision really reaches the significance part ...
    assert d.lo <= 1 and d.verdict == "no change"  # ... which the overlapping rounds fail
    assert not stats.compare([1.0, 1.01, 0.99, 1.0, 1.02], [1.0, 1.0, 5.0, 1.01, 0.99], 1.15).slower


def test_relative_check_survives_a_faster_machine_and_times_compare_only_on_one_machine():
    base = run_with([1.0, 1.01, 0.99], [1.0, 1.0, 1.01], machine_id="m-a").frame()
    cand = run_with([3.0, 3.03, 2.97], [3.0, 3.0, 3.03], machine_id="m-b").frame()  # 3x slower box, same ratio
    checks = gate.evaluate(cand, base)
    assert statuses(checks, "time") == []  # different machines: absolute times never compared
    assert statuses(checks, "relative") == [gate.OK]


def test_compare_runs_pools_the_runs_of_each_side():
    base = [run_with([1.0, 1.02], [1.0, 1.0]).frame(), run_with([0.99, 1.01], [1.0, 1.0]).frame()]
    head = [run_with([1.3, 1.31], [1.0, 1.0]).frame(), run_with([1.29, 1.32], [1.0, 1.0]).frame()]
    checks = gate.compare_runs(pd.concat(base), pd.concat(head))
    assert [c.status for c in checks] == [gate.FAIL, gate.OK]  # 4 rounds a side: decidable


def test_several_runs_a_side_count_the_run_to_run_spread():
    """k runs a side: the cluster bootstrap widens the interval by the spread between runs, and the relative
    check takes each run's own ratio as one sample (so 2 runs a side cannot decide it)."""

    def side(levels, factor=1.0):
        return pd.concat(
            [run_with([factor * level * x for x in (1.0, 1.01, 0.99)], [1.0, 1.0, 1.01]).frame() for level in levels]
        )

    # runs that each look tight but sit 20 % apart from one another: one run a side would call this a slowdown
    base, head = side([0.9, 1.1, 1.0]), side([1.1, 0.9, 1.0], factor=1.2)
    one = gate.compare_runs(side([1.0]), side([1.0], factor=1.2))
    assert [c.status for c in one] == [gate.FAIL, gate.OK]
    several = gate.compare_runs(base, head)
    assert [c.status for c in several] == [gate.OK, gate.OK]  # 1.2x is inside the run-to-run spread
    assert [c.status for c in gate.compare_runs(side([1.0, 1.01, 0.99]), side([1.0, 1.01, 0.99], 1.3))][0] == gate.FAIL
    rel = gate.relative_checks(side([1.0, 1.0]), side([1.3, 1.3]))
    assert [c.status for c in rel] == [gate.UNDECIDED]
    rel = gate.relative_checks(side([1.0, 1.01, 0.99]), side([1.3, 1.31, 1.29]))
    assert [c.status for c in rel] == [gate.FAIL]


def test_reference_implementations_are_timed_but_never_gated():
    """The float64 numpy log-mel is timed for the document's mel table; three times slower it is still no
    regression of a backend (on a shared CPU its millisecond times were the A/B's false alarms)."""

    def with_numpy(factor):
        run = run_with([1.0, 1.01, 0.99], [1.0, 1.0, 1.0], stage="mel")
        times = [t * factor for t in (0.01, 0.0101, 0.0099)]
        add_times(run, times, stage="mel", variant="v2-40k", backend="numpy", dtype="float64", audio_seconds=5)
        return run.frame()

    checks = gate.compare_runs(with_numpy(1.0), with_numpy(3.0)) + gate.relative_checks(
        with_numpy(1.0), with_numpy(3.0)
    )
    assert checks and not [c for c in checks if "numpy" in c.subject]
    assert all(c.status == gate.OK for c in checks)


def test_the_gate_judges_by_the_table_it_is_given():
    """`rvc-bench ab` hands the gate head's own table (another commit's text): its bound decides, not this
    package's."""
    from rvc_bench import tolerances

    text = "stage,check,metric,op,bound,backend,why\nsynth,benchmark,snr_db,>=,80,,a stricter head\n"
    head = tolerances.parse(text)
    assert head.bounds("synth")["snr_db"].bound == 80 and head.bounds("mel") == {}
    rows = run_with([1.0] * 5, [1.0] * 5, snr=75).frame()
    assert statuses(gate.evaluate(rows, None), "parity") == [gate.OK]  # this package's bound: snr_db >= 60
    assert statuses(gate.evaluate(rows, None, table=head), "parity") == [gate.FAIL]
    side_of = pd.Series("head", index=rows.index)
    job = gate.Sides(
        rows=rows,
        side_of=side_of,
        planned={"base": set(), "head": set()},
        failures={"base": ("b", None), "head": ("h", None)},
        outcomes={},
    )
    checks, _ = gate.compare_sides(job, head)
    parity = [c for c in checks if c.kind == "parity"]
    assert [c.status for c in parity] == [gate.FAIL] and "bound snr_db >= 80" in parity[0].detail
    assert [c.status for c in gate.compare_sides(job, tolerances.table())[0] if c.kind == "parity"] == [gate.OK]
