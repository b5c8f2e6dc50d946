"""`rvc-bench diff`: run two sides on the same input and weights, and say where they part.

Side A is the reference. Its entries are held; side B is compared entry by entry as it runs. A side at another
commit (`--base REF`) runs in that commit's worktree in a child process, which writes its entries to a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from rvc_bench import fixtures, parity, tolerances
from rvc_bench.audio import AudioError
from rvc_bench.backends import BackendError
from rvc_bench.diff import capture, compare
from rvc_bench.diff.sides import DiffError, Inputs, Result, Side, run_pipeline, run_stage
from rvc_bench.layout import CheckpointError
from rvc_bench.pipeline import OptionError
from rvc_bench.rmvpe.config import THRESHOLD

F0_SECONDS = 0.01
DIFF_CHECK = "diff"


@dataclass
class Report:
    stage: str
    a: Side
    b: Side
    seconds: float
    bound: float  # rel L2 of a module's output
    frame_bound: float  # rel L2 of a frame against the reference's mean frame
    rows: list[compare.Row]
    along: list[compare.Along] = field(default_factory=list)

    @property
    def first(self) -> compare.Row | None:
        return compare.first_past(self.rows)

    @property
    def diverged(self) -> bool:
        return self.first is not None or any(a.first is not None for a in self.along)

    def where(self) -> str:
        """One line: the first module past its bound, and the first signal parting along time (or: none)."""
        parts = []
        if self.first is not None:
            r = self.first
            parts.append(f"first divergent module: {self.stage} {r.label} (rel L2 {r.rel_l2:.3g} > {r.bound:g})")
        a = next((a for a in self.along if a.first is not None), None)
        if a is not None:
            at = f", {a.seam}" if a.seam else ""
            parts.append(
                f"first divergence along time: {a.signal} frame {a.first} ({a.first * a.seconds_per_frame:.2f} s"
                f"{at}); {a.count} of {a.frames} frames past"
            )
        return "; ".join(parts) or f"no divergence: {self.stage} {self.b.label} matches {self.a.label}"


def bounds_for(stage: str, table: tolerances.Table | None = None) -> tuple[float, float]:
    """(module, frame) rel L2 bounds of the stage's diff, from the tolerance table."""
    bounds = (table or tolerances.table()).bounds(stage, DIFF_CHECK)
    missing = [m for m in ("rel_l2", "frame_rel_l2") if m not in bounds]
    if missing:
        raise DiffError(f"no {DIFF_CHECK} bound {missing[0]} for {stage} in {tolerances.FILE}")
    return bounds["rel_l2"].bound, bounds["frame_rel_l2"].bound


def inputs_for(stage: str, size: str, seconds: float, seed: int, checkpoint=None, audio_file=None) -> Inputs:
    """The input both sides get: a recording (any file `infer` reads) or the seeded synthetic clip, and the stage's
    checkpoint (default: the seeded synthetic one of `size`)."""
    from rvc_bench import audio, stages

    if audio_file is not None:
        try:
            x, _ = audio.read_audio(audio_file)
        except audio.AudioError as err:
            raise DiffError(str(err)) from None
        x = x[: int(round(seconds * 16000))] if seconds else x
        f0 = None
    else:
        clip = fixtures.clip(seconds, seed)
        x, f0 = clip.audio, clip.f0
    cache = fixtures.cache_dir()
    if checkpoint is not None and not Path(checkpoint).exists():
        raise DiffError(f"checkpoint not found: {checkpoint}")
    if stage == "pipeline":
        hubert, rmvpe = stages.pipeline_checkpoints(cache, size)
        voice = checkpoint or stages.SYNTH.checkpoint(cache, size)
        extra = {"hubert": hubert, "rmvpe": rmvpe, "hubert_config": stages.PIPELINE_HUBERT[size]}
        return Inputs(np.asarray(x, np.float32), size, str(voice), None, seed, extra)
    path = None if stage == "mel" else checkpoint or stages.get(stage).checkpoint(cache, size)
    if stage == "synth" and f0 is None:
        f0 = _torch_f0(x, size)
    extra = {"hubert_config": size}  # HuBERT's preset cannot be read from its shapes: --model-size names it
    return Inputs(np.asarray(x, np.float32), size, str(path), f0, seed, extra)


