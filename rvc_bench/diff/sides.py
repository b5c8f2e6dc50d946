"""The two sides of a diff: what each runs (a backend and device, stage options, a commit, a port) and how.

A side spec reads BACKEND[:DEVICE][/OPTION=VALUE,...], e.g. `torch`, `mlx:cpu`, `mlx/chunk_frames=64,cut_gru=true`,
`mlx/tile_frames=none`. Running a side loads the stage through the registry (or a port's factory), records every
submodule's output (capture.py) and returns the stage's outputs time-major, with the frames where the side's chunks,
windows or tiles start. Only the registry's public calls are used, so a commit's tree can be run the same way.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rvc_bench import stages
from rvc_bench.diff import capture
from rvc_bench.hubert.config import T_MAX_SECONDS

STAGE_OPTIONS = {
    "mel": (),
    "rmvpe": ("chunk_frames", "overlap_frames", "cut_gru"),
    "hubert": (),
    "synth": ("tile_frames",),
    "pipeline": (),
}


class DiffError(ValueError):
    """Bad input to a diff (a side spec, a file, a name map): one line, exit status 2."""


@dataclass(frozen=True)
class Side:
    backend: str
    device: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    commit: str | None = None  # run from this commit's tree (`--base`)
    port: str | None = None  # MODULE_OR_FILE:FUNCTION building the model in place of the registry's
    name_map: tuple[tuple[str, str], ...] = ()  # port name prefix -> twin name prefix

    @property
    def label(self) -> str:
        text = self.backend + (f":{self.device}" if self.device else "")
        text += "".join(f"/{k}={_show(v)}" for k, v in self.options)
        text += f" @{self.commit}" if self.commit else ""
        return text + (f" port {self.port}" if self.port else "")

    @property
    def channels_first(self) -> bool:
        return self.backend != "mlx"


def _show(v: Any) -> str:
    return "none" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("none", "off"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        raise DiffError(f"option value {text!r} is not an integer, true/false or none") from None


def parse_side(text: str, stage: str) -> Side:
    """`BACKEND[:DEVICE][/OPTION=VALUE,...]` -> Side; options are the stage's loader options."""
    head, _, opts = text.partition("/")
    backend, _, device = head.partition(":")
    if backend not in ("torch", "mlx", "onnx"):
        raise DiffError(f"side {text!r}: unknown backend {backend!r} (torch, mlx or onnx)")
    options = []
    for item in filter(None, opts.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in STAGE_OPTIONS[stage]:
            allowed = ", ".join(STAGE_OPTIONS[stage]) or "none"
            raise DiffError(f"side {text!r}: {item!r} is not an option of {stage} (its options: {allowed})")
        if backend == "onnx":
            raise DiffError(f"side {text!r}: the exported ONNX graph takes no {key}")
        options.append((key, _value(value)))
    return Side(backend, device or None, tuple(options))


def read_name_map(path: str | os.PathLike) -> tuple[tuple[str, str], ...]:
    """A JSON object {port name: twin name} (prefixes: `backbone` maps `backbone.layers.0` to `model.layers.0`)."""
    try:
        mapping = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise DiffError(f"name map {path}: unreadable ({err})") from None
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise DiffError(f"name map {path}: expected a JSON object of names to names")
    return tuple(sorted(mapping.items(), key=lambda kv: -len(kv[0])))  # longest prefix first


def renamer(name_map: tuple[tuple[str, str], ...]):
    def rename(name: str) -> str:
        for src, dst in name_map:
            if name == src or name.startswith(src + "."):
                return dst + name[len(src) :]
        return name

    return rename


def load_port(spec: str):
    """MODULE:FUNCTION or path/to/file.py:FUNCTION -> the factory function (called with the checkpoint path)."""
    target, _, func = spec.rpartition(":")
    if not target or not func:
        raise DiffError(f"port {spec!r}: expected MODULE:FUNCTION or FILE.py:FUNCTION")
    try:
        if target.endswith(".py"):
            module_spec = importlib.util.spec_from_file_location(Path(target).stem, target)
            if module_spec is None or not Path(target).is_file():
                raise DiffError(f"port {spec!r}: no such file {target}")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ImportError as err:
        raise DiffError(f"port {spec!r}: cannot import {target} ({err})") from None
    if not callable(getattr(module, func, None)):
        raise DiffError(f"port {spec!r}: {target} has no function {func}")
    return getattr(module, func)


# ---------------------------------------------------------------------------------------------------------------
# Inputs (numpy, the same for both sides)


@dataclass
class Inputs:
    audio: np.ndarray  # 16 kHz mono float32
    size: str  # synthetic model size, and the HuBERT preset of a synthetic checkpoint
    checkpoint: str  # the stage's checkpoint (for the pipeline: the voice)
    f0: np.ndarray | None = None  # Hz per 10 ms frame, for the synthesizer
    seed: int = 0
    extra: dict = field(default_factory=dict)  # HuBERT's config preset; the pipeline's HuBERT and RMVPE checkpoints


def stage_args(stage: str, model: Any, inputs: Inputs) -> tuple:
    """The numpy arguments of the stage's runner call."""
    if stage in ("mel", "rmvpe"):
        return (inputs.audio,)
    if stage == "hubert":
        return (inputs.audio[None],)
    from rvc_bench.synth import synthetic

    x = synthetic.make_inputs(model.cfg, inputs.f0, seed=inputs.seed)
    return (x.phone[None], None, x.pitch[None], x.pitchf[None], None, x.eps[None], x.sine_noise[None])


# ---------------------------------------------------------------------------------------------------------------
# Running one side


@dataclass
class Result:
    signals: dict[str, np.ndarray]  # the stage's outputs, time-major (time on axis -2; f0 [T])
    # signal -> kind -> (frames where one of the side's chunks, windows or tiles starts; how near counts as at it)
    seams: dict[str, dict[str, tuple[list[int], int]]]


def run_stage(stage_name: str, side: Side, inputs: Inputs, recorder: capture.Recorder, plant=None) -> Result:
    """Load the stage on the side, run it once on `inputs` with every submodule recorded; plant(model), when given,
    changes the model first (the tests plant faults so)."""
    from rvc_bench.backends import get_backend

    stage = stages.get(stage_name)
    backend = get_backend(side.backend, side.device)
    options = dict(side.options)
    if stage_name == "hubert":
        options.update(config=inputs.extra["hubert_config"], version="v2")
    if side.port:
        model = load_port(side.port)(inputs.checkpoint)
        runner = stages.Runner(backend, model, stage.call(model, **options) if stage.call else model)
    else:
        runner = stage.load(backend, None if stage_name == "mel" else inputs.checkpoint, **options)
    if plant is not None:
        plant(runner.model)
    args = stage_args(stage_name, runner.model, inputs)
    with capture.tap(runner.model, recorder, rename=renamer(side.name_map)):
        out = runner(*args)
    return _result(stage_name, runner.model, out, inputs)


def _result(stage_name: str, model: Any, out: Any, inputs: Inputs) -> Result:
    n = inputs.audio.size
    if stage_name == "mel":
        return Result({"log-mel": np.reshape(out, (-1, 128))}, {})
    if stage_name == "hubert":
        spans = model.cfg.windows(n, T_MAX_SECONDS)
        return Result({"features": out[0]}, {"features": {"window": ([a // 320 for a, _ in spans[1:]], 2)}})
    if stage_name == "rmvpe":
        salience, f0 = out
        seams = {"chunk": _rmvpe_seams(model, salience.shape[0])}
        return Result({"salience": salience, "f0": f0}, {"salience": seams, "f0": seams})
    from rvc_bench.synth import tiling

    audio = np.reshape(out, (-1,))
    cfg = model.cfg
    tile = getattr(model, "tile_frames", None)
    frames = audio.size // cfg.upp
    context = getattr(getattr(model, "dec", None), "context", None) or tiling.context(cfg)
    starts = [a for _, a, _, _ in tiling.spans(frames, tile, context)][1:]
    reach = max(tiling.context(cfg))  # how far a seam reaches: the filter's true context, whatever the tiles used
    return Result({"audio": audio.reshape(frames, cfg.upp)}, {"audio": {"tile": (starts, reach)}})


def _rmvpe_seams(model, frames: int) -> tuple[list[int], int]:
    from rvc_bench.rmvpe.config import PAD_MULTIPLE, bounded_chunk, chunk_windows

    e2e = getattr(model, "model", None)
    if e2e is None or not hasattr(model, "chunk_frames"):
        return [], 0
    overlap = e2e.cfg.default_overlap if model.overlap_frames is None else model.overlap_frames
    padded = frames + (-frames % PAD_MULTIPLE)
    chunk = bounded_chunk(padded, model.chunk_frames, overlap)
    if chunk is None:
        return [], 0
    # A seam reaches as far as a chunk's context: the U-Net's overlap (and a cut BiGRU's warm-up) on each side.
    return [lo + keep_lo for lo, _, keep_lo, _ in chunk_windows(padded, chunk, overlap)][1:], max(overlap, 4)


def run_pipeline(side: Side, inputs: Inputs, recorder: capture.Recorder, plant=None, options=None) -> Result:
    """The whole conversion on the side, seeded noise shared by both sides: every submodule of the three networks
    (named hubert., rmvpe., synth.) and, between them, each chunk's features and synthesised audio."""
    from rvc_bench import pipeline
    from rvc_bench.backends import get_backend
    from rvc_bench.pipeline import HOP

    hubert, rmvpe = inputs.extra["hubert"], inputs.extra["rmvpe"]
    models = pipeline.load_models(
        get_backend(side.backend, side.device), inputs.checkpoint, hubert, rmvpe, inputs.extra["hubert_config"]
    )
    if plant is not None:
        plant(models)
    chunks: list[np.ndarray] = []
    models.features = _recorded(recorder, "pipeline.features", models.features, chunks)
    models.synthesize = _recorded(recorder, "pipeline.audio", models.synthesize)
    opts = options or pipeline.Options(seed=inputs.seed)
    with (
        capture.tap(models.rmvpe, recorder, "rmvpe."),
        capture.tap(models.hubert, recorder, "hubert."),
        capture.tap(models.synth, recorder, "synth."),
    ):
        conv = pipeline.convert(models, inputs.audio, opts)
    hop_out = conv.sr // 100
    frames = conv.waveform.size // hop_out
    t_pad = opts.windows.t_pad
    signals, seams = {}, {}  # in the pipeline's order: pitch, then the audio
    if conv.f0 is not None:
        signals["salience"], signals["f0"] = conv.salience, conv.f0
        seams["f0"] = seams["salience"] = {
            "chunk": ([(t + t_pad) // HOP for t in conv.cuts], 2),
            "RMVPE chunk": _rmvpe_seams(models.rmvpe, conv.f0.size),
        }
    if chunks:  # each chunk's features, padding included, one after another (50 frames/s)
        signals["features"] = np.concatenate(chunks)
        seams["features"] = {"chunk": ([int(n) for n in np.cumsum([c.shape[0] for c in chunks[:-1]])], 0)}
    signals["audio"] = conv.waveform[: frames * hop_out].reshape(frames, hop_out)
    seams["audio"] = {"chunk": ([t // HOP for t in conv.cuts], 2)}
    return Result({k: v for k, v in signals.items() if v is not None}, seams)


def _recorded(recorder: capture.Recorder, name: str, fn, kept: list | None = None):
    """fn, its numpy time-major output also recorded under `name` (and kept in `kept`)."""

    def call(*args, **kwargs):
        out = fn(*args, **kwargs)
        recorder.add(name, out, False)
        if kept is not None:
            kept.append(out)
        return out

    return call
