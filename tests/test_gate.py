"""The regression gate: parity bounds, and slowdowns that are both large and significant."""

import numpy as np

from rvc_bench import gate, store


def run_with(mlx_times, torch_times, snr=80.0, device_name="cpu-x") -> store.Run:
    run = store.Run()
    common = dict(stage="synth", variant="v2-40k", device="cpu", device_name=device_name, dtype="float32", audio_seconds=5)
    for backend, times in (("mlx", mlx_times), ("torch", torch_times)):
        for i, t in enumerate(times):
            run.add(backend=backend, metric="time_warm", value=t, unit="s", round=i, **common)
    run.add(backend="mlx", metric="parity.snr_db", value=snr, unit="", reference="torch", **common)
    return run


def test_parity_bound_fails_below_60_db():
    ok = gate.evaluate(run_with([1.0] * 5, [1.0] * 5, snr=75).frame(), None)
    bad = gate.evaluate(run_with([1.0] * 5, [1.0] * 5, snr=42).frame(), None)
    assert [c.ok for c in ok] == [True] and [c.ok for c in bad] == [False]
    assert "snr_db = 42" in bad[0].detail


def test_noise_does_not_fail_but_a_real_slowdown_does():
    rng = np.random.default_rng(0)
    base = run_with(1.0 + 0.05 * rng.standard_normal(7), 1.0 + 0.05 * rng.standard_normal(7)).frame()
    noisy = run_with(1.0 + 0.05 * rng.standard_normal(7), 1.0 + 0.05 * rng.standard_normal(7)).frame()
    slow = run_with(1.6 + 0.05 * rng.standard_normal(7), 1.0 + 0.05 * rng.standard_normal(7)).frame()
    assert all(c.ok for c in gate.evaluate(noisy, base))
    failed = [c for c in gate.evaluate(slow, base) if not c.ok]
    assert {c.kind for c in failed} == {"ratio", "time"}


def test_one_outlier_round_is_not_significant():
    base = run_with([1.0, 1.01, 0.99, 1.0, 1.02], [1.0] * 5).frame()
    cand = run_with([1.0, 1.0, 5.0, 1.01, 0.99], [1.0] * 5).frame()
    assert all(c.ok for c in gate.evaluate(cand, base))


def test_absolute_times_only_compared_on_the_same_device_model():
    base = run_with([1.0] * 5, [1.0] * 5, device_name="chip-a").frame()
    cand = run_with([3.0] * 5, [3.0] * 5, device_name="chip-b").frame()
    kinds = {c.kind for c in gate.evaluate(cand, base)}
    assert "time" not in kinds and "ratio" in kinds  # the MLX/torch ratio is unchanged, so it passes
    assert all(c.ok for c in gate.evaluate(cand, base))
