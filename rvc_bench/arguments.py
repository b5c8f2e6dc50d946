"""The rvc-bench command line: every command's arguments. The options of a benchmark run are declared once, in
rvc_bench.plan, and shared from there; this module only assembles the commands. Parsing names the command
(`command`); rvc_bench.cli runs it."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from rvc_bench import plan
from rvc_bench.audio import MAX_CHANNELS

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_REPORT = PROJECT / "reports" / "BENCHMARKS.md"  # `run` writes here; `report` into ./reports/
DEFAULT_REPORT_CWD = Path("reports") / "BENCHMARKS.md"


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument ends like every other error: one line, `rvc-bench: error: ...`, status 2."""

    def error(self, message):
        command = self.prog.removeprefix("rvc-bench").strip()
        self.exit(2, f"rvc-bench: error: {command + ': ' if command else ''}{message} (see {self.prog} --help)\n")


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


def _add_run(sub) -> None:
    store = str(PROJECT / "reports" / "store")
    run_options = plan.parent(
        lambda add: plan.add_run_options(add, backends=None, store=store), plan.add_stage_option, plan.add_blas_option
    )
    r = sub.add_parser(
        "run", parents=[run_options], help="run the benchmark suites into the store, then regenerate the report"
    )
    r.add_argument("--report", default=None, help=f"report to write (default {DEFAULT_REPORT}, replaced each run)")
    r.add_argument("--no-report", action="store_true")
    r.add_argument("--force", action="store_true", help="replace an existing --report file")
    r.set_defaults(command="run")


def _add_report(sub) -> None:
    rep = sub.add_parser("report", help="regenerate the benchmarks document from the store alone")
    rep.add_argument("--store", default="reports/store")
    rep.add_argument(
        "-o",
        "--output",
        default=None,
        help=f"report to write (default {DEFAULT_REPORT_CWD}, replaced each time); figures go beside it",
    )
    rep.add_argument("--force", action="store_true", help="replace an existing -o file (and its figures)")
    rep.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the -o file differs from what the store generates",
    )
    rep.set_defaults(command="report")


def _max_slowdown(parser, what: str) -> None:
    from rvc_bench.gate import DEFAULT_MAX_SLOWDOWN

    parser.add_argument(
        "--max-slowdown",
        type=_float_in(1, math.inf, closed_low=True),
        default=DEFAULT_MAX_SLOWDOWN,
        help=f"ratio of medians ({what}), >= 1, beyond which a significant change counts as a "
        f"slowdown (default {DEFAULT_MAX_SLOWDOWN})",
    )


def _locate(parser) -> None:
    parser.add_argument(
        "--no-locate",
        dest="locate",
        action="store_false",
        help="do not name each parity failure's first divergent module (rvc-bench diff, which runs the models)",
    )


def _add_gate(sub) -> None:
    g = sub.add_parser(
        "gate",
        help="fail on parity outside its bounds or a significant slowdown against a baseline",
        description="Exit status: 0 all checks pass, 1 a check failed, 2 bad input, 3 a speed "
        "comparison cannot be decided (fewer than 3 rounds on a side) and nothing failed.",
    )
    g.add_argument("--store", default="reports/store")
    g.add_argument("--candidate", default=None, help="run id (prefix) to judge (default: newest rows of --store)")
    g.add_argument("--baseline", default=None, help="run id (prefix) to compare speed against")
    g.add_argument("--baseline-store", default=None, help="store holding the baseline (default: --store)")
    _max_slowdown(g, "new / old")
    _locate(g)
    g.set_defaults(command="gate")


