"""`rvc-bench ab BASE [HEAD]`: two commits measured on this machine in one job, alternately, then judged.

As asv `continuous` and pyperf `compare_to` do it: a speed regression is decided only between measurements taken on
the same machine in the same job, with base and head alternating run by run (ABBA...), so that a drift of the
machine (load, heat, another process) hits both sides alike. Each commit runs from its own temporary worktree: its
own suites, plugin and tolerance table, in an environment that satisfies its own dependencies, one process per
backend as `rvc-bench run` does (MLX's with the BLAS preload that the commit's own rvc_bench.blas chooses). Every
run goes to one store under the run id `<comparison>-base<i>` or `<comparison>-head<i>`. Then the checks:

- the runs themselves: a head benchmark that failed or a head process that died is a regression; base's failures
  are shown, and only make the comparisons they leave without data undecidable;
- parity on both sides against head's tolerance table (head's worst value over its runs decides, base's is shown);
- speed, head against base from this job only: each benchmark's warm time (several runs a side: a cluster bootstrap
  over runs, then rounds) and each run's backend/PyTorch ratio (rvc_bench.gate); with `--speed relative` (a shared
  runner, whose absolute times mostly measure its neighbours) only the ratios decide, the times are shown.

With --budget-minutes speed decides three ways, adding ABBA pairs while it cannot decide yet (rvc_bench.budget).

Exit status: 0 pass, 1 regression, 3 cannot decide (n too small, an interval across the threshold when the budget
is spent, a side that could not be measured); bad input (a ref that is no commit, an environment that cannot be
installed) is an error, exit status 2.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from rvc_bench import budget, environments, gate, runner, tolerances
from rvc_bench import store as run_store
from rvc_bench.diff import locate
from rvc_bench.fileio import atomic_write_bytes
from rvc_bench.plan import Plan, counts_text

SIDES = gate.SIDES
RUN_ID = re.compile(r"-(base|head)(\d+)$")
# Each commit's own code says which environment each backend's process gets (its BLAS preload for MLX).
ENV_PROBE = (
    "import json, sys\nfrom rvc_bench import blas\n"
    "print(json.dumps({b: blas.process_env(b, sys.argv[1]) for b in sys.argv[2:]}))"
)


class AbError(ValueError):
    """Bad input, or an environment that cannot be set up: one line, exit status 2."""


class SideFailed(RuntimeError):
    """A commit that could not be measured: a regression when it is head's, undecidable when it is base's."""


@dataclass
class Options:
    base: str
    head: str
    plan: Plan  # what each run measures; plan.store None: a temporary store, removed at the end
    repeats: int
    max_slowdown: float
    speed: str = "all"  # "relative": only the backend/PyTorch ratios gate speed (a shared, noisy runner)
    summary: Path | None = None
    budget_minutes: float | None = None  # the three-way rule, and more pairs while undecided (rvc_bench.budget)
    envs_dir: Path = environments.ENVS_DIR
    locate: bool = True  # name each parity failure's first divergent module (rvc-bench diff at head)


@dataclass
class Side:
    name: str  # "base" | "head"
    ref: str
    commit: str
    subject: str
    tree: Path | None = None  # its temporary worktree
    python: str = sys.executable
    environment: str = "this interpreter"
    stages: list[str] = field(default_factory=list)  # the chosen stages whose suite this commit has
    envs: dict[str, dict] = field(default_factory=dict)  # backend -> its process environment
    failure: str | None = None  # why this commit could not be measured

    @property
    def short(self) -> str:
        return self.commit[:10]


# ---------------------------------------------------------------------------------------------------------------
# Commits and worktrees


def git(repo: Path, *args: str) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise AbError("git not found: rvc-bench ab checks the two commits out with git") from None
    if proc.returncode != 0:
        raise AbError(f"git {' '.join(args)}: {_last_line(proc.stderr)}")
    return proc.stdout.strip()


def toplevel(folder: Path) -> Path:
    try:
        return Path(git(folder, "rev-parse", "--show-toplevel"))
    except AbError:
        raise AbError(
            f"{folder} is not inside a git repository: run rvc-bench ab in a checkout of the project"
        ) from None


def describe(repo: Path, name: str, ref: str) -> Side:
    try:
        commit = git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except AbError:
        raise AbError(f"{name} {ref!r} is not a commit of {repo}") from None
    return Side(name, ref, commit, git(repo, "log", "-1", "--format=%s", commit))


@contextmanager
def worktrees(repo: Path, sides: list[Side]):
    """Each side's commit checked out (detached) into a temporary worktree, removed again however this ends."""
    root = Path(tempfile.mkdtemp(prefix="rvc-bench-ab-"))
    made = []
    try:
        for side in sides:
            side.tree = root / side.name
            git(repo, "worktree", "add", "--detach", "--quiet", str(side.tree), side.commit)
            made.append(side.tree)
        yield sides
    finally:
        for tree in made:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=repo, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=repo, capture_output=True)


