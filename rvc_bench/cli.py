"""rvc-bench: run the suites into the store, regenerate the report, gate regressions (also of one commit\nagainst another, measured here), convert checkpoints, check the machine."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from rvc_bench import blas
from rvc_bench.audio import MAX_CHANNELS, MIN_SECONDS
from rvc_bench.fileio import OutputError, check_folder, check_output

PROJECT = Path(__file__).resolve().parents[1]
SUITES = ("mel", "rmvpe", "hubert", "synth", "pipeline")  # benchmark suites: each stage, then the whole conversion
MLX_BLAS_HELP = ("BLAS preloaded into MLX's Linux CPU process: mkl (the mkl wheel), openblas (a system OpenBLAS), "
                 "bundled (mlx[cpu]'s reference BLAS) or auto (default: mkl, else openblas, else bundled)")
DEFAULT_LENGTHS = "5"  # seconds; with 7 timed rounds the full-size default run takes ~8-10 min on a 2-core CPU
DEFAULT_REPORT = PROJECT / "reports" / "BENCHMARKS.md"  # `run` writes here; `report` into ./reports/
DEFAULT_REPORT_CWD = Path("reports") / "BENCHMARKS.md"
MAX_SECONDS = 3600.0  # longest benchmark length: an hour of audio is ~230 MB per float32 copy, many copies per stage


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument ends like every other error: one line, `rvc-bench: error: ...`, status 2."""

    def error(self, message):
        command = self.prog.removeprefix("rvc-bench").strip()
        self.exit(2, f"rvc-bench: error: {command + ': ' if command else ''}{message} (see {self.prog} --help)\n")


def _lengths(text: str) -> str:
    try:
        values = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"lengths must be seconds separated by commas, got {text!r}") from None
    if not values or any(not MIN_SECONDS <= v <= MAX_SECONDS for v in values):  # also refuses nan
        raise argparse.ArgumentTypeError(f"lengths must be between {MIN_SECONDS:g} s (the shortest audio the stages "
                                         f"take) and {MAX_SECONDS:g} s, got {text!r}")
    return ",".join(f"{v:g}" for v in values)


def _counts(low: int):
    """--rounds / --warmup: one whole number >= low, or one per length (checked against --lengths in `run`)."""
    def parse(text: str) -> str:
        from rvc_bench.measure import per_length

        try:
            per_length(text, len(text.split(",")), low, "the count")
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return text

    return parse


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _float_in(low: float, high: float, closed_low: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and (low <= value if closed_low else low < value) and value < high):
            bounds = f"{'[' if closed_low else '('}{low:g}, {high:g})"
            raise argparse.ArgumentTypeError(f"must be in {bounds}, got {text!r}")
        return value

    return parse


def _stages(text: str) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SUITES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown stage {unknown[0] if unknown else text!r}: choose from {', '.join(SUITES)}")
    return chosen


# ---------------------------------------------------------------------------------------------------------------
# run


def _check_weights_dir(folder: Path) -> None:
    """Read the real checkpoints the suites take from --weights-dir (safe and strict), before anything runs."""
    from rvc_bench import stages
    from rvc_bench.layout import CheckpointError

    if not folder.is_dir():
        raise UserError(f"--weights-dir {folder} is not a folder")
    readers = {"rmvpe.pt": stages.RMVPE.convert.read, "hubert_base.pt": lambda path: stages.HUBERT.convert.read(path, "full")}
    present = [name for name in readers if (folder / name).is_file()]
    if not present:
        raise UserError(f"--weights-dir {folder} holds neither {' nor '.join(readers)}")
    for name in present:
        try:
            readers[name](folder / name)
        except CheckpointError as err:
            raise UserError(str(err)) from None


def _check_report(path: Path, named: bool, force: bool, store: Path) -> None:
    """The report may replace the generated default, but not a file the user named (without --force), and never
    a file of the store it is made from; its figures go into a writable folder beside it (generated names)."""
    from rvc_bench.report import files as report

    document, figures = report.outputs(path)
    check_output(document, sorted(store.rglob("*.parquet")), force=force or not named)
    check_folder(figures, "figures folder")


