"""pytest plugin behind every suite: options, parametrisation over lengths and backends, the `bench` fixture
(which times through rvc_bench.measure, checks parity against references/parity_tolerances.csv and records both)
and the writes to the run store, one file per benchmark as it finishes.

The session is lazy: a session that runs no benchmark builds no backend (no framework import, no MLX memory
limits, no BLAS probe) and spawns no git. Backends are built once collection shows which ones the selected
benchmarks need, so an unavailable device still stops the session before any test runs.

Defaults depend on the mode: with --benchmark-only (a benchmark run) full-size models, 5 s, rows to reports/store;
otherwise (the test suite) tiny models, 1 s, and nothing written unless --store is given.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rvc_bench import blas, fixtures, machine, measure, plan, tolerances, variants
from rvc_bench.backends import BackendError, get_backend
from rvc_bench.names import BACKENDS, REFERENCES
from rvc_bench.store import Run, git_state

_SESSION = pytest.StashKey["BenchSession"]()


def pytest_addoption(parser):
    """The run plan's options (rvc_bench.plan declares them, for `rvc-bench run` too), and the run to join."""
    g = parser.getgroup("rvc-bench")
    plan.add_run_options(g.addoption, backends=",".join(BACKENDS), store=None, lengths=None, model_size=None)
    g.addoption("--run-id", default=None, help="ID@STARTED_AT to join an existing run (used by `rvc-bench run`)")


