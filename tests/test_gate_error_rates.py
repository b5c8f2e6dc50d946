"""benchmarks/gate_error_rates.py's replay on hand-made runs (no benchmarking): a slowdown planted in one stage is
judged on that stage's MLX checks only, and the rates it reports follow the rows' noise."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
from helpers import add_times

from rvc_bench import store

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gate_error_rates.py"


def script():
    spec = importlib.util.spec_from_file_location("gate_error_rates", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def runs(n: int, spread: float, seed: int = 0) -> pd.DataFrame:
    """n same-commit runs, two stages on torch and MLX, 7 rounds each with `spread` relative noise."""
    rng, frames = np.random.default_rng(seed), []
    for i in range(n):
        run = store.Run(machine_id="gate-aa-m", model_size="full", run_id=f"r{i:02d}", started_at=f"t{i:02d}")
        for stage, centre in (("hubert", 1.0), ("synth", 4.0)):
            for backend, scale in (("torch", 1.0), ("mlx", 1.5)):
                times = centre * scale * (1 + spread * rng.standard_normal(7))
                add_times(run, times, stage=stage, variant="v", backend=backend, audio_seconds=5.0)
        frames.append(run.frame())
    return pd.concat(frames, ignore_index=True)


def test_a_planted_stage_is_caught_on_its_own_checks_and_quiet_runs_raise_no_alarm():
    g = script()
    rows = runs(4, spread=0.01)
    order = [f"r{i:02d}" for i in range(4)]
    out = g.outcomes(rows, order, k=1, interval=False)
    aa, planted = out[out.factor == 1.0], out[out.factor == 1.5]
    assert len(aa) == 3 * 6 and not aa.fail.any()  # 3 comparisons x (4 times + 2 ratios); 1 % noise: no alarm
    assert set(planted.stage) == {"hubert", "synth"} and planted.fail.all()  # each stage's MLX time and ratio
    assert len(planted) == 3 * 2 * 2  # comparisons x stages x (MLX time, ratio): torch's checks are not planted
    assert g.smallest_detected(out) <= 1.2
    rec = g.summary(out, 1, "fixed", run_minutes=5.0)
    assert rec["CI minutes"] == "10" and rec["goal met"] == "yes" and rec["any false alarm"] == "0/3 = 0%"
    assert g.summary(out, 1, "fixed", run_minutes=15.0)["goal met"] == "no (over budget)"


def test_noisy_runs_miss_small_slowdowns():
    g = script()
    rows = runs(4, spread=0.3, seed=1)
    out = g.outcomes(rows, [f"r{i:02d}" for i in range(4)], k=1, interval=False)
    assert out[out.factor == 1.05].fail.mean() < 0.5  # 30 % noise hides 5 %
    assert g.summary(out, 1, "fixed", run_minutes=1.0)["goal met"].startswith("no")