def _add_ab(sub) -> None:
    run_options = plan.parent(
        lambda add: plan.add_run_options(add, backends="torch,mlx", store=None),
        plan.add_stage_option,
        plan.add_blas_option,
    )
    a = sub.add_parser(
        "ab",
        parents=[run_options],
        help="measure two commits alternately on this machine, then gate head against base",
        description="Checks BASE and HEAD out into temporary worktrees, runs the chosen benchmarks of "
        "each (its own suites, in an environment that satisfies its own dependencies) alternately, "
        "--repeats runs a side in ABBA order, into one store (--store; default: a temporary store, "
        "removed), then gates: parity on both sides against head's tolerance table, speed of head "
        "against base from this job only. Exit status: 0 pass, 1 regression, 2 bad input, 3 cannot "
        "decide (n too small, base could not be measured, or still undecided when --budget-minutes is spent).",
    )
    a.add_argument("base", help="the commit to compare against (any git revision: origin/main, a sha, HEAD~1)")
    a.add_argument(
        "head",
        nargs="?",
        default="HEAD",
        help="the candidate (default HEAD: the checkout's commit; uncommitted changes are not measured)",
    )
    a.add_argument(
        "--repeats",
        type=_int_at_least(1),
        default=3,
        help="runs of each commit, alternating (default 3: the fewest that can decide the per-run "
        "backend/PyTorch ratio check)",
    )
    _max_slowdown(a, "head / base")
    a.add_argument(
        "--budget-minutes",
        type=_float_in(0, math.inf, closed_low=False),
        default=None,
        help="decide speed three ways from each interval (all above the threshold: regression; all below: pass; "
        "across it: cannot decide yet) and, while one cannot decide yet, measure one more ABBA pair if it fits "
        "in this many minutes from the first run (default: --repeats pairs, the point-and-interval rule)",
    )
    a.add_argument(
        "--speed",
        choices=("all", "relative"),
        default="all",
        help="what decides speed: all (absolute times and backend/PyTorch ratios, default) or relative "
        "(the ratios only; for a shared runner, where the times are shown but not gated)",
    )
    a.add_argument(
        "--summary",
        default=None,
        help="also write the markdown summary to this file (it is always "
        "printed, and appended to $GITHUB_STEP_SUMMARY when that is set)",
    )
    a.add_argument("--force", action="store_true", help="replace an existing --summary file")
    _locate(a)
    a.set_defaults(command="ab")


def _add_convert_and_doctor(sub) -> None:
    c = sub.add_parser(
        "convert",
        help="convert rmvpe.pt, hubert_base.pt (or a Hugging Face ContentVec folder) or a "
        "voice .pth to MLX safetensors",
    )
    c.add_argument("checkpoint", help="the upstream file (a folder: Hugging Face config.json + weights)")
    c.add_argument(
        "-o", "--output", default=None, help="output .safetensors (default: the checkpoint's name with .safetensors)"
    )
    c.add_argument(
        "--kind",
        choices=("auto", "rmvpe", "hubert", "synth"),
        default="auto",
        help="the checkpoint's stage (default: recognised from its structure)",
    )
    c.add_argument("--force", action="store_true", help="replace an existing output file")
    c.set_defaults(command="convert")

    d = sub.add_parser("doctor", help="which backends and devices this machine can run, and why not")
    d.set_defaults(command="doctor")


def _conversion_parser(sub, name: str, summary: str, description: str):
    """A command that converts a file with a voice on one backend (infer, stream): its device and BLAS options,
    the voice and its models."""
    p = sub.add_parser(
        name,
        parents=[plan.parent(plan.add_device_options, plan.add_blas_option)],
        help=summary,
        description=description,
    )
    _add_voice_and_models(p)
    return p


