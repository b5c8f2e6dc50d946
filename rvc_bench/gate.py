"""Regression gate: parity bounds on the candidate run, and speed against a baseline, sound on noisy runners.

Speed is judged on what a shared runner can measure fairly:
- the MLX/PyTorch time ratio, paired round by round inside one run (both backends saw the same machine state);
- absolute times only when baseline and candidate ran on the same device model.
A slowdown counts only if the median grew by more than `max_slowdown` AND a one-sided Mann-Whitney U test on the
per-round samples gives p < alpha (asv's rule: big and significant), so one noisy round cannot fail a build.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rvc_bench import store as run_store
from rvc_bench.report import KEY, latest

TOLERANCES = Path(__file__).resolve().parents[1] / "references" / "parity_tolerances.csv"


@dataclass
class Check:
    kind: str  # "parity" | "ratio" | "time"
    subject: str
    detail: str
    ok: bool


def load_tolerances(path: Path = TOLERANCES) -> pd.DataFrame:
    return pd.read_csv(path, comment="#")


def parity_checks(rows: pd.DataFrame, tolerances: pd.DataFrame) -> list[Check]:
    checks = []
    par = rows[rows.metric.str.startswith("parity.")]
    for t in tolerances.itertuples():
        hits = par[(par.stage == t.stage) & (par.metric == f"parity.{t.metric}")]
        for r in hits.itertuples():
            ok = r.value <= t.bound if t.direction == "max" else r.value >= t.bound
            checks.append(Check("parity", f"{r.stage}/{r.variant} {r.backend}({r.device}) {r.audio_seconds:g}s",
                                f"{t.metric} = {r.value:.3g} ({'<=' if t.direction == 'max' else '>='} {t.bound:g})", ok))
    return checks


def _significantly_larger(new: np.ndarray, old: np.ndarray, factor: float, alpha: float) -> tuple[bool, str]:
    from scipy.stats import mannwhitneyu

    growth = float(np.median(new) / np.median(old))
    if growth <= factor:
        return False, f"median x{growth:.2f} (limit x{factor:g})"
    if min(len(new), len(old)) < 3:
        return True, f"median x{growth:.2f} (limit x{factor:g}; too few rounds for a test)"
    p = float(mannwhitneyu(new, old, alternative="greater").pvalue)
    return p < alpha, f"median x{growth:.2f} (limit x{factor:g}), Mann-Whitney p = {p:.3g} (alpha {alpha:g})"


def _round_ratios(rows: pd.DataFrame) -> dict[tuple, np.ndarray]:
    """MLX time / torch time per round, for each (stage, variant, dtype, length) measured on both backends."""
    warm = rows[rows.metric == "time_warm"]
    out = {}
    for key, g in warm.groupby(["stage", "variant", "dtype", "audio_seconds"]):
        mlx = g[g.backend == "mlx"].set_index("round").value
        tch = g[g.backend == "torch"].set_index("round").value
        common = mlx.index.intersection(tch.index)
        if len(common):
            out[key] = (mlx[common] / tch[common]).to_numpy()
    return out


def speed_checks(base: pd.DataFrame, cand: pd.DataFrame, max_slowdown: float, alpha: float) -> list[Check]:
    checks = []
    base_ratios, cand_ratios = _round_ratios(base), _round_ratios(cand)
    for key in sorted(set(base_ratios) & set(cand_ratios)):
        bad, detail = _significantly_larger(cand_ratios[key], base_ratios[key], max_slowdown, alpha)
        checks.append(Check("ratio", f"{key[0]}/{key[1]} {key[3]:g}s MLX/torch", detail, not bad))
    bw, cw = base[base.metric == "time_warm"], cand[cand.metric == "time_warm"]
    for key, g in cw.groupby(KEY):
        ref = bw
        for col, val in zip(KEY, key):
            ref = ref[ref[col] == val]  # device_name is part of the key: only like-for-like hardware
        if ref.empty:
            continue
        bad, detail = _significantly_larger(g.value.to_numpy(), ref.value.to_numpy(), max_slowdown, alpha)
        checks.append(Check("time", f"{key[0]}/{key[1]} {key[2]}({key[3]}) {key[6]:g}s", detail, not bad))
    return checks


def select(store_dir: str | Path, run_id: str | None) -> pd.DataFrame:
    """The rows of one run (the newest rows when run_id is None). An unreadable run file is an error: it may be
    the newest run, and judging an older one instead would pass a build nobody checked."""
    st = run_store.read(store_dir)
    if st.problems:
        raise ValueError(f"unreadable run file in {store_dir}: {st.problems[0]} (fix or remove it; the gate will "
                         "not judge the store around it)")
    if st.rows.empty:
        raise ValueError(f"no readable runs in {store_dir}")
    if run_id is None:
        return latest(st.rows)
    rows = st.rows[st.rows.run_id.str.startswith(run_id)]
    if rows.empty or rows.run_id.nunique() != 1:
        raise ValueError(f"run id {run_id!r} matches {rows.run_id.nunique()} runs in {store_dir}")
    return rows


def evaluate(candidate: pd.DataFrame, baseline: pd.DataFrame | None, max_slowdown: float = 1.25,
             alpha: float = 0.01) -> list[Check]:
    checks = parity_checks(candidate, load_tolerances())
    if baseline is not None:
        checks += speed_checks(baseline, candidate, max_slowdown, alpha)
    return checks


def render(checks: list[Check]) -> str:
    if not checks:
        return "no checks applied (no parity rows and no comparable timings)\n"
    df = pd.DataFrame([{"": "ok" if c.ok else "FAIL", "check": c.kind, "subject": c.subject, "detail": c.detail}
                       for c in checks])
    return df.to_markdown(index=False) + "\n"
