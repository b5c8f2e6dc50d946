"""rvc-bench: run the suites into the store, regenerate the report, gate regressions, convert checkpoints,\ncheck the machine."""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

from rvc_bench.audio import MAX_CHANNELS, MIN_SECONDS
from rvc_bench.fileio import OutputError, check_folder, check_output

PROJECT = Path(__file__).resolve().parents[1]
STAGES = ("mel", "rmvpe", "hubert", "synth", "pipeline")
DEFAULT_LENGTHS = "5"  # seconds; with 5 warm rounds the full-size default run takes ~6 min on a 2-core CPU
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
    unknown = [s for s in chosen if s not in STAGES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown stage {unknown[0] if unknown else text!r}: choose from {', '.join(STAGES)}")
    return chosen


# ---------------------------------------------------------------------------------------------------------------
# run


def _blas_env(backend: str, choice: str) -> dict[str, str]:
    """Environment for one backend's benchmark process.

    The Linux mlx[cpu] wheel ships a reference BLAS (~30x slower sgemm than OpenBLAS on this class of CPU); timing
    MLX with it would compare a crippled build against torch's MKL. So MLX's process preloads a system OpenBLAS when
    one is installed. torch's process never gets it: a preloaded OpenBLAS also interposes the sgemm symbol that
    libtorch exports, which made the torch baseline up to 1.8x slower. What each process used is recorded.
    """
    from rvc_bench.backends import system_openblas

    env = dict(os.environ)
    if backend != "mlx" or choice == "bundled" or sys.platform != "linux":
        return env
    lib = system_openblas()
    if lib is None:
        if choice == "openblas":
            raise UserError("--mlx-blas openblas: no system OpenBLAS found (Debian/Ubuntu: apt-get install libopenblas0-pthread)")
        return env
    if "openblas" not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = " ".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    return env


def _check_weights_dir(folder: Path) -> None:
    """Read the real checkpoints the suites take from --weights-dir (safe and strict), before anything runs."""
    from rvc_bench.hubert.convert import read_checkpoint
    from rvc_bench.layout import CheckpointError
    from rvc_bench.rmvpe.convert import convert_checkpoint

    if not folder.is_dir():
        raise UserError(f"--weights-dir {folder} is not a folder")
    readers = {"rmvpe.pt": convert_checkpoint, "hubert_base.pt": lambda path: read_checkpoint(path, "full")}
    present = [name for name in readers if (folder / name).is_file()]
    if not present:
        raise UserError(f"--weights-dir {folder} holds neither {' nor '.join(readers)}")
    for name in present:
        try:
            readers[name](folder / name)
        except CheckpointError as err:
            raise UserError(str(err)) from None


def _check_report(path: Path, named: bool, force: bool, store: Path) -> None:
    """The report and its figures may replace the generated defaults, but not files the user named (without
    --force), and never a run file of the store they are made from."""
    from rvc_bench import report

    for out in report.outputs(path):
        check_output(out, sorted(store.glob("run-*.parquet")), force=force or not named)


def _check_run(args, backends: list[str]) -> None:
    """Every option of `run`, checked before the first benchmark starts (so a bad one costs nothing)."""
    from rvc_bench import fixtures
    from rvc_bench.backends import BackendError, get_backend

    for name in backends:
        try:
            get_backend(name, args.torch_device if name == "torch" else args.mlx_device)
        except BackendError as err:
            raise UserError(str(err)) from None
        _blas_env(name, args.mlx_blas)  # --mlx-blas openblas without an OpenBLAS is an error now, not after torch ran
    if args.weights_dir:
        _check_weights_dir(Path(args.weights_dir))
    check_folder(fixtures.cache_dir(), "the fixture cache (RVC_BENCH_CACHE)")
    check_folder(args.store, "--store")
    if not args.no_report:
        _check_report(Path(args.report or DEFAULT_REPORT), args.report is not None, args.force, Path(args.store))


def cmd_run(args) -> int:
    from datetime import datetime, timezone
    import uuid

    suites = PROJECT / "suites"
    if not suites.is_dir():
        raise UserError(f"no suites/ folder next to the package ({PROJECT}): run rvc-bench from a source checkout")
    store = Path(args.store).resolve()
    selected = [str(suites / f"test_{s}.py") for s in args.stages]
    missing = [p for p in selected if not Path(p).is_file()]
    if missing:
        raise UserError(f"suite not found: {missing[0]}")
    backends = [b.strip() for b in (args.backends or "torch,mlx").split(",") if b.strip()]
    unknown = [b for b in backends if b not in ("torch", "mlx")]
    if unknown or not backends:
        raise UserError(f"unknown backend {unknown[0] if unknown else args.backends!r}: choose from torch, mlx")
    _check_run(args, backends)
    run_id = f"{uuid.uuid4().hex[:12]}@{datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    print(f"rvc-bench run {run_id.split('@')[0]}: stages {','.join(args.stages)}, lengths {args.lengths} s, "
          f"{args.model_size} models, {args.rounds} warm rounds + {args.warmup} warm-up, one process per backend; "
          f"store {store}", flush=True)
    status = 0
    for backend in backends:  # one process each, so each gets its own BLAS environment (see _blas_env)
        cmd = [sys.executable, "-m", "pytest", *selected, "--benchmark-only", "-p", "no:cacheprovider", "-q",
               "--lengths", args.lengths, "--rounds", str(args.rounds), "--warmup", str(args.warmup),
               "--model-size", args.model_size, "--torch-device", args.torch_device, "--mlx-device", args.mlx_device,
               "--backends", backend, "--run-id", run_id, "--store", str(store),
               "--benchmark-columns", "median,iqr,rounds", "--benchmark-sort", "name"]
        if args.fresh_process:
            cmd.append("--fresh-process")
        if args.weights_dir:
            cmd += ["--weights-dir", args.weights_dir]
        print(f"rvc-bench run: {backend} benchmarks", flush=True)
        code = subprocess.run(cmd, cwd=PROJECT, env=_blas_env(backend, args.mlx_blas)).returncode
        if code not in (0, 1):  # 1 = some tests failed (their rows are still stored); other codes: nothing ran
            raise UserError(f"the {backend} benchmarks did not run to the end: pytest exited with status {code} "
                            "(its output is above)")
        status = max(status, code)
    if not args.no_report:
        from rvc_bench import report

        out = report.write(store, args.report or DEFAULT_REPORT)
        print(f"rvc-bench run: report written to {out}")
    return status