# ---------------------------------------------------------------------------------------------------------------
# Environments


def choose_environments(sides: list[Side], envs_dir: Path) -> None:
    """This interpreter for both commits when it satisfies both dependency specs (the fast path), else a cached
    environment for each: never one of each, which would time an environment difference as a code change."""
    specs = {}
    for side in sides:
        try:
            specs[side.name] = environments.dependencies(side.tree)
        except environments.SpecError as err:
            side.failure = str(err)
    missing = {name: environments.unmet(spec) for name, spec in specs.items()}
    if not any(missing.values()):
        return
    for name, lines in missing.items():
        if lines:
            print(f"rvc-bench ab: this environment cannot run {name} as it is: {'; '.join(lines)}", flush=True)
    for side in sides:
        if side.name in specs:
            try:
                side.python = str(environments.cached_env(specs[side.name], envs_dir))
            except environments.InstallError as err:
                raise AbError(str(err)) from None
            side.environment = f"environment {Path(side.python).parents[1]}"


def process_envs(side: Side, opts: Options, cache: Path) -> dict[str, dict]:
    """Each backend's process environment, computed by the commit's own rvc_bench.blas in its own environment."""
    env = {**os.environ, "PYTHONPATH": str(side.tree), "RVC_BENCH_CACHE": str(cache)}
    proc = subprocess.run(
        [side.python, "-c", ENV_PROBE, opts.plan.mlx_blas, *opts.plan.backends],
        cwd=side.tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise SideFailed(f"its benchmark processes cannot be prepared: {_last_line(proc.stderr)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------------
# Measuring


def measure(sides: list[Side], opts: Options, store: Path, comparison: str, pair: int) -> bool:
    """ABBA pair `pair` (budget.schedule's order); stops at the first process that does not end normally (pytest
    status 0 or 1: status 1 means some benchmark failed, which the checks read from the store): False then."""
    by_name = {side.name: side for side in sides}
    for name, i in budget.schedule(pair)[-2:]:
        side = by_name[name]
        run_id = f"{comparison}-{name}{i}"
        started_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        plan = opts.plan.replace(stages=tuple(side.stages), store=str(store))
        suites = [side.tree / "suites" / f"test_bench_{s}.py" for s in side.stages]
        for out in runner.run_backends(
            plan, suites, side.envs, run_id, started_at, python=side.python, cwd=side.tree, capture=True
        ):
            print(
                f"rvc-bench ab: {name} {side.short} run {i} of {max(i, opts.repeats)}, {out.backend}: "
                f"{_last_line(out.stdout)} ({out.seconds:.0f} s)",
                flush=True,
            )
            if not out.finished:
                print((out.stdout + out.stderr)[-4000:], file=sys.stderr)
                side.failure = (
                    f"its {out.backend} benchmark process (run {run_id}) exited with status "
                    f"{out.returncode}: {_last_line(out.stderr or out.stdout)}"
                )
                return False
        for folder in store.glob(f"machine=*/run={run_id}"):  # the plan, where the commit's plugin put the run
            run_store.write_run_plan(
                store,
                folder.parent.name.removeprefix("machine="),
                run_id,
                started_at,
                {
                    **plan.stored(),
                    "ab": {"comparison": comparison, "side": name, "commit": side.commit, "ref": side.ref},
                },
            )
    return True


# ---------------------------------------------------------------------------------------------------------------
# Judging


def _outcomes(runs: dict, side: str) -> dict[str, list[str]]:
    """What went wrong in a side's runs: problem -> the run numbers it happened in."""
    out: dict[str, list[str]] = {}
    for run_id, info in sorted(runs.items()):
        name, number = RUN_ID.search(run_id).groups()
        if name != side:
            continue
        for part_name, part in sorted(info.parts.items()):
            outcomes = part.get("outcomes")
            if outcomes is None:
                out.setdefault(f"the {part_name} process did not finish", []).append(number)
                continue
            for test, outcome in sorted(outcomes.items()):
                if outcome not in ("passed", "skipped"):
                    out.setdefault(f"{test.split('::')[-1]}: {outcome}", []).append(number)
    return out


def judge(
    store: Path,
    comparison: str,
    sides: list[Side],
    table: tolerances.Table,
    max_slowdown: float,
    speed_checks: str = "all",
    interval: bool = False,
) -> tuple[list[gate.Check], list[str], str]:
    """(checks, notes, machine id) of one comparison: this job's runs read back from the store, judged by the gate
    against head's tolerance table; the store's other runs on this machine are the history of each benchmark's
    own threshold."""
    st = run_store.read(store)
    runs = {r: info for r, info in st.runs.items() if r.startswith(f"{comparison}-") and RUN_ID.search(r)}
    rows = st.rows[st.rows.run_id.isin(runs)]
    side_of = rows.run_id.str.extract(RUN_ID, expand=True)[0]
    head_rows = rows[side_of == "head"]
    machine = head_rows.machine_id.iloc[0] if len(head_rows) else (rows.machine_id.iloc[0] if len(rows) else "")
    planned = {s: set() for s in SIDES}  # the tests each side's processes were given
    for run_id, info in runs.items():
        for part in info.parts.values():
            planned[RUN_ID.search(run_id).group(1)].update(part.get("tests", []))
    # Both sides ran here, in this job: one machine, even if the two commits derive its id differently.
    job = gate.Sides(
        rows=rows.assign(machine_id=machine),
        side_of=side_of,
        planned=planned,
        failures={side.name: (side.short, side.failure) for side in sides},
        outcomes={s: _outcomes(runs, s) for s in SIDES},
    )
    history = st.rows[~st.rows.run_id.isin(runs) & (st.rows.machine_id == machine)]
    checks, notes = gate.compare_sides(job, table, max_slowdown, speed_checks, st.problems, interval, history)
    return checks, notes, machine


VERDICT = {0: "pass", 1: "REGRESSION", 3: "cannot decide"}


def summary(
    sides: list[Side],
    opts: Options,
    comparison: str,
    machine: str,
    checks: list[gate.Check],
    notes: list[str],
    kept: str,
) -> str:
    base, head = sides
    plan = opts.plan
    status = gate.exit_status(checks)
    counts = {s: sum(c.status == s for c in checks) for s in (gate.OK, gate.FAIL, gate.UNDECIDED)}
    lines = [
        f"## rvc-bench ab: {VERDICT[status]} (exit status {status})",
        "",
        f"base `{base.short}` ({base.ref}: {base.subject}) against head `{head.short}` ({head.ref}: "
        f"{head.subject}), measured alternately on machine `{machine or 'unknown'}` in one job.",
        "",
        f"{plan.model_size} models; stages {', '.join(plan.stages)}; {plan.lengths_text} s of audio; backends "
        f"{', '.join(f'{b} (device {plan.device(b)})' for b in plan.backends)}; "
        f"{opts.repeats} runs a side in ABBA order{budget.text(opts.budget_minutes)}, each "
        f"{counts_text(plan.rounds)} rounds + {counts_text(plan.warmup)} warm-up; speed gated "
        f"on {'absolute times and ' if opts.speed == 'all' else ''}backend/PyTorch ratios; "
        f"environments: base {base.environment}, head {head.environment}; comparison `{comparison}` ({kept}).",
        "",
        f"gate: {counts[gate.OK]} passed, {counts[gate.FAIL]} failed, {counts[gate.UNDECIDED]} cannot decide",
        "",
        gate.render(checks, opts.max_slowdown, opts.budget_minutes is not None).rstrip(),
    ]
    if notes:
        lines += ["", "not counted (base's own failures only leave comparisons undecided):", ""]
        lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------


def head_table(head: Side) -> tolerances.Table:
    """Head's own tolerance table, from its worktree (parity is judged by the candidate's bounds); an empty one,
    with head failed, when it cannot be read."""
    try:
        return tolerances.parse((head.tree / "references" / tolerances.FILE).read_text(encoding="utf-8"))
    except (OSError, tolerances.ToleranceError) as err:
        head.failure = f"its tolerance table cannot be read: {err}"
        return tolerances.Table({})


def prepare(sides: list[Side], opts: Options, cache: Path) -> None:
    """Each side's suites (the chosen stages it has) and its backends' process environments, or why it cannot run."""
    for side in sides:
        side.stages = [s for s in opts.plan.stages if (side.tree / "suites" / f"test_bench_{s}.py").is_file()]
        if not side.stages and not side.failure:
            suites = ", ".join(f"test_bench_{s}.py" for s in opts.plan.stages)
            side.failure = f"it has none of the suites {suites}"
        if not side.failure:
            try:
                side.envs = process_envs(side, opts, cache)
            except SideFailed as err:
                side.failure = str(err)


def run(opts: Options) -> int:
    repo = toplevel(Path.cwd())
    sides = [describe(repo, "base", opts.base), describe(repo, "head", opts.head)]
    if opts.head == "HEAD" and git(repo, "status", "--porcelain", "--untracked-files=no"):
        print(
            f"rvc-bench ab: note: uncommitted changes are not measured (head is commit {sides[1].short})",
            file=sys.stderr,
        )
    cache = Path(os.environ.get("RVC_BENCH_CACHE") or repo / "fixtures" / "cache").resolve()
    comparison = uuid.uuid4().hex[:8]
    store = Path(opts.plan.store or tempfile.mkdtemp(prefix="rvc-bench-ab-store-")).resolve()
    kept = f"runs kept in {store}" if opts.plan.store else "runs discarded: pass --store DIR to keep them"
    print(
        f"rvc-bench ab {comparison}: base {sides[0].short} ({opts.base}) against head {sides[1].short} "
        f"({opts.head}), {opts.repeats} runs each, alternating; fixture cache {cache}",
        flush=True,
    )
    try:
        with worktrees(repo, sides):
            table = head_table(sides[1])
            choose_environments(sides, opts.envs_dir)
            prepare(sides, opts, cache)
            interval = opts.budget_minutes is not None
            (checks, notes, machine), pairs = budget.measure_pairs(
                lambda n: not any(s.failure for s in sides) and measure(sides, opts, store, comparison, n),
                partial(judge, store, comparison, sides, table, opts.max_slowdown, opts.speed, interval),
                opts.repeats,
                opts.budget_minutes * 60 if interval else None,
            )
    finally:
        if opts.plan.store is None:
            shutil.rmtree(store, ignore_errors=True)
    text = summary(sides, replace(opts, repeats=max(pairs, opts.repeats)), comparison, machine, checks, notes, kept)
    if opts.locate:
        text += locate.appendix(checks, "head's parity failures", commit=sides[1].commit)
    print("\n" + text, end="")
    if opts.summary is not None:
        atomic_write_bytes(opts.summary, text.encode())
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as f:
            f.write(text)
    return gate.exit_status(checks)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