def _check_run(args, backends: list[str]) -> dict[str, dict[str, str]]:
    """Every option of `run`, checked before the first benchmark starts (so a bad one costs nothing). Returns each
    backend's process environment: only MLX's gets the preloaded BLAS (see rvc_bench/blas.py)."""
    from rvc_bench import fixtures
    from rvc_bench.backends import BackendError, get_backend

    for name in backends:
        try:
            get_backend(name, _device_option(args, name))
        except BackendError as err:
            raise UserError(str(err)) from None
    if args.weights_dir:
        _check_weights_dir(Path(args.weights_dir))
    check_folder(fixtures.cache_dir(), "the fixture cache (RVC_BENCH_CACHE)")
    check_folder(args.store, "--store")
    if not args.no_report:
        _check_report(Path(args.report or DEFAULT_REPORT), args.report is not None, args.force, Path(args.store))
    try:  # --mlx-blas mkl without the wheel is an error now, not after the torch half ran
        return {backend: blas.process_env(backend, args.mlx_blas) for backend in backends}
    except blas.BlasError as err:
        raise UserError(str(err)) from None


def _device_option(args, backend: str) -> str:
    return getattr(args, f"{backend}_device")


def _run_backends(text: str | None) -> list[str]:
    """--backends, or by default every backend whose framework is installed here (each one skipped says why)."""
    from rvc_bench import machine
    from rvc_bench.backends import BACKENDS

    if text is not None:
        backends = [b.strip() for b in text.split(",") if b.strip()]
        unknown = [b for b in backends if b not in BACKENDS]
        if unknown or not backends:
            raise UserError(f"unknown backend {unknown[0] if unknown else text!r}: choose from {', '.join(BACKENDS)}")
        return backends
    backends = [b for b in BACKENDS if machine.available_devices(b)]
    for b in BACKENDS:
        if b not in backends:
            print(f"rvc-bench run: skipping {b}: {machine.available_reason(b, 'cpu')}", flush=True)
    if not backends:
        raise UserError("no backend is installed here (torch, mlx or onnxruntime): pip install -e .")
    return backends


def cmd_run(args) -> int:
    from rvc_bench import machine, store as run_store

    suites = PROJECT / "suites"
    if not suites.is_dir():
        raise UserError(f"no suites/ folder next to the package ({PROJECT}): run rvc-bench from a source checkout")
    store = Path(args.store).resolve()
    selected = [str(suites / f"test_bench_{s}.py") for s in args.stages]  # the benchmarks, not the parity tests
    missing = [p for p in selected if not Path(p).is_file()]
    if missing:
        raise UserError(f"suite not found: {missing[0]}")
    backends = _run_backends(args.backends)
    envs = _check_run(args, backends)
    try:
        label = machine.machine_label(args.machine_label)
    except ValueError as err:
        raise UserError(f"--machine-label: {err}") from None
    from rvc_bench.measure import compact, rounds_and_warmup

    n_lengths = len(args.lengths.split(","))
    try:
        rounds, warmup = rounds_and_warmup(args.rounds, args.warmup, n_lengths)
    except ValueError as err:
        raise UserError(str(err)) from None
    run_id, started_at = run_store.new_run_id()
    machine_id = machine.machine_id(machine.machine_info(), label)
    # The plan first: if a backend's process dies, the report can tell the run is incomplete.
    store_existed = store.exists()
    run_store.write_run_plan(store, machine_id, run_id, started_at, {
        "backends": backends, "stages": args.stages, "lengths": [float(x) for x in args.lengths.split(",")],
        "model_size": args.model_size, "rounds": compact(rounds), "warmup": compact(warmup),
        "fresh_process": args.fresh_process})
    print(f"rvc-bench run {run_id} on machine {machine_id}: stages {','.join(args.stages)}, lengths {args.lengths} s, "
          f"{args.model_size} models, {args.rounds} warm rounds + {args.warmup} warm-up, one process per backend; "
          f"store {store}", flush=True)
    status = 0
    for backend in backends:  # one process each, so each gets its own BLAS environment
        cmd = [sys.executable, "-m", "pytest", *selected, "--benchmark-only", "-p", "no:cacheprovider", "-q",
               "--lengths", args.lengths, "--rounds", str(args.rounds), "--warmup", str(args.warmup),
               "--model-size", args.model_size, "--torch-device", args.torch_device, "--mlx-device", args.mlx_device,
               "--onnx-device", args.onnx_device, "--backends", backend, "--run-id", f"{run_id}@{started_at}",
               "--store", str(store), "--machine-label", label,
               "--benchmark-columns", "median,iqr,rounds", "--benchmark-sort", "name"]
        if args.fresh_process:
            cmd.append("--fresh-process")
        if args.weights_dir:
            cmd += ["--weights-dir", args.weights_dir]
        preload = f" (preloading {blas.select(args.mlx_blas).describe()})" if blas.MARKER in envs[backend] else ""
        print(f"rvc-bench run: {backend} benchmarks{preload}", flush=True)
        code = subprocess.run(cmd, cwd=PROJECT, env=envs[backend]).returncode
        if code not in (0, 1):  # 1 = some tests failed (their rows are still stored)
            # A run that stored no benchmark leaves nothing behind; one that did stays, and reads as incomplete.
            run_store.discard_if_empty(store, machine_id, run_id, store_too=not store_existed)
            raise UserError(f"the {backend} benchmarks did not run to the end: pytest exited with status {code} "
                            "(its output is above)")
        status = max(status, code)
    if not args.no_report:
        from rvc_bench.report import files as report

        out = report.write(store, args.report or DEFAULT_REPORT)
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
                print(f"rvc-bench report --check: {problem}; run `rvc-bench report` and commit the result",
                      file=sys.stderr)
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
    counts = {status: sum(c.status == status for c in checks) for status in (gate.OK, gate.FAIL, gate.UNDECIDED)}
    print(f"gate: {counts[gate.OK]} passed, {counts[gate.FAIL]} failed, {counts[gate.UNDECIDED]} cannot decide "
          "(n too small)")
    return gate.exit_status(checks)