# ---------------------------------------------------------------------------------------------------------------
# report


def cmd_report(args) -> int:
    from rvc_bench import report

    store = Path(args.store)
    if not store.is_dir():
        raise UserError(f"run store not found: {store} (run `rvc-bench run` first)")
    out = Path(args.output or DEFAULT_REPORT_CWD)
    _check_report(out, args.output is not None, args.force, store)
    try:
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
        candidate = gate.select(args.store, args.candidate)
        baseline = None
        if args.baseline or args.baseline_store:
            baseline = gate.select(args.baseline_store or args.store, args.baseline)
    except ValueError as err:
        raise UserError(str(err)) from None
    checks = gate.evaluate(candidate, baseline, args.max_slowdown, args.alpha)
    print(gate.render(checks), end="")
    failed = sum(not c.ok for c in checks)
    print(f"gate: {len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------------------------
# convert


def detect_kind(obj, what: str = "checkpoint") -> str:
    """Which upstream format a loaded checkpoint is, from its top-level structure (not from tensor shapes)."""
    if isinstance(obj, dict) and "weight" in obj and "config" in obj:
        return "voice"
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if isinstance(state, dict) and any(str(k).startswith("unet.") for k in state):
        return "rmvpe"
    if isinstance(state, dict) and any("pos_conv" in str(k) for k in state):
        return "hubert"
    raise UserError(f"{what}: unrecognised checkpoint: expected an RVC voice .pth, rmvpe.pt or hubert_base.pt")


def cmd_convert(args) -> int:
    from rvc_bench.checkpoints import load_pickled
    from rvc_bench.layout import CheckpointError

    src, dst = Path(args.checkpoint), Path(args.output) if args.output else Path(args.checkpoint).with_suffix(".safetensors")
    check_output(dst, [src], args.force)
    try:
        kind = args.kind if args.kind != "auto" else detect_kind(load_pickled(src), str(src))
        if kind == "rmvpe":
            from rvc_bench.rmvpe.convert import convert_file
        elif kind == "hubert":
            from rvc_bench.hubert.convert import convert_file
        else:
            from rvc_bench.synth.convert import convert_file
        convert_file(src, dst)
    except CheckpointError as err:
        raise UserError(str(err)) from None
    print(f"converted {kind} checkpoint {src} -> {dst}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# doctor


def cmd_doctor(args) -> int:
    from rvc_bench import backends as B

    print(f"machine: {B.cpu_model()}, {os.cpu_count()} cores, {sys.platform} {os.uname().machine}, Python {sys.version.split()[0]}")
    rows = []
    for name, devices in (("torch", B.TORCH_DEVICES), ("mlx", B.MLX_DEVICES)):
        available = B.torch_devices() if name == "torch" else B.mlx_devices()
        for dev in devices:
            ok = dev in available
            rows.append((f"{name}:{dev}", "yes" if ok else "no", "" if ok else B.available_reason(name, dev)))
    width = max(len(r[0]) for r in rows)
    for label, ok, why in rows:
        print(f"  {label:<{width}}  {ok:<3}  {why}")
    if "cpu" in B.mlx_devices():
        info = B.mlx_cpu_blas()
        print(f"MLX CPU BLAS in this process: {info['mlx_cpu_blas']} ({info['mlx_cpu_sgemm_gflops']} GFLOP/s, 512x512 sgemm)")
        lib = B.system_openblas()
        if sys.platform == "linux":
            print(f"system OpenBLAS: {lib}; `rvc-bench run` preloads it for MLX (--mlx-blas bundled to opt out)" if lib
                  else "system OpenBLAS: not found; MLX CPU runs ~30x slower matmuls (apt-get install libopenblas0-pthread)")
    if "mps" in B.torch_devices():
        print(f"PYTORCH_ENABLE_MPS_FALLBACK={os.environ.get('PYTORCH_ENABLE_MPS_FALLBACK', '0')} "
              "(needed only by torch builds without MPS stft)")
    best = [f"torch:{B.torch_devices()[0]}" if B.torch_devices() else None, f"mlx:{B.mlx_devices()[0]}" if B.mlx_devices() else None]
    print("default devices: " + ", ".join(b for b in best if b))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# infer


def cmd_infer(args) -> int:
    """The whole conversion on one backend: VOICE + INPUT (any rate and channel count, read as upstream's ffmpeg
    loader reads it) -> OUT (.wav, .flac, .ogg) at the voice's sample rate or --resample-sr. Everything that can be
    checked before the conversion is: a bad output path costs nothing."""
    import time

    import numpy as np

    from rvc_bench import audio, fixtures, pipeline, retrieval
    from rvc_bench.backends import BackendError, get_backend
    from rvc_bench.layout import CheckpointError

    opts = pipeline.Options(f0_up_key=args.f0_up_key, index_rate=args.index_rate, protect=args.protect,
                            rms_mix_rate=args.rms_mix_rate, sid=args.sid, seed=args.seed,
                            deterministic=args.deterministic, resample_sr=args.resample_sr)
    if args.hubert is None and not args.synthetic_models:  # random weights would make noise that looks like output
        raise UserError("no --hubert: pass the content encoder (hubert_base.pt, or a Hugging Face ContentVec folder), "
                        "or --synthetic-models to run on random synthetic weights (timing, tests)")
    try:
        opts.check()
        out = check_output(args.output, [args.voice, args.input, args.index, args.hubert, args.rmvpe], args.force)
        audio.output_format(out)
        if not Path(args.voice).is_file():
            raise UserError(f"voice model not found: {args.voice}")
        x, source = audio.read_audio(args.input)
        backend = get_backend(args.backend, args.torch_device if args.backend == "torch" else args.mlx_device)
        index = retrieval.load_index(args.index) if args.index else None  # read even when --index-rate 0 skips it
        hubert, rmvpe = args.hubert, args.rmvpe
        if args.synthetic_models and (hubert is None or rmvpe is None):
            cache = check_folder(fixtures.cache_dir(), "the fixture cache (RVC_BENCH_CACHE)")
            synthetic = pipeline.synthetic_checkpoints(cache, args.model_size)
            for flag, given, path in (("--hubert", hubert, synthetic[0]), ("--rmvpe", rmvpe, synthetic[1])):
                if given is None:
                    print(f"rvc-bench infer: no {flag} given: using the synthetic {args.model_size}-size checkpoint "
                          f"{path} (random weights, generated into {cache})", file=sys.stderr)
            hubert, rmvpe = hubert or synthetic[0], rmvpe or synthetic[1]
        models = pipeline.load_models(backend, args.voice, hubert, rmvpe, args.model_size)
        t0 = time.perf_counter()
        result = pipeline.convert(models, x, opts, index)
        seconds = time.perf_counter() - t0
        if not np.any(result.audio):
            raise UserError(f"{args.voice}: converting {args.input} gave silence (every sample zero); "
                            f"{out} not written")
        audio.write_audio(out, result.audio, result.sr)  # the int16 samples RVC returns; atomic
    except (audio.AudioError, CheckpointError, retrieval.RetrievalError, pipeline.OptionError, BackendError) as err:
        raise UserError(str(err)) from None
    print(f"rvc-bench infer: converted {x.size / audio.SAMPLE_RATE:.2f} s ({source} -> {audio.SAMPLE_RATE} Hz mono) "
          f"in {seconds:.2f} s on {backend.label} -> {out} ({result.sr} Hz, {result.seconds:.2f} s, "
          f"{len(result.cuts) + 1} chunk(s))")
    return 0


# ---------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rvc-bench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the benchmark suites into the store, then regenerate the report")
    r.add_argument("--lengths", type=_lengths, default=DEFAULT_LENGTHS,
                   help=f"audio lengths in seconds (default {DEFAULT_LENGTHS}; the original grid is 5,60,300)")
    r.add_argument("--stages", type=_stages, default=list(STAGES), help="comma-separated subset of " + ",".join(STAGES))
    r.add_argument("--rounds", type=_int_at_least(1), default=5, help="warm timed rounds (default 5)")
    r.add_argument("--warmup", type=_int_at_least(0), default=1, help="warm-up rounds (default 1)")
    r.add_argument("--model-size", choices=("full", "tiny"), default="full")
    r.add_argument("--torch-device", default="auto", help="mps, cuda or cpu (default: best available)")
    r.add_argument("--mlx-device", default="auto", help="gpu or cpu (default: best available)")
    r.add_argument("--backends", default=None, help="comma-separated subset of torch,mlx")
    r.add_argument("--mlx-blas", choices=("auto", "openblas", "bundled"), default="auto",
                   help="BLAS for MLX's Linux CPU backend (auto: system OpenBLAS if installed)")
    r.add_argument("--fresh-process", action="store_true", help="also measure each benchmark in a fresh process (RSS)")
    r.add_argument("--weights-dir", default=None, help="folder with real upstream checkpoints")
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
    rep.set_defaults(func=cmd_report)

    g = sub.add_parser("gate", help="fail on parity outside its bounds or a significant slowdown against a baseline")
    g.add_argument("--store", default="reports/store")
    g.add_argument("--candidate", default=None, help="run id (prefix) to judge (default: newest rows of --store)")
    g.add_argument("--baseline", default=None, help="run id (prefix) to compare speed against")
    g.add_argument("--baseline-store", default=None, help="store holding the baseline (default: --store)")
    g.add_argument("--max-slowdown", type=_float_in(1, math.inf, closed_low=True), default=1.25,
                   help="median growth tolerated, >= 1 (default 1.25)")
    g.add_argument("--alpha", type=_float_in(0, 1, closed_low=False), default=0.01,
                   help="significance level of the Mann-Whitney test, in (0, 1) (default 0.01)")
    g.set_defaults(func=cmd_gate)

    c = sub.add_parser("convert", help="convert rmvpe.pt, hubert_base.pt or a voice .pth to MLX safetensors")
    c.add_argument("checkpoint")
    c.add_argument("-o", "--output", default=None, help="output .safetensors (default: the checkpoint's name with "
                   ".safetensors)")
    c.add_argument("--kind", choices=("auto", "rmvpe", "hubert", "voice"), default="auto")
    c.add_argument("--force", action="store_true", help="replace an existing output file")
    c.set_defaults(func=cmd_convert)

    d = sub.add_parser("doctor", help="which backends and devices this machine can run, and why not")
    d.set_defaults(func=cmd_doctor)

    i = sub.add_parser("infer", help="convert an audio file with an RVC voice model (whole pipeline, one backend)",
                       description="RVC conversion as the WebUI's vc_single does it (RMVPE pitch, fp32 windows). The "
                       "input is read as upstream's ffmpeg loader reads it: downmixed to mono with ffmpeg's weights "
                       "((L+R)/sqrt 2 for stereo) and resampled to 16 kHz with ffmpeg's default resampler.")
    i.add_argument("voice", help="RVC voice model .pth (MLX also takes a .safetensors from `rvc-bench convert`)")
    i.add_argument("input", help="audio file: wav, flac, ogg (anything libsndfile reads), any sample rate, 1 to "
                   f"{MAX_CHANNELS} channels, int or float samples")
    i.add_argument("-o", "--output", required=True,
                   help="output .wav or .flac (16-bit PCM: RVC's int16 result as it is) or .ogg (Vorbis)")
    i.add_argument("--force", action="store_true", help="replace an existing output file")
    i.add_argument("--backend", choices=("torch", "mlx"), default="torch")
    i.add_argument("--torch-device", default="auto", help="mps, cuda or cpu (default: best available)")
    i.add_argument("--mlx-device", default="auto", help="gpu or cpu (default: best available)")
    i.add_argument("--index", default=None, help="the voice's added_IVF*_Flat_nprobe_1_*.index (needs faiss-cpu)")
    i.add_argument("--hubert", default=None, help="the content encoder: hubert_base.pt (required, unless "
                   "--synthetic-models)")
    i.add_argument("--rmvpe", default=None, help="rmvpe.pt (required by voices with pitch, unless --synthetic-models)")
    i.add_argument("--synthetic-models", action="store_true",
                   help="use seeded random HuBERT/RMVPE checkpoints (generated into the fixture cache) for those "
                   "not given: for timing and tests; the output is not a conversion")
    i.add_argument("--f0-up-key", type=int, default=0, help="transpose in semitones (default 0)")
    i.add_argument("--index-rate", type=float, default=0.75, help="retrieval blend 0..1 (default 0.75)")
    i.add_argument("--protect", type=float, default=0.33, help="protect unvoiced frames 0..0.5 (0.5: off; default 0.33)")
    i.add_argument("--rms-mix-rate", type=float, default=0.25, help="loudness envelope mix 0..1 (1: off; default 0.25)")
    i.add_argument("--sid", type=_int_at_least(0), default=0, help="speaker id (default 0)")
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