def _add_infer(sub) -> None:
    i = _conversion_parser(
        sub,
        "infer",
        "convert an audio file with an RVC voice model (whole pipeline, one backend)",
        "RVC conversion as the WebUI's vc_single does it (RMVPE pitch, fp32 windows). The input is read as "
        "upstream's ffmpeg loader reads it: downmixed to mono with ffmpeg's weights ((L+R)/sqrt 2 for stereo) and "
        "resampled to 16 kHz with ffmpeg's default resampler.",
    )
    i.add_argument("--index", default=None, help="the voice's added_IVF*_Flat_nprobe_1_*.index (needs faiss-cpu)")
    _add_conversion_options(i)
    o = i.add_argument_group("optimisation variants (rvc_bench.variants; measured in the document)")
    o.add_argument("--dtype", choices=("float16", "bfloat16"), help="half precision, fp32 kept where it is needed")
    o.add_argument("--quantize", type=int, choices=(8, 4), help="quantised Linear/Embedding weights (torch: 8 only)")
    o.add_argument(
        "--channels-last", action="store_true", help="torch: channels-last memory format for RMVPE's convolutions"
    )
    o.add_argument("--compile", action="store_true", help="mx.compile / torch.compile the networks")
    i.set_defaults(command="infer")


def _add_voice_and_models(i) -> None:
    """The files a conversion reads and writes, and the backend it runs on (infer, stream)."""
    i.add_argument(
        "voice",
        help="RVC voice model .pth (MLX also takes a .safetensors from `rvc-bench convert`; ONNX "
        "Runtime exports it once into the fixture cache)",
    )
    i.add_argument(
        "input",
        help="audio file: wav, flac, ogg (anything libsndfile reads), any sample rate, 1 to "
        f"{MAX_CHANNELS} channels, int or float samples",
    )
    i.add_argument(
        "-o",
        "--output",
        required=True,
        help="output .wav or .flac (16-bit PCM: RVC's int16 result as it is) or .ogg (Vorbis)",
    )
    i.add_argument("--force", action="store_true", help="replace an existing output file")
    i.add_argument("--backend", choices=("torch", "mlx", "onnx"), default="torch")
    i.add_argument(
        "--hubert",
        default=None,
        help="the content encoder: hubert_base.pt or a Hugging Face ContentVec "
        "folder (required, unless --synthetic-models)",
    )
    i.add_argument(
        "--rmvpe",
        default=None,
        help="rmvpe.pt or the same keys in a .safetensors (required by voices with pitch, unless --synthetic-models)",
    )
    i.add_argument(
        "--synthetic-models",
        action="store_true",
        help="use seeded random HuBERT/RMVPE checkpoints (generated into the fixture cache) for those "
        "not given: for timing and tests; the output is not a conversion",
    )
    i.add_argument("--model-size", choices=plan.MODEL_SIZES, default="full", help=argparse.SUPPRESS)  # tests
    i.add_argument("--sid", type=_int_at_least(0), default=0, help="speaker id (default 0)")
    i.add_argument(
        "--tile-frames",
        type=_int_at_least(0),
        default=None,
        help="synthesizer decoder tiles, in 10 ms frames (0: one pass; default: tiles on the MLX CPU)",
    )
    noise = i.add_mutually_exclusive_group()
    noise.add_argument(
        "--seed",
        type=_int_at_least(0),
        default=None,
        help="draw the synthesis noise in numpy from this seed (same output on both backends); "
        "default: each backend's own unseeded noise, as RVC",
    )
    noise.add_argument(
        "--deterministic",
        action="store_true",
        help="zero synthesis noise (reproducible, same on both backends; not what RVC outputs)",
    )


def _add_stream(sub) -> None:
    i = _conversion_parser(
        sub,
        "stream",
        "convert an audio file the way RVC's real-time mode does (blocks, SOLA) and print its latency",
        "RVC's live mode (realtime_gui.py + rtrvc) fed from a file: blocks of --block seconds, each converting "
        "--extra + --crossfade + 10 ms + --block of context, joined by SOLA. Prints the algorithmic delay (2 x "
        "block + crossfade + 10 ms), each block's processing time (p50/p95/p99/max), the real-time factor and the "
        "blocks that missed their deadline on a simulated clock (--realtime: the audio's own pace). Writes the "
        "output advanced by crossfade + 10 ms, so that it lines up with the input.",
    )
    i.add_argument("--block", type=float, default=0.25, help="block_time in seconds (default 0.25; >= 0.01)")
    i.add_argument(
        "--crossfade", type=float, default=0.05, help="crossfade_time in seconds (default 0.05; at most the block)"
    )
    i.add_argument("--extra", type=float, default=2.5, help="extra_time, left context in seconds (default 2.5)")
    i.add_argument("--f0-up-key", type=float, default=0.0, help="pitch: transpose in semitones (default 0)")
    i.add_argument("--rms-mix-rate", type=float, default=0.0, help="loudness envelope mix 0..1 (1: off; default 0)")
    i.add_argument("--realtime", action="store_true", help="feed each block when it would have been recorded")
    i.set_defaults(command="stream")


