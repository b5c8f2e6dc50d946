"""How often does `rvc-bench gate` cry wolf, and how often does it catch a real slowdown, on this machine?

Runs `rvc-bench run` N times at one commit (default: full-size models, mel, RMVPE, HuBERT and the synthesizer at
5 s, torch and MLX, default rounds and warm-up; each run one process per backend, as usual) into a scratch store,
then replays the gate's speed decisions on those real runs:

- false alarms: same-commit A/A comparisons (k runs a side, interleaved: runs i, i+2, ... against i+1, i+3, ...);
  any "slower" verdict is a false alarm;
- detection: the same comparisons with a slowdown planted in one model stage of the later side: that stage's MLX
  rounds multiplied by 1.05, 1.1, 1.2, 1.3 or 1.5 (so the planted side keeps the noise it was measured with), each
  stage in turn; its absolute-time checks and its MLX/PyTorch ratio check are the planted checks.

Each setting is judged with the gate's default threshold two ways: the fixed rule (a slowdown is a point estimate
beyond the threshold with an interval above 1) and the three-way rule of `rvc-bench ab --budget-minutes` (the
whole interval above the threshold; undecided while it straddles it). Its cost in CI minutes is 2k runs at the
measured mean run time. Not a test: it takes hours at full size on a 2-core CPU.

    python benchmarks/gate_error_rates.py --runs 12 --store /tmp/gate-aa          # measure, then rates
    python benchmarks/gate_error_rates.py --store /tmp/gate-aa --no-measure       # rates from an earlier store
    python benchmarks/gate_error_rates.py --no-measure --store /tmp/gate-aa /tmp/gate-aa-tiny  # both sizes

The tables go to benchmarks/gate_error_rates.md and the power curve to benchmarks/gate_error_rates.png (`-o`), with
the machine, the commit and the spread between consecutive runs, so that no rate is ever typed by hand.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from rvc_bench import gate, machine
from rvc_bench import store as run_store
from rvc_bench.fileio import atomic_write_bytes

FACTORS = (1.05, 1.1, 1.2, 1.3, 1.5)  # planted slowdowns
RULES = {"fixed": False, "three-way": True}  # the `interval` argument of the gate's speed checks
GOAL = {"false_alarms": 0.05, "detected": 0.95, "factor": 1.2, "minutes": 20.0}  # issue 23


def measure(
    store: Path, runs: int, stages: str, lengths: str, model_size: str, rounds: int | None, backends: str
) -> list[float]:
    """Make the runs; return the machine's 1-minute load average after each."""
    loads = []
    for i in range(runs):
        cmd = [
            sys.executable,
            "-m",
            "rvc_bench.cli",
            "run",
            "--model-size",
            model_size,
            "--stages",
            stages,
            "--lengths",
            lengths,
            "--backends",
            backends,
            "--store",
            str(store),
            "--no-report",
            "--machine-label",
            "gate-aa",
        ]
        cmd += ["--rounds", str(rounds)] if rounds else []
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"run {i + 1} failed: {proc.stderr.strip().splitlines()[-1:]}")
        loads.append(os.getloadavg()[0])
        print(f"run {i + 1}/{runs}: {time.perf_counter() - t0:.0f} s, load {loads[-1]:.1f}", flush=True)
    return loads


def plant(rows: pd.DataFrame, factor: float, stage: str, backend: str = "mlx") -> pd.DataFrame:
    """`rows` with every warm round of `backend` on `stage` multiplied by `factor`."""
    rows = rows.copy()
    hit = (rows.metric == "time_warm") & (rows.backend == backend) & (rows.stage == stage)
    rows.loc[hit, "value"] = rows.loc[hit, "value"] * factor
    return rows


def judge(base: pd.DataFrame, head: pd.DataFrame, interval: bool) -> list:
    """The gate's speed checks of head against base at its default threshold."""
    t = gate.DEFAULT_MAX_SLOWDOWN
    return gate.compare_runs(base, head, t, interval) + gate.relative_checks(base, head, t, interval)


