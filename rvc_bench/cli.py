"""rvc-bench: run the suites into the store, regenerate the report, gate regressions (also of one commit
against another, measured here), convert checkpoints, check the machine."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rvc_bench import blas
from rvc_bench.arguments import DEFAULT_REPORT, DEFAULT_REPORT_CWD, PROJECT, build_parser
from rvc_bench.fileio import OutputError, check_folder, check_output
from rvc_bench.plan import Plan, PlanError, installed_backends


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------------------------
# run


def _check_report(path: Path, named: bool, force: bool, store: Path) -> None:
    """The report may replace the generated default, but not a file the user named (without --force), and never
    a file of the store it is made from; its figures go into a writable folder beside it (generated names)."""
    from rvc_bench.report import files as report

    document, figures = report.outputs(path)
    check_output(document, sorted(store.rglob("*.parquet")), force=force or not named)
    check_folder(figures, "figures folder")


def _check_run(args, plan: Plan) -> dict[str, dict[str, str]]:
    """Every option of `run`, checked before the first benchmark starts (so a bad one costs nothing). Returns each
    backend's process environment: only MLX's gets the preloaded BLAS (see rvc_bench/blas.py)."""
    from rvc_bench import fixtures, stages
    from rvc_bench.layout import CheckpointError

    envs = _check_backends(plan)
    try:
        if plan.weights_dir:  # the real checkpoints the suites take, read (safe and strict) before anything runs
            stages.check_weights_dir(Path(plan.weights_dir))
    except CheckpointError as err:
        raise UserError(str(err)) from None
    check_folder(fixtures.cache_dir(), "the fixture cache (RVC_BENCH_CACHE)")
    check_folder(plan.store, "--store")
    if not args.no_report:
        _check_report(Path(args.report or DEFAULT_REPORT), args.report is not None, args.force, Path(plan.store))
    return envs


def _check_backends(plan: Plan) -> dict[str, dict[str, str]]:
    """Each backend's device, and its process environment (--mlx-blas mkl without the wheel is an error now, not
    after the torch half ran)."""
    from rvc_bench.backends import BackendError, get_backend

    try:
        for name in plan.backends:
            get_backend(name, plan.device(name))
        return {backend: blas.process_env(backend, plan.mlx_blas) for backend in plan.backends}
    except (BackendError, blas.BlasError) as err:
        raise UserError(str(err)) from None


def _plan(args, **kw) -> Plan:
    try:
        return Plan.from_options(lambda name: getattr(args, name, None), **kw)
    except PlanError as err:
        raise UserError(str(err)) from None


def cmd_run(args) -> int:
    from rvc_bench import runner

    suites = PROJECT / "suites"
    if not suites.is_dir():
        raise UserError(f"no suites/ folder next to the package ({PROJECT}): run rvc-bench from a source checkout")
    installed = None
    if not args.backends:  # by default every backend whose framework is installed here, each one skipped saying why
        installed, skipped = installed_backends()
        for backend, reason in skipped.items():
            print(f"rvc-bench run: skipping {backend}: {reason}", flush=True)
        if not installed:
            raise UserError("no backend is installed here (torch, mlx or onnxruntime): pip install -e .")
    plan = _plan(args, backends=installed)
    plan = plan.replace(store=str(Path(plan.store).resolve()))
    selected = [suites / f"test_bench_{s}.py" for s in plan.stages]  # the benchmarks, not the parity tests
    missing = [p for p in selected if not p.is_file()]
    if missing:
        raise UserError(f"suite not found: {missing[0]}")
    envs = _check_run(args, plan)

    def announce(backend: str) -> None:
        preload = f" (preloading {blas.select(plan.mlx_blas).describe()})" if blas.MARKER in envs[backend] else ""
        print(f"rvc-bench run: {backend} benchmarks{preload}", flush=True)

    try:
        _, status = runner.run(plan, selected, envs, PROJECT, announce)
    except runner.RunError as err:
        raise UserError(str(err)) from None
    if not args.no_report:
        from rvc_bench.report import files as report

        out = report.write(Path(plan.store), args.report or DEFAULT_REPORT)
        print(f"rvc-bench run: report written to {out}")
    return status


# ---------------------------------------------------------------------------------------------------------------
# report


def cmd_report(args) -> int:
    from rvc_bench.report import files as report

    store = Path(args.store)
    if not store.is_dir():
        raise UserError(f"run store not found: {store} (run `rvc-bench run` first)")
    out = Path(args.output or DEFAULT_REPORT_CWD)
    if not args.check:
        _check_report(out, args.output is not None, args.force, store)
    try:
        if args.check:
            problem = report.check(store, out)
            if problem:
                print(
                    f"rvc-bench report --check: {problem}; run `rvc-bench report` and commit the result",
                    file=sys.stderr,
                )
                return 1
            print(f"{out} is what the store generates")
            return 0
        out = report.write(store, out)
    except report.ReportError as err:
        raise UserError(str(err)) from None
    print(f"wrote {out}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# gate


def cmd_gate(args) -> int:
    from rvc_bench import gate

    try:
        candidate, problems = gate.select(args.store, args.candidate)
        baseline = None
        if args.baseline or args.baseline_store:
            baseline, more = gate.select(args.baseline_store or args.store, args.baseline)
            problems = sorted(set(problems) | set(more))
    except gate.GateError as err:
        raise UserError(str(err)) from None
    checks = gate.evaluate(candidate, baseline, args.max_slowdown, problems)
    print(gate.render(checks, args.max_slowdown), end="")
    if args.locate:
        from rvc_bench.diff import locate

        print(locate.appendix(checks, "the parity failures"), end="")
    counts = {status: sum(c.status == status for c in checks) for status in (gate.OK, gate.FAIL, gate.UNDECIDED)}
    print(
        f"gate: {counts[gate.OK]} passed, {counts[gate.FAIL]} failed, {counts[gate.UNDECIDED]} cannot decide "
        "(n too small)"
    )
    return gate.exit_status(checks)


# ---------------------------------------------------------------------------------------------------------------
# ab


def cmd_ab(args) -> int:
    """Two commits measured alternately on this machine, then the gate: see rvc_bench/ab.py."""
    import signal

    from rvc_bench import ab

    plan = _plan(args, min_rounds=1)  # a side with no warm round has nothing to compare
    _check_backends(plan)  # an unavailable device is bad input here, not a side that failed
    if plan.store:
        check_folder(plan.store, "--store")
    if args.summary:
        check_output(args.summary, [], args.force)
    same = ("base", "head", "repeats", "max_slowdown", "speed", "budget_minutes", "locate")  # as parsed
    summary = Path(args.summary) if args.summary else None
    opts = ab.Options(plan=plan, summary=summary, **{k: getattr(args, k) for k in same})

    def interrupt(signum, frame):  # a cancelled CI job: end like Ctrl-C, so the worktrees are removed
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        return ab.run(opts)
    except ab.AbError as err:
        raise UserError(str(err)) from None
    except KeyboardInterrupt:
        print("rvc-bench ab: interrupted (temporary worktrees removed)", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------------------------------------------
# convert


def cmd_convert(args) -> int:
    from rvc_bench import stages
    from rvc_bench.layout import CheckpointError

    src = Path(args.checkpoint)
    dst = Path(args.output) if args.output else src.parent / f"{src.name if src.is_dir() else src.stem}.safetensors"
    check_output(dst, [src], args.force)
    try:
        stage = stages.recognise_path(src) if args.kind == "auto" else stages.get(args.kind)
        stage.convert.convert_file(src, dst)
    except CheckpointError as err:
        raise UserError(str(err)) from None
    print(f"converted {stage.name} checkpoint {src} -> {dst}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# doctor


def cmd_doctor(args) -> int:
    """One screen: what this machine will measure, what is missing and the command that fixes each."""
    from rvc_bench import backends as B
    from rvc_bench import machine as M

    versions = {name: M.framework_version(name) for name in M.FRAMEWORK_MODULES}
    print(
        f"machine: {M.cpu_model()}, {os.cpu_count()} cores, {sys.platform} {os.uname().machine}, Python "
        f"{sys.version.split()[0]}, torch {versions['torch'] or 'missing'}, mlx {versions['mlx'] or 'missing'}, "
        f"onnxruntime {versions['onnx'] or 'missing'}"
    )
    if versions["onnx"]:
        import onnxruntime

        print(f"ONNX Runtime execution providers in this build: {', '.join(onnxruntime.get_available_providers())}")
    table = M.diagnosis({"torch": B.TORCH_DEVICES, "mlx": B.MLX_DEVICES, "onnx": B.ONNX_DEVICES})
    width = max(len(d.label) for d in table)
    for d in table:
        print(f"  {d.label:<{width}}  {'yes' if d.available else 'no':<3}  {d.reason}".rstrip())
    fixes = [(d.label, d.fix) for d in table if not d.available and d.fix != M.INSTALL]
    fixes += [(name, M.INSTALL) for name, version in versions.items() if not version]
    best = [f"{n}:{M.available_devices(n)[0]}" for n in versions if versions[n]]
    print("`rvc-bench run` measures: " + ", ".join(best) + " (each against torch)")
    try:
        probes = M.cpu_blas()
    except RuntimeError as err:
        raise UserError(str(err)) from None
    if probes is not None:
        _print_cpu_blas(probes)
        fixes += probes.fixes
    if "mps" in M.torch_devices():
        print(
            f"PYTORCH_ENABLE_MPS_FALLBACK={os.environ.get('PYTORCH_ENABLE_MPS_FALLBACK', '0')} "
            "(needed only by torch builds without MPS stft)"
        )
    if fixes:
        print("missing here, and the fix:")
        for what, fix in fixes:
            print(f"  {what}: {fix}")
    return 0


def _print_cpu_blas(probes) -> None:
    from rvc_bench import machine as M

    print(f"CPU BLAS, fp32 {blas.PROBE_N}x{blas.PROBE_N} matmul (a loaded machine measures less):")
    print(
        f"  torch:cpu                    {probes.torch['torch_cpu_sgemm_gflops']:7.1f} GFLOP/s  "
        f"{probes.torch['torch_blas']}"
    )
    print(
        f"  mlx:cpu in this process      {probes.mlx_here['mlx_cpu_sgemm_gflops']:7.1f} GFLOP/s  "
        f"{probes.mlx_here['mlx_cpu_blas']}"
    )
    if "cpu" in M.onnx_devices():
        print("  onnx:cpu                     ONNX Runtime's own MLAS kernels (no BLAS to choose, none preloaded)")
    if probes.mlx_run is not None:
        child = probes.mlx_run
        print(
            f"  mlx:cpu in `rvc-bench run`   {child['mlx_cpu_sgemm_gflops']:7.1f} GFLOP/s  {child['mlx_cpu_blas']} "
            f"({child['mlx_cpu_blas_path']}); also `rvc-bench infer --backend mlx`"
        )


# ---------------------------------------------------------------------------------------------------------------
# infer, stream and diff


def _restart_with_mlx_blas(args) -> None:
    if args.own_process:  # a caller of main() keeps its own process and BLAS
        try:
            blas.restart_for_mlx(args.mlx_blas)
        except blas.BlasError as err:
            raise UserError(str(err)) from None


def _ready_to_convert(args) -> None:
    """infer and stream: the models are given (or synthetic ones asked for); on MLX the command restarts itself once
    in MLX's BLAS environment."""
    if args.hubert is None and not args.synthetic_models:  # random weights would make noise that looks like output
        raise UserError(
            "no --hubert: pass the content encoder (hubert_base.pt, or a Hugging Face ContentVec folder), "
            "or --synthetic-models to run on random synthetic weights (timing, tests)"
        )
    if args.backend == "mlx":
        _restart_with_mlx_blas(args)