def _torch_f0(x: np.ndarray, size: str) -> np.ndarray:
    """A recording's f0 for the synthesizer's input: the torch RMVPE on the synthetic checkpoint of `size`."""
    from rvc_bench import stages
    from rvc_bench.backends import get_backend

    return stages.RMVPE.load(get_backend("torch", "cpu"), stages.RMVPE.checkpoint(fixtures.cache_dir(), size))(x)[1]


def run_side(stage: str, side: Side, inputs: Inputs, recorder: capture.Recorder, plant=None, options=None) -> Result:
    """options: the pipeline's conversion options (pipeline.Options; default: the WebUI's, noise seeded)."""
    if side.commit:
        if options is not None or plant is not None:
            raise DiffError(f"a side at a commit ({side.commit}) runs with the default options only")
        return _run_at_commit(stage, side, inputs, recorder)
    if stage == "pipeline":
        return run_pipeline(side, inputs, recorder, plant, options)
    return run_stage(stage, side, inputs, recorder, plant)


def diff(
    stage: str, a: Side, b: Side, inputs: Inputs, bound=None, plant_a=None, plant_b=None, options=None, limit=None
) -> Report:
    """Run A, then B compared entry by entry, then both outputs along time. bound: both bounds at once (default:
    the tolerance table's); plant_a / plant_b: change a side's model before it runs (the tests plant faults);
    options: the pipeline's conversion options; limit: the bytes of A's outputs it may hold (default: half the
    memory available now)."""
    bound, frame_bound = bounds_for(stage) if bound is None else (bound, bound)
    rec_a = capture.Recorder(limit=held_limit() if limit is None else limit)
    try:
        res_a = run_side(stage, a, inputs, rec_a, plant_a, options)
    except capture.CaptureTooLarge as err:  # a full-size minute of pipeline passed 21 GiB here: killed for memory
        raise DiffError(
            f"side A's module outputs passed the {rec_a.limit / 2**30:.3g} GiB this diff may hold ({err}): "
            f"compare a shorter --seconds than {inputs.audio.size / 16000:g}"
        ) from None
    matcher = compare.Matcher(rec_a.entries, bound)
    res_b = run_side(stage, b, inputs, capture.Recorder(sink=matcher), plant_b, options)
    del rec_a
    report = Report(stage, a, b, inputs.audio.size / 16000, bound, frame_bound, matcher.result())
    for signal, ref in res_a.signals.items():
        if signal not in res_b.signals:
            continue
        report.along.append(_along(signal, res_b.signals[signal], ref, res_a, frame_bound))
        for side_name, res in (("A", res_a), ("B", res_b)):
            for kind, (starts, reach) in res.seams.get(signal, {}).items():
                compare.name_seam(report.along[-1], {f"{kind} seam ({side_name})": starts}, reach)
    return report


def held_limit() -> int:
    import psutil

    return psutil.virtual_memory().available // 2


def _along(signal: str, x: np.ndarray, ref: np.ndarray, res_a: Result, bound: float) -> compare.Along:
    if x.shape != ref.shape:
        n = min(x.shape[0], ref.shape[0])
        note = f"lengths differ: {ref.shape[0]} frames (A) against {x.shape[0]} (B); the first {n} compared"
        x, ref = x[:n], ref[:n]
    else:
        note = ""
    if signal == "f0":
        sal = res_a.signals.get("salience")
        margin = None if sal is None else parity.decision_margin(sal, THRESHOLD)
        out = compare.pitch_along(x, ref, F0_SECONDS, None if margin is None else margin[: x.shape[0]])
    else:
        per_frame = F0_SECONDS if signal != "features" else 2 * F0_SECONDS
        out = compare.along(signal, compare.frame_errors(x, ref), bound, per_frame, "rel")
    if note:
        out.notes.append(note)
    return out


# ---------------------------------------------------------------------------------------------------------------
# A side at another commit