class BenchSession:
    """Per-session state: options, and, only once a benchmark needs them, backends, reference outputs and the run."""

    def __init__(self, config):
        self.config = config
        bench_only = bool(config.getoption("benchmark_only", default=False))
        self.allocator = measure.keep_freed_memory() if bench_only or measure.PROBE_ENV in os.environ else ""
        try:
            self.plan = plan.Plan.from_options(
                lambda name: config.getoption(name, default=None),
                lengths=plan.DEFAULT_LENGTHS if bench_only else plan.TEST_LENGTHS,
                model_size="full" if bench_only else "tiny",
            )
        except plan.PlanError as err:
            raise pytest.UsageError(str(err)) from None
        store = self.plan.store or ("reports/store" if bench_only else None)
        self.store_dir = (config.rootpath / store) if store else None
        self.weights_dir = Path(self.plan.weights_dir) if self.plan.weights_dir else None
        if self.weights_dir is not None and not self.weights_dir.is_dir():
            raise pytest.UsageError(f"--weights-dir {self.weights_dir} is not a folder")
        self.probe_mode = measure.PROBE_ENV in os.environ
        self.references: dict[Any, Any] = {}
        self.backends: dict[str, Any] = {}
        self.descriptions: dict[str, dict] = {}  # backend label -> describe()
        self.planned: list[str] = []  # node ids of the benchmarks this process will run
        self.outcomes: dict[str, str] = {}
        self.stored = 0  # benchmark files written
        self._run: Run | None = None

    model_size = property(lambda self: self.plan.model_size)
    lengths = property(lambda self: list(self.plan.lengths))
    backend_names = property(lambda self: list(self.plan.backends))

    def backend(self, name: str):
        """The backend adapter, built (and its framework imported) on first use."""
        if name not in self.backends:
            if name not in self.backend_names and name not in REFERENCES:
                raise pytest.UsageError(f"backend {name!r} is not selected (--backends {','.join(self.backend_names)})")
            try:
                be = get_backend(name, dict(self.plan.devices).get(name))
            except BackendError as err:
                raise pytest.UsageError(str(err)) from None
            self.backends[name] = be
            self.descriptions[be.label] = {**be.describe(), "label": be.label, "allocator": self.allocator}
        return self.backends[name]

    @property
    def run(self) -> Run:
        """The run being recorded: machine facts, git state and ids are read on first use."""
        if self._run is None:
            info = machine.machine_info()
            commit, dirty = git_state(self.config.rootpath)
            given = self.config.getoption("run_id")
            run_id, started_at = given.split("@", 1) if given else ("", "")
            p = self.plan
            options = {k: v for k, v in p.stored().items() if k != "stages"}  # a process runs the files it is given
            options["weights_dir"] = str(self.weights_dir) if self.weights_dir else None
            self._run = Run(
                machine_id=machine.machine_id(info, p.machine_label),
                model_size=p.model_size,
                run_id=run_id,
                started_at=started_at,
                git_commit=commit,
                git_dirty=dirty,
                meta={"machine": info, "machine_label": p.machine_label, "options": options},
            )
        return self._run

    @property
    def part(self) -> str:
        return "+".join(self.backend_names)

    def write_line(self, text: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or self.probe_mode:
            return
        if capture is None:
            reporter.write_line(text)
            return
        with capture.global_and_fixture_disabled():  # progress must show while a test runs
            reporter.ensure_newline()
            reporter.write_line(text)


def pytest_configure(config):
    config.stash[_SESSION] = BenchSession(config)


def pytest_report_collectionfinish(config, start_path, items):
    """Which BLAS each CPU backend resolved in this process (known once collection has built the backends)."""
    return blas.collection_lines(config.stash[_SESSION].descriptions)


def pytest_generate_tests(metafunc):
    session = metafunc.config.stash[_SESSION]
    # A test that parametrises an argument itself keeps its own values.
    explicit = {
        name.strip()
        for m in metafunc.definition.iter_markers("parametrize")
        for name in (m.args[0].split(",") if isinstance(m.args[0], str) else m.args[0])
    }
    if "seconds" in metafunc.fixturenames and "seconds" not in explicit:
        metafunc.parametrize("seconds", session.lengths, ids=[f"{s:g}s" for s in session.lengths])
    if "backend_name" in metafunc.fixturenames and "backend_name" not in explicit:
        metafunc.parametrize("backend_name", session.backend_names)
    # Only a run that asks for variants gets them as a parameter: the default run's test ids stay as they were.
    if "optimisation" in metafunc.fixturenames and session.plan.variants != (variants.FP32,):
        metafunc.parametrize("optimisation", session.plan.variants)


def pytest_collection_modifyitems(config, items):
    session = config.stash[_SESSION]
    if session.model_size != "full":
        skip = pytest.mark.skip(reason="full-size model check: run with --model-size full")
        for item in items:
            if "full_size" in item.keywords:
                item.add_marker(skip)
    if session.weights_dir is None:
        skip = pytest.mark.skip(reason="needs real weights: pass --weights-dir")
        for item in items:
            if "requires_weights" in item.keywords:
                item.add_marker(skip)


def _param(item, name: str):
    callspec = getattr(item, "callspec", None)
    return callspec.params.get(name) if callspec is not None else None


def _is_benchmark(item) -> bool:
    names = getattr(item, "fixturenames", ())
    return "bench" in names and "benchmark" in names and item.get_closest_marker("skip") is None


@pytest.hookimpl(tryfirst=True)  # before the terminal reporter asks pytest_report_collectionfinish
def pytest_collection_finish(session):
    """Build the backends the selected benchmarks need (an unavailable device stops the session here), and record
    which benchmarks this process is about to run, so that a run killed halfway is seen as incomplete."""
    bench = session.config.stash[_SESSION]
    items = [item for item in session.items if _is_benchmark(item)]
    if not items or bench.probe_mode:
        return
    for name in sorted({_param(item, "backend_name") for item in items} - {None}):
        bench.backend(name)
    bench.planned = [item.nodeid for item in items]
    if bench.store_dir is not None:
        bench.run.write_part(bench.store_dir, bench.part, bench.planned)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    bench = item.config.stash[_SESSION]
    if item.nodeid in bench.planned:
        if report.failed:
            bench.outcomes[item.nodeid] = "failed" if report.when == "call" else f"error in {report.when}"
        elif report.skipped:
            bench.outcomes.setdefault(item.nodeid, "skipped")
        elif report.when == "call":
            bench.outcomes.setdefault(item.nodeid, "passed")
    return report


def pytest_sessionfinish(session, exitstatus):
    bench = session.config.stash.get(_SESSION, None)
    if bench is None or bench.probe_mode or not bench.planned or bench.store_dir is None:
        return
    outcomes = {t: bench.outcomes.get(t, "not run") for t in bench.planned}
    path = bench.run.write_part(bench.store_dir, bench.part, bench.planned, outcomes)
    skipped = list(outcomes.values()).count("skipped")  # not applicable here (a form, a variant): no gap
    bench.write_line(f"rvc-bench: {bench.stored} of {len(bench.planned)} stored, {skipped} skipped, in {path.parent}")


def pytest_benchmark_update_machine_info(config, machine_info):
    bench = config.stash.get(_SESSION, None)
    if bench is not None:
        machine_info["rvc_bench"] = {"backends": bench.descriptions}


class Bench:
    """The `bench` fixture: what a stage benchmark needs, and the only way it records numbers."""

    def __init__(self, session: BenchSession, request):
        self.session = session
        self.request = request
        self._current: dict | None = None
        self._optimisation = variants.FP32
        self._benchmark = None

    model_size = property(lambda self: self.session.model_size)
    backend_names = property(lambda self: self.session.backend_names)  # the backends this process measures
    weights_dir = property(lambda self: self.session.weights_dir)
    cache_dir = property(lambda self: fixtures.cache_dir())

    def backend(self, name: str):
        return self.session.backend(name)

    def optimised(self, runner, stage: str, optimisation: str):
        """`runner` (a pipeline's Models) with an optimisation variant applied; what it cannot run is skipped."""
        try:
            return variants.apply(runner, stage, optimisation)
        except variants.VariantError as err:
            pytest.skip(str(err))

    def audio(self, seconds: float) -> fixtures.Clip:
        return fixtures.clip(seconds)

    def reference(self, key, compute: Callable[[], Any]):
        """A session-wide cached reference output (computed once, whichever backend's test runs first)."""
        if key not in self.session.references:
            self.session.references[key] = compute()
        return self.session.references[key]

    def _add(self, **kw) -> None:
        self.session.run.add(**self._current, test=self.request.node.nodeid, **kw)

    def _begin(self, benchmark, backend, stage: str, variant: str, seconds: float, dtype: str, **settings) -> None:
        self._current = dict(
            stage=stage,
            variant=variant,
            backend=backend.name,
            device=backend.device,
            device_name=self.session.descriptions[backend.label].get("device_name", ""),
            dtype=dtype,
            audio_seconds=seconds,
            **settings,  # store.STREAM_COLUMNS
        )
        self._benchmark = benchmark

    def measure(
        self,
        benchmark,
        backend,
        fn: Callable,
        args: tuple,
        *,
        stage: str,
        variant: str,
        seconds: float,
        dtype: str = "float32",
        optimisation: str = variants.FP32,
    ):
        """Cold call, then warm rounds through pytest-benchmark; records times and memory; returns the output.
        optimisation: the variants.VARIANTS entry applied (`optimised`): the row's variant is `<variant>+<name>`,
        its dtype the variant's, and its parity is held to the variant's check (variants.tolerance_check)."""
        session = self.session
        self._optimisation = optimisation
        if optimisation != variants.FP32:
            variant, dtype = f"{variant}+{optimisation}", variants.get(optimisation).dtype
        self._begin(benchmark, backend, stage, variant, seconds, dtype)
        m = measure.cold_call(backend, fn, args)
        if session.probe_mode:
            measure.write_probe_result(m.cold_s)
            return m.output
        rounds, warmup = session.plan.rounds_for(seconds)
        warm = measure.warm_rounds(benchmark, backend, fn, args, rounds, warmup) if rounds else []
        self._add(metric="time_cold", value=m.cold_s, unit="s")
        for i, t in enumerate(warm):
            self._add(metric="time_warm", value=t, unit="s", round=i)
        self._record_memory(backend, m)
        warm_text = f"warm median {float(np.median(warm)):.3g} s over {len(warm)} rounds" if warm else "first call only"
        session.write_line(f"  {stage}/{variant} {backend.label} {seconds:g}s: cold {m.cold_s:.3g} s, {warm_text}")
        return m.output

    def measure_once(self, benchmark, backend, fn: Callable, args: tuple, rows: Callable, *, stage: str, **kw):
        """One call of a benchmark whose output carries its own timings (the live mode's blocks), through
        pytest-benchmark once, with its memory recorded as measure() records it; rows(output) -> [(metric, value,
        unit, round)] are stored. kw: variant, seconds, dtype and the store's STREAM_COLUMNS settings."""
        self._begin(benchmark, backend, stage, kw.pop("variant"), kw.pop("seconds"), kw.pop("dtype", "float32"), **kw)
        m = benchmark.pedantic(measure.cold_call, args=(backend, fn, args), rounds=1, iterations=1)
        if self.session.probe_mode:
            measure.write_probe_result(m.cold_s)
            return m.output
        for metric, value, unit, i in rows(m.output):
            self._add(metric=metric, value=value, unit=unit, round=i)
        self._record_memory(backend, m)
        return m.output

    def _record_memory(self, backend, m: measure.Measurement) -> None:
        self._add(metric="mem_framework_peak", value=m.mem_framework_peak, unit="bytes")
        for name, value in m.mem_extra.items():
            self._add(metric=name, value=value, unit="bytes")
        self._add(metric="rss_peak_delta", value=m.rss_peak_delta, unit="bytes")
        self._benchmark.extra_info.update(
            device=backend.label,
            device_name=self._current["device_name"],
            time_cold_s=m.cold_s,
            mem_framework_peak=m.mem_framework_peak,
            rss_peak_delta=m.rss_peak_delta,
        )
        if self.session.plan.fresh_process:
            probe = measure.run_probe(self.request.node.nodeid, self._probe_args(backend.name))
            self._add(metric="rss_fresh_process", value=probe["rss_peak"], unit="bytes")
            self._add(metric="time_cold_fresh_process", value=probe["cold_s"], unit="s")
            self._benchmark.extra_info.update(rss_fresh_process=probe["rss_peak"])

    def record_parity(
        self,
        metrics: dict[str, float],
        reference: str = "torch",
        check: str | None = tolerances.BENCHMARK,
        only: tuple[str, ...] | None = None,
    ) -> None:
        """Store parity numbers next to the measurement just taken, each with its bound from the tolerance table's
        `check` and whether it holds, then fail the test if any bound is broken. A reference is its backend on
        the CPU: that measurement itself has nothing to compare, but the same backend on another device (torch on
        MPS or CUDA) is compared with it like any other. check=None: measured only, stored without a bound (e.g. a
        variant kept to show what it costs). only: the check's bounds that apply (the rest are not measured: e.g.
        spectral metrics of audio too short for them)."""
        if self._current is None:
            raise RuntimeError("record_parity() must follow measure()")
        if check == tolerances.BENCHMARK:
            check = variants.tolerance_check(self._optimisation)
        cur = self._current
        if self.session.probe_mode or (cur["backend"], cur["device"], self._optimisation) == (reference, "cpu", "fp32"):
            return
        stage, backend = self._current["stage"], self._current["backend"]
        bounds = tolerances.bounds(stage, check, backend) if check else {}
        bounds = {m: b for m, b in bounds.items() if only is None or m in only}
        for name, value in metrics.items():
            b = bounds.get(name)
            self._add(
                metric=f"parity.{name}",
                value=value,
                unit="",
                reference=reference,
                bound=b.bound if b else float("nan"),
                bound_op=b.op if b else "",
                within_bound=b.holds(value) if b else None,
            )
        self._benchmark.extra_info.update({f"parity_{k}": v for k, v in metrics.items()})
        broken = tolerances.broken(stage, check, metrics, only, backend) if check else []
        assert not broken, f"{stage}/{self._current['variant']} parity: " + "; ".join(broken)

    def flush(self) -> None:
        """Write this benchmark's rows to the store (called when the test ends, whatever its outcome)."""
        run = self.session._run
        if run is None or not run.rows:
            return
        if self.session.store_dir is None:
            run.rows = []
            return
        label = f"{self._current['backend']}:{self._current['device']}"
        run.flush(self.session.store_dir, self.request.node.nodeid, {"backend": self.session.descriptions[label]})
        self.session.stored += 1

    def _probe_args(self, backend: str) -> list[str]:
        # Only the measured backend is set up (no other runtime in its RSS); a numpy reference is in torch's process.
        own = "torch" if backend in REFERENCES else backend
        return self.session.plan.replace(store=None, fresh_process=False).pytest_args(own)


@pytest.fixture
def optimisation():  # the optimisation variant a benchmark measures: fp32 unless the run asks for --variants
    return variants.FP32


@pytest.fixture
def bench(request):
    b = Bench(request.config.stash[_SESSION], request)
    yield b
    b.flush()
