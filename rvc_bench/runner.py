"""The benchmark processes of a plan: one pytest process per backend, each in its own environment (MLX's with its
preloaded BLAS, see rvc_bench/blas.py), as `rvc-bench run` starts them and `rvc-bench ab` starts them for each
commit (with that commit's interpreter, worktree and suites)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rvc_bench import machine
from rvc_bench import store as run_store
from rvc_bench.plan import Plan

PYTEST_OUTPUT = ["--benchmark-columns", "median,iqr,rounds", "--benchmark-sort", "name"]


class RunError(RuntimeError):
    """A benchmark process that did not run to the end: one line."""


@dataclass(frozen=True)
class Outcome:
    backend: str
    returncode: int
    stdout: str  # "" unless captured
    stderr: str
    seconds: float

    @property
    def finished(self) -> bool:
        """pytest ended normally: 0, or 1 when some benchmark failed (its rows are still stored)."""
        return self.returncode in (0, 1)


def command(plan: Plan, python: str, suites: list[Path], backend: str, run_id: str, started_at: str) -> list[str]:
    """One backend's pytest command line: the chosen benchmark files, the plan, and the run it joins."""
    return [
        python,
        "-m",
        "pytest",
        *map(str, suites),
        "--benchmark-only",
        "-p",
        "no:cacheprovider",
        "-q",
        *plan.pytest_args(backend),
        "--run-id",
        f"{run_id}@{started_at}",
        *PYTEST_OUTPUT,
    ]


def run_backends(
    plan: Plan,
    suites: list[Path],
    envs: dict[str, dict],
    run_id: str,
    started_at: str,
    *,
    python: str = sys.executable,
    cwd: Path | None = None,
    capture: bool = False,
    announce: Callable[[str], None] | None = None,
) -> list[Outcome]:
    """Each backend of the plan in its own process, in order; stops after the first that does not end normally
    (its outcome is the last one returned). `announce(backend)` runs before each process starts."""
    outcomes = []
    for backend in plan.backends:
        if announce is not None:
            announce(backend)
        t0 = time.perf_counter()
        proc = subprocess.run(
            command(plan, python, suites, backend, run_id, started_at),
            cwd=cwd,
            env=envs[backend],
            capture_output=capture,
            text=True,
        )
        outcomes.append(
            Outcome(backend, proc.returncode, proc.stdout or "", proc.stderr or "", time.perf_counter() - t0)
        )
        if not outcomes[-1].finished:
            break
    return outcomes


def run(
    plan: Plan, suites: list[Path], envs: dict[str, dict], cwd: Path, announce: Callable[[str], None] | None = None
) -> tuple[str, int]:
    """`rvc-bench run`: the plan into its store under a new run id. Returns (run id, pytest's worst status: 0, or 1
    when some benchmark failed). Raises RunError when a process died, after removing a run that stored nothing."""
    store = Path(plan.store)
    run_id, started_at = run_store.new_run_id()
    machine_id = machine.machine_id(machine.machine_info(), plan.machine_label)
    store_existed = store.exists()
    # The plan first: if a backend's process dies, the report can tell the run is incomplete.
    run_store.write_run_plan(store, machine_id, run_id, started_at, plan.stored())
    print(
        f"rvc-bench run {run_id} on machine {machine_id}: {plan.describe()}, one process per backend; store {store}",
        flush=True,
    )
    outcomes = run_backends(plan, suites, envs, run_id, started_at, cwd=cwd, announce=announce)
    last = outcomes[-1]
    if not last.finished:
        # A run that stored no benchmark leaves nothing behind; one that did stays, and reads as incomplete.
        run_store.discard_if_empty(store, machine_id, run_id, store_too=not store_existed)
        raise RunError(
            f"the {last.backend} benchmarks did not run to the end: pytest exited with status "
            f"{last.returncode} (its output is above)"
        )
    return run_id, max(o.returncode for o in outcomes)