# ---------------------------------------------------------------------------------------------------------------
# ab


def cmd_ab(args) -> int:
    """Two commits measured alternately on this machine, then the gate: see rvc_bench/ab.py."""
    import signal

    from rvc_bench import ab, machine
    from rvc_bench.backends import BACKENDS, BackendError, get_backend

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise UserError(f"unknown backend {unknown[0] if unknown else args.backends!r}: choose from "
                        f"{', '.join(BACKENDS)}")
    devices = {name: _device_option(args, name) for name in backends}  # each backend's --<name>-device
    for name, device in devices.items():  # an unavailable device is bad input here, not a side that failed
        try:
            get_backend(name, device)
        except BackendError as err:
            raise UserError(str(err)) from None
    try:
        blas.select(args.mlx_blas)
        label = machine.machine_label(args.machine_label) if args.machine_label else None
    except (blas.BlasError, ValueError) as err:
        raise UserError(str(err)) from None
    if args.store:
        check_folder(args.store, "--store")
    if args.summary:
        check_output(args.summary, [], args.force)
    opts = ab.Options(base=args.base, head=args.head, stages=args.stages, lengths=args.lengths,
                      model_size=args.model_size, backends=backends, devices=devices, mlx_blas=args.mlx_blas,
                      rounds=args.rounds, warmup=args.warmup,
                      repeats=args.repeats, max_slowdown=args.max_slowdown, speed=args.speed, machine_label=label,
                      store=Path(args.store) if args.store else None,
                      summary=Path(args.summary) if args.summary else None)

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


def _device_fix(name: str, dev: str) -> str:
    """The command that makes a missing device available here, or why none can."""
    if name == "onnx":
        if dev == "coreml":
            return "pip install -U onnxruntime (the macOS wheel has CoreML)" if sys.platform == "darwin" \
                else "none here: needs macOS"
        if not os.path.exists("/proc/driver/nvidia/version"):
            return "none here: no NVIDIA GPU"
        return "pip uninstall -y onnxruntime && pip install onnxruntime-gpu (one module, two wheels: never both)"
    if sys.platform == "darwin" and os.uname().machine == "arm64":
        return "pip install -U torch (MPS needs macOS >= 12.3)" if dev == "mps" \
            else "none here: MLX sees no Metal GPU (a virtual machine?)"
    if dev == "mps" or sys.platform == "darwin":
        return "none here: needs a Mac with Apple Silicon"
    if not os.path.exists("/proc/driver/nvidia/version"):
        return "none here: no NVIDIA GPU" + (" (Metal needs a Mac with Apple Silicon)" if name == "mlx" else "")
    if name == "mlx":
        return "pip install -e '.[cuda]'"
    return "pip install --force-reinstall 'torch>=2.6,<2.14' (PyPI's Linux x86_64 torch wheels are CUDA builds)"


