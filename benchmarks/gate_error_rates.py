"""How often does `rvc-bench gate` cry wolf, and how often does it catch a real slowdown, on this machine?

Runs `rvc-bench run` N times at one commit (tiny models, a few stages, default rounds and warm-up, each run two
fresh processes as usual) into a scratch store, then replays the gate's speed decisions on those real runs:

- false alarms: every run against the run before it (N - 1 same-commit A/A comparisons); any "slower" verdict is a
  false alarm;
- detection: the same pairs with a 1.3x slowdown planted in the later run: every MLX round multiplied by 1.3 (so
  the planted run keeps the noise it was measured with); a planted benchmark that is not called "slower" is a miss.

Both the absolute-time checks (same machine) and the relative MLX/PyTorch checks are counted, per check and per
comparison, at several thresholds, so the default --max-slowdown can be chosen from data. Not a test: it takes
~10-20 minutes of CPU; run it on a quiet machine.

    python benchmarks/gate_error_rates.py --runs 21 --store /tmp/gate-aa          # measure, then rates
    python benchmarks/gate_error_rates.py --store /tmp/gate-aa --no-measure       # rates from an earlier store

The rates are printed and written to benchmarks/gate_error_rates.md (`-o`), with the machine, the commit, the
machine's load while it ran and the spread between consecutive runs, so no rate is ever typed by hand.
"""

from __future__ import annotations

import argparse
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

PLANTED = 1.3
THRESHOLDS = (1.05, 1.10, 1.15, 1.20, 1.25)


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


def plant(rows: pd.DataFrame, factor: float, backend: str = "mlx") -> pd.DataFrame:
    rows = rows.copy()
    hit = (rows.metric == "time_warm") & (rows.backend == backend)
    rows.loc[hit, "value"] = rows.loc[hit, "value"] * factor
    return rows


def pairs(order: list[str], k: int) -> list[tuple[list[str], list[str]]]:
    """k = 1: each run against the one before it. k > 1: k runs against the k interleaved with them (runs i, i+2,
    ... against i+1, i+3, ...), as an A/B job measuring base and head alternately would."""
    if k == 1:
        return [([a], [b]) for a, b in zip(order, order[1:])]
    return [(order[i : i + 2 * k : 2], order[i + 1 : i + 2 * k : 2]) for i in range(len(order) - 2 * k + 1)]


def aa_rows(store: Path) -> tuple[pd.DataFrame, list[str]]:
    """The A/A runs' rows, and their run ids in the order they were made."""
    rows = run_store.read(store).rows
    rows = rows[rows.machine_id.str.startswith("gate-aa")]
    return rows, rows[["started_at", "run_id"]].drop_duplicates().sort_values(["started_at", "run_id"]).run_id.tolist()


def drift(store: Path) -> pd.DataFrame:
    """How much one benchmark's median moves from one same-commit run to the next (5th / 50th / 95th percentile
    of the ratio later / earlier), per backend: the noise a speed gate has to see through."""
    rows, order = aa_rows(store)
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