def planted(checks: list, stage: str, backend: str = "mlx") -> list:
    """The checks a slowdown planted in `backend`'s `stage` should fail: its times and its ratio to torch."""
    return [c for c in checks if c.subject.startswith(f"{stage}/") and f" {backend}(" in c.subject]


def pairs(order: list[str], k: int) -> list[tuple[list[str], list[str]]]:
    """k = 1: each run against the one before it. k > 1: k runs against the k interleaved with them (runs i, i+2,
    ... against i+1, i+3, ...), as an A/B job measuring base and head alternately would."""
    if k == 1:
        return [([a], [b]) for a, b in zip(order, order[1:])]
    return [(order[i : i + 2 * k : 2], order[i + 1 : i + 2 * k : 2]) for i in range(len(order) - 2 * k + 1)]


def aa_rows(st: run_store.Store) -> tuple[pd.DataFrame, list[str]]:
    """The A/A runs' rows, and their run ids in the order they were made."""
    rows = st.rows[st.rows.machine_id.str.startswith("gate-aa")]
    return rows, rows[["started_at", "run_id"]].drop_duplicates().sort_values(["started_at", "run_id"]).run_id.tolist()


def drift(rows: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """How much one benchmark's median moves from one same-commit run to the next (5th / 50th / 95th percentile
    of the ratio later / earlier), per backend: the noise a speed gate has to see through."""
    med = (
        rows[rows.metric == "time_warm"]
        .groupby(["run_id", "test"])
        .agg(value=("value", "median"), backend=("backend", "first"))
    )
    out = []
    for backend, grp in med.groupby("backend"):
        table = grp.value.unstack("test").reindex(order)
        ratios = (table.shift(-1) / table).iloc[:-1].to_numpy().ravel()
        ratios = ratios[np.isfinite(ratios)]
        out.append(
            {
                "backend": backend,
                "run-to-run ratios": len(ratios),
                **{f"p{q}": f"×{np.percentile(ratios, q):.2f}" for q in (5, 50, 95)},
            }
        )
    return pd.DataFrame(out)


def outcomes(rows: pd.DataFrame, order: list[str], k: int, interval: bool) -> pd.DataFrame:
    """One record per check judged: factor 1.0 for the A/A comparisons (every check), else the planted checks of
    each stage at each factor; columns factor, stage, kind, comparison, fail, undecided."""
    recs = []
    stages = sorted(set(rows.stage))
    for n, (base_ids, head_ids) in enumerate(pairs(order, k)):
        base, head = rows[rows.run_id.isin(base_ids)], rows[rows.run_id.isin(head_ids)]
        cases = [(1.0, None, judge(base, head, interval))]
        for st in stages:  # each stage's checks depend on its own rows only: judge those alone (4x less work)
            b, h = base[base.stage == st], head[head.stage == st]
            cases += [(f, st, planted(judge(b, plant(h, f, st), interval), st)) for f in FACTORS]
        for factor, stage, checks in cases:
            recs += [
                dict(
                    factor=factor,
                    stage=stage or c.subject.split("/")[0],
                    kind=c.kind,
                    comparison=n,
                    fail=c.status == gate.FAIL,
                    undecided=c.status == gate.UNDECIDED,
                )
                for c in checks
            ]
    return pd.DataFrame(recs)


def pct(flags: pd.Series) -> str:
    return f"{int(flags.sum())}/{len(flags)} = {flags.mean():.0%}" if len(flags) else "–"


def smallest_detected(out: pd.DataFrame) -> float:
    """The smallest planted factor whose checks fail at least GOAL['detected'] of the time (nan: none)."""
    caught = out[out.factor > 1].groupby("factor").fail.mean()
    hits = caught[caught >= GOAL["detected"]]
    return float(hits.index.min()) if len(hits) else float("nan")


def summary(out: pd.DataFrame, k: int, rule: str, run_minutes: float) -> dict:
    aa = out[out.factor == 1.0]
    per_comparison = aa.groupby("comparison").fail.any()
    minutes = 2 * k * run_minutes
    rec = {
        "runs a side": k,
        "rule": rule,
        "CI minutes": f"{minutes:.0f}",
        "comparisons": aa.comparison.nunique(),
        "false alarms (time)": pct(aa[aa.kind == "time"].fail),
        "false alarms (ratio)": pct(aa[aa.kind == "relative"].fail),
        "any false alarm": pct(per_comparison),
        "A/A undecided": pct(aa.undecided),
    }
    rec |= {f"caught x{f:g}": pct(out[out.factor == f].fail) for f in FACTORS}
    smallest = smallest_detected(out)
    rec["95 % caught from"] = "none" if np.isnan(smallest) else f"x{smallest:g}"
    ok = aa.fail.mean() <= GOAL["false_alarms"] and out[out.factor == GOAL["factor"]].fail.mean() >= GOAL["detected"]
    rec["goal met"] = "yes" if ok and minutes <= GOAL["minutes"] else ("no (over budget)" if ok else "no")
    return rec


def power_figure(sections: dict, path: Path) -> None:
    """Share of checks called slower against the planted factor (1.0: the false-alarm rate), per setting: one row
    of panels per model size (`sections`: model size -> setting -> outcomes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(sections), 2, figsize=(10, 4 * len(sections)), sharey=True, squeeze=False)
    for row, (size, curves) in zip(axes, sections.items()):
        for ax, kind in zip(row, ("time", "relative")):
            for label, out in curves.items():
                sel = out[out.kind == kind].groupby("factor").fail.mean()
                ax.plot(sel.index, sel.values, marker="o", label=label)
            ax.axhline(GOAL["detected"], color="grey", ls="--", lw=0.8)
            ax.axhline(GOAL["false_alarms"], color="grey", ls=":", lw=0.8)
            ax.axvline(GOAL["factor"], color="grey", ls="-.", lw=0.8)
            checks = "absolute time" if kind == "time" else "MLX/PyTorch ratio"
            ax.set(title=f"{size} models: {checks} checks", xlabel="planted slowdown")
        row[0].set_ylabel("share called slower (x1.0: false alarms)")
        row[1].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def run_minutes(runs: dict, order: list[str]) -> float:
    """The mean wall time of the runs (the store's run infos), from their start to their last process's end, in
    minutes."""
    walls = [runs[r].wall_seconds() for r in order if runs[r].wall_seconds() is not None]
    return float(np.mean(walls)) / 60 if walls else float("nan")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--store",
        required=True,
        nargs="+",
        help="scratch store of same-commit runs, one per model size (created when measuring: exactly one)",
    )
    p.add_argument("--runs", type=int, default=12, help="same-commit runs (default 12)")
    p.add_argument("--stages", default="mel,rmvpe,hubert,synth")
    p.add_argument("--lengths", default="5")
    p.add_argument("--model-size", default="full", choices=("tiny", "full"))
    p.add_argument("--backends", default="torch,mlx", help="the planted slowdown is MLX's (default torch,mlx)")
    p.add_argument("--rounds", type=int, default=None, help="default: rvc-bench run's default")
    p.add_argument("--no-measure", action="store_true", help="only compute rates from the stores")
    p.add_argument("--runs-per-side", type=int, nargs="+", default=[1, 2, 3], help="k runs a side (default 1 2 3)")
    p.add_argument(
        "-o",
        "--output",
        default=str(Path(__file__).with_suffix(".md")),
        help="markdown file for the results (default: benchmarks/gate_error_rates.md; the figure beside it, .png)",
    )
    args = p.parse_args(argv)
    if not args.no_measure and len(args.store) != 1:
        p.error("measuring writes one store: give one --store, or --no-measure to read several")
    return args


def section_header(st: run_store.Store, rows: pd.DataFrame, order: list[str], loads, minutes: float) -> list[str]:
    """What was measured, read from the runs' own plans (so a store read again later is described as it was made)."""
    plan = st.runs[order[0]].plan or {}
    commits = ", ".join(f"`{c[:12]}`" for c in sorted(set(rows.git_commit)))
    load = (
        f"1-minute load average after each run: {min(loads):.1f} to {max(loads):.1f} (median {np.median(loads):.1f})"
        if loads
        else "load not recorded here (rates from an earlier store)"
    )
    lengths = ",".join(f"{x:g}" for x in plan.get("lengths", []))
    command = (
        f"rvc-bench run --model-size {plan.get('model_size')} --stages {','.join(plan.get('stages', []))} "
        f"--lengths {lengths} --backends {','.join(plan.get('backends', []))}"
    )
    return [
        f"## {str(plan.get('model_size', '?')).capitalize()}-size models\n",
        f"Commit {commits}; {len(order)} same-commit runs of `{command}` ({plan.get('rounds')} rounds after "
        f"{plan.get('warmup')} warm-up), {minutes:.1f} min each on average; {load}.\n",
        "Run-to-run drift of each benchmark's median (ratio of consecutive same-commit runs):\n",
        drift(rows, order).to_markdown(index=False) + "\n",
    ]


def section(path: Path, runs_per_side: list[int], loads) -> tuple[list[str], str, dict]:
    """One store's rates: its markdown, its model size, and the outcomes of each setting (for the figure)."""
    st = run_store.read(path)
    rows, order = aa_rows(st)
    if not order:
        sys.exit(f"{path}: no same-commit runs (machine label gate-aa) in this store")
    minutes = run_minutes(st.runs, order)
    recs, curves, stages = [], {}, []
    for k in [k for k in runs_per_side if len(order) >= 2 * k]:
        for rule, interval in RULES.items():
            out = outcomes(rows, order, k, interval)
            recs.append(summary(out, k, rule, minutes))
            curves[f"{k} a side, {rule}"] = out
            at = out[out.factor == GOAL["factor"]].groupby("stage").fail
            stages.append({"runs a side": k, "rule": rule, **{s: pct(g) for s, g in at}})
    parts = section_header(st, rows, order, loads, minutes)
    parts += ["### Settings\n", pd.DataFrame(recs).to_markdown(index=False) + "\n"]
    parts += [f"### Caught x{GOAL['factor']:g}, by planted stage\n", pd.DataFrame(stages).to_markdown(index=False)]
    return parts, str(rows.model_size.iloc[0]), curves


def intro() -> list[str]:
    info = machine.machine_info()
    return [
        "# Gate error rates, measured\n",
        "<!-- Written by benchmarks/gate_error_rates.py; do not edit by hand. -->\n",
        f"Machine: {info['cpu']}, {info.get('cpu_count')} cores, {info.get('system')} {info.get('machine')}.\n",
        f"Each setting compares k runs a side (interleaved) at the gate's default threshold "
        f"(x{gate.DEFAULT_MAX_SLOWDOWN:g}), by the fixed rule or the three-way rule of `rvc-bench ab "
        f"--budget-minutes`. False alarms: every check of the A/A comparisons (time: one benchmark's absolute time; "
        f"ratio: its MLX/PyTorch ratio; any: comparisons with at least one). Caught xF: the planted checks (MLX's "
        f"times and ratios of the stage slowed by F, each stage in turn) called slower. CI minutes: 2k runs. Goal "
        f"(issue 23, full-size models): at most {GOAL['false_alarms']:.0%} false alarms and at least "
        f"{GOAL['detected']:.0%} of a x{GOAL['factor']:g} slowdown caught within {GOAL['minutes']:g} minutes.\n",
    ]


def main(argv=None) -> int:
    args = parse(argv)
    stores = [Path(s) for s in args.store]
    loads = None
    if not args.no_measure:
        loads = measure(stores[0], args.runs, args.stages, args.lengths, args.model_size, args.rounds, args.backends)
    parts, figures = intro(), {}
    for path in stores:
        text, size, curves = section(path, args.runs_per_side, loads)
        parts += [*text, ""]
        figures[size] = curves
    figure = Path(args.output).with_suffix(".png")
    parts += [f"![power curve]({figure.name})\n"]
    text = "\n".join(parts)
    print(text)
    power_figure(figures, figure)
    atomic_write_bytes(Path(args.output), text.encode())
    print(f"written to {args.output} and {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