def _mlx_blas_child(choice: str) -> dict:
    """MLX's BLAS and sgemm speed in a fresh process started the way `rvc-bench run` starts MLX's."""
    code = "import json; from rvc_bench import blas; print(json.dumps(blas.mlx_cpu_blas()))"
    proc = subprocess.run([sys.executable, "-c", code], env=blas.process_env("mlx", choice), capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"MLX does not start with --mlx-blas {choice} (broken install?): {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cmd_doctor(args) -> int:
    """One screen: what this machine will measure, what is missing and the command that fixes each."""
    from rvc_bench import backends as B
    from rvc_bench import machine as M

    modules = {"torch": "torch", "mlx": "mlx.core", "onnx": "onnxruntime"}
    versions = {name: None for name in modules}
    for name, mod in modules.items():
        try:
            versions[name] = __import__(mod, fromlist=["_"]).__version__
        except ImportError:
            pass
    print(f"machine: {M.cpu_model()}, {os.cpu_count()} cores, {sys.platform} {os.uname().machine}, Python "
          f"{sys.version.split()[0]}, torch {versions['torch'] or 'missing'}, mlx {versions['mlx'] or 'missing'}, "
          f"onnxruntime {versions['onnx'] or 'missing'}")
    if versions["onnx"]:
        import onnxruntime

        print(f"ONNX Runtime execution providers in this build: {', '.join(onnxruntime.get_available_providers())}")
    fixes = []
    rows = []
    for name, devices in (("torch", B.TORCH_DEVICES), ("mlx", B.MLX_DEVICES), ("onnx", B.ONNX_DEVICES)):
        available = M.available_devices(name)
        for dev in devices:
            ok = dev in available
            rows.append((f"{name}:{dev}", "yes" if ok else "no", "" if ok else M.available_reason(name, dev)))
            if not ok and versions[name]:
                fixes.append((f"{name}:{dev}", _device_fix(name, dev)))
    width = max(len(r[0]) for r in rows)
    for label, ok, why in rows:
        print(f"  {label:<{width}}  {ok:<3}  {why}".rstrip())
    for name in modules:
        if not versions[name]:
            fixes.append((name, "pip install -e ."))
    best = [f"{n}:{M.available_devices(n)[0]}" for n in modules if versions[n]]
    print("`rvc-bench run` measures: " + ", ".join(best) + " (each against torch)")

    if "cpu" in M.mlx_devices() and "cpu" in M.torch_devices():
        torch_info, here = blas.torch_cpu_blas(), blas.mlx_cpu_blas()
        print(f"CPU BLAS, fp32 {blas.PROBE_N}x{blas.PROBE_N} matmul (a loaded machine measures less):")
        print(f"  torch:cpu                    {torch_info['torch_cpu_sgemm_gflops']:7.1f} GFLOP/s  {torch_info['torch_blas']}")
        print(f"  mlx:cpu in this process      {here['mlx_cpu_sgemm_gflops']:7.1f} GFLOP/s  {here['mlx_cpu_blas']}")
        if "cpu" in M.onnx_devices():
            print("  onnx:cpu                     ONNX Runtime's own MLAS kernels (no BLAS to choose, none preloaded)")
        preload = blas.select("auto")
        if preload is not None:
            child = _mlx_blas_child("auto")
            print(f"  mlx:cpu in `rvc-bench run`   {child['mlx_cpu_sgemm_gflops']:7.1f} GFLOP/s  {child['mlx_cpu_blas']} "
                  f"({child['mlx_cpu_blas_path']}); also `rvc-bench infer --backend mlx`")
            if here["mlx_cpu_blas_path"] != child["mlx_cpu_blas_path"]:
                env = " ".join(f"{k}={v}" for k, v in {"LD_PRELOAD": preload.path, **preload.env}.items())
                fixes.append(("MLX BLAS in `pytest suites/` run directly",
                              f"{env} python -m pytest suites/ --benchmark-only --backends mlx "
                              "(then --backends torch without it: the preload would replace torch's sgemm)"))
        elif sys.platform.startswith("linux"):
            fixes.append(("fast BLAS for MLX", "pip install mkl" if os.uname().machine == "x86_64"
                          else "apt-get install libopenblas0-pthread"))
    if "mps" in M.torch_devices():
        print(f"PYTORCH_ENABLE_MPS_FALLBACK={os.environ.get('PYTORCH_ENABLE_MPS_FALLBACK', '0')} "
              "(needed only by torch builds without MPS stft)")
    if fixes:
        print("missing here, and the fix:")
        for what, fix in fixes:
            print(f"  {what}: {fix}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# infer


def _synthetic_checkpoint(flag: str, stage, size: str) -> Path:
    from rvc_bench import fixtures

    cache = check_folder(fixtures.cache_dir(), "the fixture cache (RVC_BENCH_CACHE)")
    path = stage.checkpoint(cache, size)
    print(f"rvc-bench infer: no {flag} given: using the synthetic {size}-size checkpoint {path} (random weights, "
          f"generated into {cache})", file=sys.stderr)
    return path


def cmd_infer(args) -> int:
    """The whole conversion on one backend: VOICE + INPUT (any rate and channel count, read as upstream's ffmpeg
    loader reads it) -> OUT (.wav, .flac, .ogg) at the voice's sample rate or --resample-sr. Everything that can be
    checked before the conversion is: a bad output path costs nothing."""
    import time

    import numpy as np

    from rvc_bench import audio, pipeline, retrieval, stages
    from rvc_bench.backends import BackendError, get_backend
    from rvc_bench.layout import CheckpointError
    from rvc_bench.measure import keep_freed_memory
    from rvc_bench.synth.convert import DEFAULT_EMBEDDER, read_metadata

    keep_freed_memory()  # as the benchmarks run (rvc_bench.measure): each window reuses the last one's memory
    if args.hubert is None and not args.synthetic_models:  # random weights would make noise that looks like output
        raise UserError("no --hubert: pass the content encoder (hubert_base.pt, or a Hugging Face ContentVec folder), "
                        "or --synthetic-models to run on random synthetic weights (timing, tests)")
    if args.backend == "mlx" and args.own_process and blas.MARKER not in os.environ:
        # LD_PRELOAD takes effect only at process start: restart this command once in MLX's BLAS environment (the
        # marker it sets stops a second restart). Never for torch (see rvc_bench/blas.py).
        try:
            env = blas.process_env("mlx", args.mlx_blas)
        except blas.BlasError as err:
            raise UserError(str(err)) from None
        if blas.MARKER in env:
            os.execve(sys.executable, [sys.executable, "-m", "rvc_bench.cli", *sys.argv[1:]], env)

    opts = pipeline.Options(f0_up_key=args.f0_up_key, index_rate=args.index_rate, protect=args.protect,
                            rms_mix_rate=args.rms_mix_rate, sid=args.sid, seed=args.seed,
                            deterministic=args.deterministic, resample_sr=args.resample_sr)
    try:
        opts.check()
        out = check_output(args.output, [args.voice, args.input, args.index, args.hubert, args.rmvpe], args.force)
        audio.output_format(out)
        if not Path(args.voice).is_file():
            raise UserError(f"voice model not found: {args.voice}")
        x, source = audio.read_audio(args.input)
        backend = get_backend(args.backend, _device_option(args, args.backend))
        index = retrieval.load_index(args.index) if args.index else None  # read even when --index-rate 0 skips it
        hubert_preset = stages.PIPELINE_HUBERT[args.model_size]
        hubert, rmvpe = args.hubert, args.rmvpe
        if args.synthetic_models:
            hubert = hubert or _synthetic_checkpoint("--hubert", stages.HUBERT, hubert_preset)
            rmvpe = rmvpe or _synthetic_checkpoint("--rmvpe", stages.RMVPE, args.model_size)
        models = pipeline.load_models(backend, args.voice, hubert, rmvpe, hubert_preset)
        if args.tile_frames is not None:
            models.synth.tile_frames = args.tile_frames
        embedder = read_metadata(args.voice).get("embedder_model", DEFAULT_EMBEDDER)
        if embedder != DEFAULT_EMBEDDER:  # the features must come from the encoder the voice was trained on
            print(f"rvc-bench infer: note: {args.voice} was trained on {embedder!r} features (its embedder_model), "
                  f"not ContentVec's: --hubert must be that encoder, or the conversion is wrong", file=sys.stderr)
        t0 = time.perf_counter()
        result = pipeline.convert(models, x, opts, index)
        seconds = time.perf_counter() - t0
        if not np.any(result.audio):
            raise UserError(f"{args.voice}: converting {args.input} gave silence (every sample zero); "
                            f"{out} not written")
        audio.write_audio(out, result.audio, result.sr)  # the int16 samples RVC returns; atomic
    except (audio.AudioError, CheckpointError, retrieval.RetrievalError, pipeline.OptionError, BackendError) as err:
        raise UserError(str(err)) from None
    ran = backend.label
    if args.backend == "onnx":
        ran += f" (onnxruntime {backend.ort.__version__}, {' + '.join(backend.providers)})"
    elif backend.device == "cpu":
        ran += f" (BLAS: {blas.mlx_blas_in_process()[0] if args.backend == 'mlx' else blas.torch_blas_in_process()})"
    print(f"rvc-bench infer: converted {x.size / audio.SAMPLE_RATE:.2f} s ({source} -> {audio.SAMPLE_RATE} Hz mono) "
          f"in {seconds:.2f} s on {ran} -> {out} ({result.sr} Hz, {result.seconds:.2f} s, "
          f"{len(result.cuts) + 1} chunk(s))")
    return 0


# ---------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from rvc_bench.gate import DEFAULT_MAX_SLOWDOWN
    from rvc_bench.measure import DEFAULT_ROUNDS, DEFAULT_WARMUP

    p = _Parser(prog="rvc-bench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the benchmark suites into the store, then regenerate the report")
    r.add_argument("--lengths", type=_lengths, default=DEFAULT_LENGTHS,
                   help=f"audio lengths in seconds (default {DEFAULT_LENGTHS}; the original grid is 5,60,300)")
    r.add_argument("--stages", type=_stages, default=list(SUITES), help="comma-separated subset of " + ",".join(SUITES))
    r.add_argument("--rounds", type=_counts(0), default=str(DEFAULT_ROUNDS),
                   help=f"timed rounds (default {DEFAULT_ROUNDS}); one per length of --lengths (e.g. 7,3,2) times "
                   "long lengths fewer times; 0 at a length: its first call only")
    r.add_argument("--warmup", type=_counts(0), default=str(DEFAULT_WARMUP),
                   help=f"warm-up rounds (default {DEFAULT_WARMUP}); one, or one per length")
    r.add_argument("--model-size", choices=("full", "tiny"), default="full")
    r.add_argument("--torch-device", default="auto", help="mps, cuda or cpu (default: best available)")
    r.add_argument("--mlx-device", default="auto", help="gpu or cpu (default: best available)")
    r.add_argument("--onnx-device", default="auto",
                   help="ONNX Runtime execution provider: coreml, cuda or cpu (default: best available)")
    r.add_argument("--backends", default=None,
                   help="comma-separated subset of torch,mlx,onnx (default: every one installed here), each "
                   "benchmarked in its own process")
    r.add_argument("--mlx-blas", choices=blas.CHOICES, default="auto", help=MLX_BLAS_HELP)
    r.add_argument("--fresh-process", action="store_true", help="also measure each benchmark in a fresh process (RSS)")
    r.add_argument("--weights-dir", default=None, help="folder with real upstream checkpoints")
    r.add_argument("--machine-label", default=None,
                   help="a name for this machine, part of its id in the store (default: $RVC_BENCH_MACHINE_LABEL)")
    r.add_argument("--store", default=str(PROJECT / "reports" / "store"))
    r.add_argument("--report", default=None, help=f"report to write (default {DEFAULT_REPORT}, replaced each run)")
    r.add_argument("--no-report", action="store_true")
    r.add_argument("--force", action="store_true", help="replace an existing --report file")
    r.set_defaults(func=cmd_run)

    rep = sub.add_parser("report", help="regenerate the benchmarks document from the store alone")
    rep.add_argument("--store", default="reports/store")
    rep.add_argument("-o", "--output", default=None,
                     help=f"report to write (default {DEFAULT_REPORT_CWD}, replaced each time); figures go beside it")
    rep.add_argument("--force", action="store_true", help="replace an existing -o file (and its figures)")
    rep.add_argument("--check", action="store_true",
                     help="write nothing; exit 1 if the -o file differs from what the store generates")
    rep.set_defaults(func=cmd_report)

    g = sub.add_parser("gate", help="fail on parity outside its bounds or a significant slowdown against a baseline",
                       description="Exit status: 0 all checks pass, 1 a check failed, 2 bad input, 3 a speed "
                       "comparison cannot be decided (fewer than 3 rounds on a side) and nothing failed.")
    g.add_argument("--store", default="reports/store")
    g.add_argument("--candidate", default=None, help="run id (prefix) to judge (default: newest rows of --store)")
    g.add_argument("--baseline", default=None, help="run id (prefix) to compare speed against")
    g.add_argument("--baseline-store", default=None, help="store holding the baseline (default: --store)")
    g.add_argument("--max-slowdown", type=_float_in(1, math.inf, closed_low=True), default=DEFAULT_MAX_SLOWDOWN,
                   help=f"ratio of medians (new / old), >= 1, beyond which a significant change counts as a "
                   f"slowdown (default {DEFAULT_MAX_SLOWDOWN})")
    g.set_defaults(func=cmd_gate)

    a = sub.add_parser("ab", help="measure two commits alternately on this machine, then gate head against base",
                       description="Checks BASE and HEAD out into temporary worktrees, runs the chosen benchmarks of "
                       "each (its own suites, in an environment that satisfies its own dependencies) alternately, "
                       "--repeats runs a side in ABBA order, into one store, then gates: parity on both sides against "
                       "head's tolerance table, speed of head against base from this job only. Exit status: 0 pass, "
                       "1 regression, 2 bad input, 3 cannot decide (n too small, or base could not be measured).")
    a.add_argument("base", help="the commit to compare against (any git revision: origin/main, a sha, HEAD~1)")
    a.add_argument("head", nargs="?", default="HEAD", help="the candidate (default HEAD: the checkout's commit; "
                   "uncommitted changes are not measured)")
    a.add_argument("--stages", type=_stages, default=list(SUITES), help="comma-separated subset of " + ",".join(SUITES))
    a.add_argument("--lengths", type=_lengths, default=DEFAULT_LENGTHS,
                   help=f"audio lengths in seconds (default {DEFAULT_LENGTHS})")
    a.add_argument("--model-size", choices=("full", "tiny"), default="full")
    a.add_argument("--backends", default="torch,mlx", help="comma-separated backends (default torch,mlx)")
    a.add_argument("--torch-device", default="auto", help="mps, cuda or cpu (default: best available)")
    a.add_argument("--mlx-device", default="auto", help="gpu or cpu (default: best available)")
    a.add_argument("--onnx-device", default="auto",
                   help="ONNX Runtime execution provider: coreml, cuda or cpu (default: best available)")
    a.add_argument("--mlx-blas", choices=blas.CHOICES, default="auto", help=MLX_BLAS_HELP)
    a.add_argument("--rounds", type=_int_at_least(1), default=DEFAULT_ROUNDS,
                   help=f"timed rounds per benchmark and run (default {DEFAULT_ROUNDS})")
    a.add_argument("--warmup", type=_int_at_least(0), default=DEFAULT_WARMUP,
                   help=f"warm-up rounds (default {DEFAULT_WARMUP})")
    a.add_argument("--repeats", type=_int_at_least(1), default=3,
                   help="runs of each commit, alternating (default 3: the fewest that can decide the per-run "
                   "backend/PyTorch ratio check)")
    a.add_argument("--max-slowdown", type=_float_in(1, math.inf, closed_low=True), default=DEFAULT_MAX_SLOWDOWN,
                   help=f"ratio of medians (head / base) beyond which a significant change is a slowdown "
                   f"(default {DEFAULT_MAX_SLOWDOWN})")
    a.add_argument("--speed", choices=("all", "relative"), default="all",
                   help="what decides speed: all (absolute times and backend/PyTorch ratios, default) or relative "
                   "(the ratios only; for a shared runner, where the times are shown but not gated)")
    a.add_argument("--machine-label", default=None,
                   help="a name for this machine, part of its id in the store (default: $RVC_BENCH_MACHINE_LABEL)")
    a.add_argument("--store", default=None, help="store the runs here (default: a temporary store, removed)")
    a.add_argument("--summary", default=None, help="also write the markdown summary to this file (it is always "
                   "printed, and appended to $GITHUB_STEP_SUMMARY when that is set)")
    a.add_argument("--force", action="store_true", help="replace an existing --summary file")
    a.set_defaults(func=cmd_ab)

    c = sub.add_parser("convert", help="convert rmvpe.pt, hubert_base.pt (or a Hugging Face ContentVec folder) or a "
                       "voice .pth to MLX safetensors")
    c.add_argument("checkpoint", help="the upstream file (a folder: Hugging Face config.json + weights)")
    c.add_argument("-o", "--output", default=None, help="output .safetensors (default: the checkpoint's name with "
                   ".safetensors)")
    c.add_argument("--kind", choices=("auto", "rmvpe", "hubert", "synth"), default="auto",
                   help="the checkpoint's stage (default: recognised from its structure)")
    c.add_argument("--force", action="store_true", help="replace an existing output file")
    c.set_defaults(func=cmd_convert)

    d = sub.add_parser("doctor", help="which backends and devices this machine can run, and why not")
    d.set_defaults(func=cmd_doctor)

    i = sub.add_parser("infer", help="convert an audio file with an RVC voice model (whole pipeline, one backend)",
                       description="RVC conversion as the WebUI's vc_single does it (RMVPE pitch, fp32 windows). The "
                       "input is read as upstream's ffmpeg loader reads it: downmixed to mono with ffmpeg's weights "
                       "((L+R)/sqrt 2 for stereo) and resampled to 16 kHz with ffmpeg's default resampler.")
    i.add_argument("voice", help="RVC voice model .pth (MLX also takes a .safetensors from `rvc-bench convert`; ONNX "
                   "Runtime exports it once into the fixture cache)")
    i.add_argument("input", help="audio file: wav, flac, ogg (anything libsndfile reads), any sample rate, 1 to "
                   f"{MAX_CHANNELS} channels, int or float samples")
    i.add_argument("-o", "--output", required=True,
                   help="output .wav or .flac (16-bit PCM: RVC's int16 result as it is) or .ogg (Vorbis)")
    i.add_argument("--force", action="store_true", help="replace an existing output file")
    i.add_argument("--backend", choices=("torch", "mlx", "onnx"), default="torch")
    i.add_argument("--torch-device", default="auto", help="mps, cuda or cpu (default: best available)")
    i.add_argument("--mlx-device", default="auto", help="gpu or cpu (default: best available)")
    i.add_argument("--onnx-device", default="auto",
                   help="ONNX Runtime execution provider: coreml, cuda or cpu (default: best available)")
    i.add_argument("--mlx-blas", choices=blas.CHOICES, default="auto", help=MLX_BLAS_HELP)
    i.add_argument("--index", default=None, help="the voice's added_IVF*_Flat_nprobe_1_*.index (needs faiss-cpu)")
    i.add_argument("--hubert", default=None, help="the content encoder: hubert_base.pt or a Hugging Face ContentVec "
                   "folder (required, unless --synthetic-models)")
    i.add_argument("--rmvpe", default=None, help="rmvpe.pt or the same keys in a .safetensors (required by voices "
                   "with pitch, unless --synthetic-models)")
    i.add_argument("--synthetic-models", action="store_true",
                   help="use seeded random HuBERT/RMVPE checkpoints (generated into the fixture cache) for those "
                   "not given: for timing and tests; the output is not a conversion")
    i.add_argument("--f0-up-key", type=int, default=0, help="transpose in semitones (default 0)")
    i.add_argument("--index-rate", type=float, default=0.75, help="retrieval blend 0..1 (default 0.75)")
    i.add_argument("--protect", type=float, default=0.33, help="protect unvoiced frames 0..0.5 (0.5: off; default 0.33)")
    i.add_argument("--rms-mix-rate", type=float, default=0.25, help="loudness envelope mix 0..1 (1: off; default 0.25)")
    i.add_argument("--sid", type=_int_at_least(0), default=0, help="speaker id (default 0)")
    i.add_argument("--tile-frames", type=_int_at_least(0), default=None,
                   help="synthesizer decoder tiles, in 10 ms frames (0: one pass; default: tiles on the MLX CPU)")
    noise = i.add_mutually_exclusive_group()
    noise.add_argument("--seed", type=_int_at_least(0), default=None,
                       help="draw the synthesis noise in numpy from this seed (same output on both backends); "
                       "default: each backend's own unseeded noise, as RVC")
    noise.add_argument("--deterministic", action="store_true",
                       help="zero synthesis noise (reproducible, same on both backends; not what RVC outputs)")
    i.add_argument("--resample-sr", type=_int_at_least(0), default=0,
                   help="output sample rate in Hz, >= 16000 (default 0: the voice's rate); resampled with the "
                   "input's resampler (ffmpeg's), not librosa's soxr_hq as upstream")
    i.add_argument("--model-size", choices=("full", "tiny"), default="full", help=argparse.SUPPRESS)  # tests
    i.set_defaults(func=cmd_infer)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Only the command itself may restart its process (infer); a caller of main() keeps its own process and BLAS.
    args.own_process = argv is None
    try:
        return args.func(args)
    except (UserError, OutputError) as err:
        print(f"rvc-bench: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the disk said no (full, read-only, vanished folder): one line naming the file
        print(f"rvc-bench: error: {err.filename or ''}{': ' if err.filename else ''}{err.strerror or err}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
