"""benchmarks/gate_error_rates.py's replay on hand-made runs (no benchmarking): a slowdown planted in one stage is
judged on that stage's MLX checks only, and the rates it reports follow the rows' noise."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import add_times

from rvc_bench import store

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gate_error_rates.py"


def script():
    spec = importlib.util.spec_from_file_location("gate_error_rates", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def made_runs(n: int, spread: float, seed: int = 0, size: str = "full") -> list[store.Run]:
    """n same-commit runs, two stages on torch and MLX, 7 rounds each with `spread` relative noise."""
    rng, out = np.random.default_rng(seed), []
    for i in range(n):
        run = store.Run(machine_id="gate-aa-m", model_size=size, run_id=f"r{i:02d}", started_at=f"t{i:02d}")
        for stage, centre in (("hubert", 1.0), ("synth", 4.0)):
            for backend, scale in (("torch", 1.0), ("mlx", 1.5)):
                times = centre * scale * (1 + spread * rng.standard_normal(7))
                add_times(run, times, stage=stage, variant="v", backend=backend, audio_seconds=5.0)
        out.append(run)
    return out


def runs(n: int, spread: float, seed: int = 0) -> pd.DataFrame:
    return pd.concat([r.frame() for r in made_runs(n, spread, seed)], ignore_index=True)


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


def test_a_stage_judged_alone_gets_the_verdicts_it_gets_among_every_stage():
    g = script()
    rows, order = runs(4, spread=0.1, seed=2), [f"r{i:02d}" for i in range(4)]
    out = g.outcomes(rows, order, k=1, interval=False)
    for n, (a, b) in enumerate(g.pairs(order, 1)):
        base, head = rows[rows.run_id.isin(a)], rows[rows.run_id.isin(b)]
        for stage in ("hubert", "synth"):
            whole = g.planted(g.judge(base, g.plant(head, 1.1, stage), False), stage)
            got = out[(out.comparison == n) & (out.factor == 1.1) & (out.stage == stage)]
            assert [c.status == g.gate.FAIL for c in whole] == got.fail.tolist() and len(whole) == 2


def test_one_section_per_store_described_by_its_own_runs_plans(tmp_path):
    g = script()
    stores = []
    for size, spread in (("full", 0.01), ("tiny", 0.2)):
        stores.append(tmp_path / size)
        for run in made_runs(4, spread, size=size):
            plan = dict(model_size=size, stages=["hubert", "synth"], lengths=[5.0], backends=["torch", "mlx"])
            store.write_run_plan(
                stores[-1], run.machine_id, run.run_id, run.started_at, plan | dict(rounds=7, warmup=1)
            )
            run.flush(stores[-1], "bench")
    out = tmp_path / "rates.md"
    assert g.main(["--no-measure", "--store", *map(str, stores), "-o", str(out), "--runs-per-side", "1"]) == 0
    text = out.read_text()
    assert text.count("## Full-size models") == text.count("## Tiny-size models") == 1
    assert "rvc-bench run --model-size tiny --stages hubert,synth --lengths 5 --backends torch,mlx" in text
    assert (tmp_path / "rates.png").stat().st_size > 0
    full = text.split("## Tiny-size models")[0]
    assert "0/3 = 0%" in full  # 1 % noise: no comparison with a false alarm at full size


def test_measuring_writes_one_store_only(tmp_path, capsys):
    with pytest.raises(SystemExit):
        script().parse(["--store", str(tmp_path / "a"), str(tmp_path / "b")])
    assert "give one --store" in capsys.readouterr().err