def _convert(args, convert) -> int:
    """infer and stream: `convert(args)` returns the summary line; bad input is an InferError."""
    from rvc_bench import infer

    _ready_to_convert(args)
    try:
        print(convert(args))
    except infer.InferError as err:
        raise UserError(str(err)) from None
    return 0


def cmd_infer(args) -> int:
    """The whole conversion on one backend (rvc_bench.infer); restarts itself once in MLX's BLAS environment."""
    from rvc_bench import infer

    return _convert(args, infer.convert_file)


def cmd_diff(args) -> int:
    """Where two sides of a stage part (rvc_bench.diff): 0 none, 1 found, 2 bad input."""
    from rvc_bench.diff import run, show

    if any(s.startswith("mlx") for s in args.sides) or not args.sides or args.port:
        _restart_with_mlx_blas(args)
    try:
        report = run.from_args(args)
    except run.INPUT_ERRORS as err:
        raise UserError(str(err)) from None
    print(show.output(report, args.json, args.all), end="")
    return 1 if report.diverged else 0


def cmd_stream(args) -> int:
    """The live mode on one backend, fed from a file (rvc_bench.stream): the output and the latency figures."""
    from rvc_bench import stream

    return _convert(args, stream.stream_file)


# ---------------------------------------------------------------------------------------------------------------

COMMANDS = {
    "run": cmd_run,
    "report": cmd_report,
    "gate": cmd_gate,
    "ab": cmd_ab,
    "convert": cmd_convert,
    "doctor": cmd_doctor,
    "infer": cmd_infer,
    "diff": cmd_diff,
    "stream": cmd_stream,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__).parse_args(argv)
    # Only the command itself may restart its process (infer); a caller of main() keeps its own process and BLAS.
    args.own_process = argv is None
    try:
        return COMMANDS[args.command](args)
    except (UserError, OutputError) as err:
        print(f"rvc-bench: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the disk said no (full, read-only, vanished folder): one line naming the file
        print(
            f"rvc-bench: error: {err.filename or ''}{': ' if err.filename else ''}{err.strerror or err}",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