def rates(store: Path, k: int) -> pd.DataFrame:
    rows, order = aa_rows(store)
    if len(order) < 2 * k:
        sys.exit(f"need at least {2 * k} runs in {store}, found {len(order)}")
    out = []
    for threshold in THRESHOLDS:
        tally = {name: [] for name in ("aa_time", "aa_rel", "aa_any", "det_time", "det_rel", "det_all", "undecided")}
        for base_ids, head_ids in pairs(order, k):
            base, head = rows[rows.run_id.isin(base_ids)], rows[rows.run_id.isin(head_ids)]
            aa = gate.compare_runs(base, head, threshold) + gate.relative_checks(base, head, threshold)
            slow = plant(head, PLANTED)
            det = gate.compare_runs(base, slow, threshold) + gate.relative_checks(base, slow, threshold)
            planted_time = [c for c in det if c.kind == "time" and " mlx(" in c.subject]
            planted_rel = [c for c in det if c.kind == "relative"]
            tally["aa_time"] += [c.status == gate.FAIL for c in aa if c.kind == "time"]
            tally["aa_rel"] += [c.status == gate.FAIL for c in aa if c.kind == "relative"]
            tally["aa_any"].append(any(c.status == gate.FAIL for c in aa))
            tally["det_time"] += [c.status == gate.FAIL for c in planted_time]
            tally["det_rel"] += [c.status == gate.FAIL for c in planted_rel]
            tally["det_all"].append(all(c.status == gate.FAIL for c in planted_time + planted_rel))
            tally["undecided"] += [c.status == gate.UNDECIDED for c in aa + det]
        out.append(
            {
                "runs per side": k,
                "threshold": threshold,
                "comparisons": len(pairs(order, k)),
                **{name: f"{sum(v)}/{len(v)} = {sum(v) / len(v):.1%}" if v else "–" for name, v in tally.items()},
            }
        )
    return pd.DataFrame(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True, help="scratch store (created)")
    p.add_argument("--runs", type=int, default=21, help="same-commit runs (comparisons = runs - 1; default 21)")
    p.add_argument("--stages", default="mel,rmvpe,hubert")
    p.add_argument("--lengths", default="5")
    p.add_argument("--model-size", default="tiny", choices=("tiny", "full"))
    p.add_argument("--backends", default="torch,mlx", help="the planted slowdown is MLX's (default torch,mlx)")
    p.add_argument("--rounds", type=int, default=None, help="default: rvc-bench run's default")
    p.add_argument("--no-measure", action="store_true", help="only compute rates from --store")
    p.add_argument(
        "--runs-per-side",
        type=int,
        nargs="+",
        default=[1, 3],
        help="runs on each side of a comparison (default: 1 and 3)",
    )
    p.add_argument(
        "-o",
        "--output",
        default=str(Path(__file__).with_suffix(".md")),
        help="markdown file for the results (default: benchmarks/gate_error_rates.md)",
    )
    args = p.parse_args(argv)
    store = Path(args.store)
    loads = (
        None
        if args.no_measure
        else measure(store, args.runs, args.stages, args.lengths, args.model_size, args.rounds, args.backends)
    )
    rows, order = aa_rows(store)
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip()
    info = machine.machine_info()
    parts = [
        "# Gate error rates, measured\n",
        "<!-- Written by benchmarks/gate_error_rates.py; do not edit by hand. -->\n",
        f"Machine: {info['cpu']}, {info.get('cpu_count')} cores, {info.get('system')} "
        f"{info.get('machine')}; commit `{commit}`; {len(order)} same-commit runs of `rvc-bench run --model-size "
        f"{args.model_size} --stages {args.stages} --lengths {args.lengths} --backends {args.backends}` (rounds: "
        f"{args.rounds or 'the default'}, default warm-up); "
        + (
            f"1-minute load average after each run: {min(loads):.1f} to {max(loads):.1f} (median "
            f"{np.median(loads):.1f}).\n"
            if loads
            else "load not recorded (rates from an earlier store).\n"
        ),
        f"A/A: same-commit runs compared as the gate compares them, at each `--max-slowdown` threshold: one run "
        f"against the previous one, or k runs against the k interleaved with them (relative checks: each run's own "
        f"MLX/PyTorch ratio). Detection: the same comparisons with every MLX round of the later side ×{PLANTED}. "
        "aa_*: false alarms (time = absolute per benchmark, rel = MLX/PyTorch ratio, any = comparisons with at least "
        "one); det_*: planted slowdowns caught (all = every planted check of the comparison). Goals: at most 5 % "
        "false alarms per check, at least 95 % of planted slowdowns caught.\n",
        "Run-to-run drift of each benchmark's median (ratio of consecutive same-commit runs):\n",
        drift(store).to_markdown(index=False) + "\n",
    ]
    for k in args.runs_per_side:
        parts += [f"## {k} run(s) a side\n", rates(store, k).to_markdown(index=False) + "\n"]
    text = "\n".join(parts)
    print(text)
    atomic_write_bytes(Path(args.output), text.encode())
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