_CHILD = """
import json, sys, numpy as np
import rvc_bench
rvc_bench.__path__.append(sys.argv[1])  # this tree's diff package; every other module is the commit's
from rvc_bench.diff import capture, sides
spec = json.loads(sys.argv[2])
side = sides.Side(spec["backend"], spec["device"], tuple(map(tuple, spec["options"])))
inputs = sides.Inputs(np.load(sys.argv[3])["audio"], spec["size"], spec["checkpoint"],
                      None if spec["f0"] is None else np.load(sys.argv[3])["f0"], spec["seed"], spec["extra"])
rec = capture.Recorder()
if spec["stage"] == "pipeline":
    res = sides.run_pipeline(side, inputs, rec)
else:
    res = sides.run_stage(spec["stage"], side, inputs, rec)
arrays = {f"e{i}_{j}": a for i, e in enumerate(rec.entries) for j, a in enumerate(e.arrays)}
arrays.update({f"s_{k}": v for k, v in res.signals.items()})
meta = {"entries": [[e.name, e.call, len(e.arrays), e.channels_first] for e in rec.entries], "seams": res.seams}
np.savez(sys.argv[4], meta=json.dumps(meta), **arrays)
"""


def _run_at_commit(stage: str, side: Side, inputs: Inputs, recorder: capture.Recorder) -> Result:
    """Run the side in a detached worktree of its commit (this interpreter, the commit's rvc_bench) and replay its
    entries into `recorder`."""
    repo = Path(_git(Path.cwd(), "rev-parse", "--show-toplevel"))
    here = str(Path(__file__).resolve().parents[1])
    spec = {
        "stage": stage,
        "backend": side.backend,
        "device": side.device,
        "options": list(side.options),
        "size": inputs.size,
        "checkpoint": inputs.checkpoint,
        "f0": None if inputs.f0 is None else "f0",
        "seed": inputs.seed,
        "extra": {k: str(v) for k, v in inputs.extra.items()},
    }
    with tempfile.TemporaryDirectory(prefix="rvc-bench-diff-") as tmp:
        tree, feed, out = Path(tmp) / "tree", Path(tmp) / "inputs.npz", Path(tmp) / "side.npz"
        np.savez(feed, audio=inputs.audio, **({} if inputs.f0 is None else {"f0": inputs.f0}))
        _git(repo, "worktree", "add", "--detach", "--quiet", str(tree), side.commit)
        try:
            env = {**os.environ, "PYTHONPATH": str(tree), "RVC_BENCH_CACHE": str(fixtures.cache_dir())}
            args = [sys.executable, "-c", _CHILD, here + "/rvc_bench", json.dumps(spec), str(feed), str(out)]
            done = subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise DiffError(f"--base {side.commit}: the side failed there: {last}")
            return _replay(out, recorder)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=repo, capture_output=True)


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["git failed"])[-1]
        raise DiffError(f"--base: git {args[0]} failed: {last}")
    return done.stdout.strip()


def _replay(path: Path, recorder: capture.Recorder) -> Result:
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        for i, (name, call, n, channels_first) in enumerate(meta["entries"]):
            arrays = tuple(data[f"e{i}_{j}"] for j in range(n))
            recorder.sink(capture.Entry(name, call, arrays, channels_first))
        signals = {k[2:]: data[k] for k in data.files if k.startswith("s_")}
    seams = {s: {k: (list(v[0]), v[1]) for k, v in kinds.items()} for s, kinds in meta["seams"].items()}
    return Result(signals, seams)


INPUT_ERRORS = (DiffError, AudioError, BackendError, CheckpointError, OptionError)  # bad input: exit 2


def from_args(args) -> Report:
    """`rvc-bench diff`'s arguments -> the report."""
    from rvc_bench.diff.sides import parse_side, read_name_map

    if len(args.sides) > 2:
        raise DiffError(f"at most two sides, got {len(args.sides)}: {' '.join(args.sides)}")
    specs = list(args.sides) or (["mlx"] if args.base else ["torch", "mlx"])
    a, b = (parse_side(s, args.stage) for s in (specs if len(specs) == 2 else specs * 2))
    if args.base:
        a = replace(a, commit=args.base)
    elif len(specs) == 1 and not args.port:
        raise DiffError(f"one side ({specs[0]}) needs --base REF or --port to compare it with")
    if args.name_map and not args.port:
        raise DiffError("--name-map applies to --port only")
    if args.port:
        b = replace(b, port=args.port, name_map=read_name_map(args.name_map) if args.name_map else ())
    inputs = inputs_for(args.stage, args.model_size, args.seconds, args.seed, args.checkpoint, args.audio)
    return diff(args.stage, a, b, inputs, args.bound)