def _add_conversion_options(i) -> None:
    """RVC's own conversion settings (rvc_bench.pipeline.Options)."""
    i.add_argument("--f0-up-key", type=int, default=0, help="transpose in semitones (default 0)")
    i.add_argument("--index-rate", type=float, default=0.75, help="retrieval blend 0..1 (default 0.75)")
    i.add_argument(
        "--protect", type=float, default=0.33, help="protect unvoiced frames 0..0.5 (0.5: off; default 0.33)"
    )
    i.add_argument("--rms-mix-rate", type=float, default=0.25, help="loudness envelope mix 0..1 (1: off; default 0.25)")
    i.add_argument(
        "--resample-sr",
        type=_int_at_least(0),
        default=0,
        help="output sample rate in Hz, >= 16000 (default 0: the voice's rate); resampled with the "
        "input's resampler (ffmpeg's), not librosa's soxr_hq as upstream",
    )


def _add_diff(sub) -> None:
    d = sub.add_parser(
        "diff",
        parents=[plan.parent(plan.add_blas_option)],
        help="run two sides of a stage on the same input and say where they part: module by module, frame by frame",
        description="Side A is the reference. A side is BACKEND[:DEVICE][/OPTION=VALUE,...] (options: rmvpe "
        "chunk_frames, overlap_frames, cut_gru; synth tile_frames; `none` turns one off). Exit status: 0 no "
        "divergence, 1 divergence found, 2 bad input.",
    )
    d.add_argument("stage", choices=("mel", "rmvpe", "hubert", "synth", "pipeline"))
    d.add_argument("sides", nargs="*", metavar="SIDE", help="A and B (default: torch mlx; with --base: B at both)")
    d.add_argument("--base", metavar="REF", help="run side A at this commit (a worktree, as `rvc-bench ab` does)")
    d.add_argument("--checkpoint", help="the stage's checkpoint (pipeline: the voice .pth); default: synthetic")
    d.add_argument("--audio", help="any file `infer` reads (default: the seeded synthetic clip)")
    d.add_argument("--seconds", type=_float_in(0, 3600, False), default=5.0, help="input length (default 5)")
    d.add_argument("--seed", type=_int_at_least(0), default=0, help="synthetic clip and noise seed (default 0)")
    d.add_argument("--model-size", choices=plan.MODEL_SIZES, default="full", help="synthetic checkpoints' size")
    d.add_argument(
        "--port",
        help="side B's model from MODULE:FUNCTION or FILE.py:FUNCTION (called with the "
        "checkpoint path), compared by module name with side A",
    )
    d.add_argument("--name-map", help="JSON {port module name: twin module name} for --port (prefixes)")
    d.add_argument("--bound", type=_float_in(0, math.inf, False), help="rel L2 bound (default: the tolerance table)")
    d.add_argument("--json", action="store_true", help="the report as JSON")
    d.add_argument("--all", action="store_true", help="every module's row, not only those around the first")
    d.set_defaults(command="diff")


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(prog="rvc-bench", description=description)
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_run, _add_report, _add_gate, _add_ab, _add_convert_and_doctor, _add_infer, _add_stream, _add_diff):
        add(sub)
    return p
