"""The stage registry: what each stage of RVC inference is, said once for the pipeline, the suites and the CLI.

A stage has a name (the run store's `stage` column; its suites are suites/test_<name>.py for parity and
suites/test_bench_<name>.py for speed), a title, its config presets, its convert module and its synthetic checkpoint
generator. The convert module is the only code that reads the stage's files, and every stage's has the same calls:

    load_torch(path, device="cpu", **stage_opts)   the torch model (RMVPE: the audio -> f0 stage around E2E)
    load_mlx(path, **stage_opts)                   the MLX model, also from a converted .safetensors
    convert_file(src, dst, **stage_opts)           upstream file -> converted .safetensors (strict)
    recognise(obj)                                 is this unpickled object the stage's upstream format?

(stage_opts: HuBERT's `config` preset, which shapes cannot reveal; RMVPE's chunking; the synthesizer's decoder
`tile_frames`, for the twins only.) The synthetic module's `ensure_checkpoint(cache, size)` writes a seeded checkpoint
in the upstream format. The log-mel front end has no weights, so it has neither: rvc_bench/mel/load.py builds its
twins (load_torch, load_mlx, load_onnx, each given the adapter).

`Stage.load` returns a Runner: numpy in, time-major numpy out on every backend, with the framework-level
call apart for timing; `Stage.model` the bare framework model (what the pipeline drives).

The ONNX module (<stage>/model_onnx.py) exports the torch twin into the cache and runs it on ONNX Runtime:

    export_path(checkpoint, cache, **export_opts)  where the export of `checkpoint` is cached (imports nothing)
    ensure(checkpoint, cache, **export_opts)       that export, made in this process on first use (imports torch)
    exported(checkpoint, cache, **export_opts)     that export, made in a child process on first use
    load(path, backend, **stage_opts)              the runner of an .onnx file (ours, or upstream's layout)

export_opts are the stage_opts that shape the graph (HuBERT: `config` and `version`, one graph per RVC version).
`version` is for the ONNX loader only: the twins compute both versions from one model.

Importing this module imports no framework; a loader imports its framework when it is called.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from rvc_bench import fixtures
from rvc_bench.hubert import config as hubert_config
from rvc_bench.hubert import convert as hubert_convert
from rvc_bench.hubert import model_onnx as hubert_onnx
from rvc_bench.hubert import synthetic as hubert_synthetic
from rvc_bench.layout import CheckpointError
from rvc_bench.mel import load as mel_load
from rvc_bench.mel import model_onnx as mel_onnx
from rvc_bench.rmvpe import config as rmvpe_config
from rvc_bench.rmvpe import convert as rmvpe_convert
from rvc_bench.rmvpe import model_onnx as rmvpe_onnx
from rvc_bench.rmvpe import synthetic as rmvpe_synthetic
from rvc_bench.synth import config as synth_config
from rvc_bench.synth import convert as synth_convert
from rvc_bench.synth import model_onnx as synth_onnx
from rvc_bench.synth import synthetic as synth_synthetic


class Runner:
    """A stage's model on one backend (an rvc_bench.backends adapter) behind a numpy boundary, what Stage.load
    returns: `runner(*arrays)` takes numpy arrays (None passes through) and returns numpy, time-major: time on the
    second-to-last axis, channels last (log-mel [.., T, 128]; audio [.., N, 1]; RMVPE's f0 [T]).

    The parts, for a benchmark: `inputs(*arrays)` moves the arrays to the device before the clock starts; `call` is
    the framework-level call a timed region holds (Backend.run forces its own outputs: mx.eval, torch
    synchronisation); `outputs(out)` copies to the host and lays out after the clock stops. A runner's round trip
    thus times exactly what the framework call alone did."""

    def __init__(self, backend, model: Any, call: Callable, time_axis: int = -2):
        self.backend, self.model, self.call = backend, model, call
        self.time_axis = time_axis  # of call()'s array outputs: -1 for channels-first frameworks

    def inputs(self, *arrays) -> tuple:
        return tuple(None if a is None else self.backend.from_numpy(a) for a in arrays)

    def outputs(self, out: Any) -> Any:
        if isinstance(out, (tuple, list)):
            return type(out)(self.outputs(o) for o in out)
        out = out if isinstance(out, np.ndarray) else self.backend.to_numpy(out)
        return out if self.time_axis == -2 else np.swapaxes(out, self.time_axis, -2)  # a view: the values as computed

    def call_windows(self, windows: list[tuple]) -> Any:
        """call() on each window's device inputs, each window computed before the next is built (the peak memory is
        one window's), joined along time on the device: framework-level, like call()."""
        outs = []
        for args in windows:
            outs.append(self.call(*args))
            self.backend.evaluate(outs[-1])
        return self.backend.concat(outs, self.time_axis)

    def __call__(self, *arrays) -> Any:
        return self.outputs(self.call(*self.inputs(*arrays)))


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    presets: tuple[str, ...] = ()
    convert: ModuleType | None = None
    synthetic: ModuleType | None = None
    onnx: ModuleType | None = None
    export_opts: tuple[str, ...] = ()  # stage_opts that shape the ONNX graph
    onnx_only_opts: tuple[str, ...] = ()  # stage_opts only the ONNX loader takes
    twin_only_opts: tuple[str, ...] = ()  # stage_opts only the torch and MLX loaders take
    loader: ModuleType | None = None  # load_<backend>(adapter) of a stage without weights (the log-mel)
    call: Callable[..., Callable] | None = None  # call(model, **stage_opts): the runner's call (default: the model)
    channels_first: tuple[str, ...] = ()  # backends whose outputs put time last (the runner makes them time-major)

    def load(self, backend, path: str | os.PathLike | None = None, **stage_opts) -> Runner:
        """The stage on `backend` (an rvc_bench.backends adapter) behind a numpy-in, time-major-out boundary: a
        Runner around model(backend, path, **stage_opts), whose call is the stage's (HuBERT: the windowed
        features of `version`, default v2; the synthesizer: infer)."""
        model = self.model(backend, path, **stage_opts)
        call = self.call(model, **stage_opts) if self.call else model
        return Runner(backend, model, call, -1 if backend.name in self.channels_first else -2)

    def model(self, backend, path: str | os.PathLike | None = None, **stage_opts) -> Any:
        """The stage's framework model from `path` on `backend`. ONNX Runtime loads an .onnx file directly, and any
        other checkpoint through its export in the fixture cache. The log-mel has no weights: no path."""
        if self.loader is not None:
            return getattr(self.loader, f"load_{backend.name}")(backend)
        if backend.name == "onnx":
            if any(stage_opts.get(k) is not None for k in self.twin_only_opts):
                raise ValueError(
                    f"{self.name} on onnx takes no {', '.join(self.twin_only_opts)}: the exported "
                    "graph computes it in one pass"
                )
            stage_opts = {k: v for k, v in stage_opts.items() if k not in self.twin_only_opts}
            return self.onnx.load(
                self.checkpoint_for("onnx", path, fixtures.cache_dir(), **stage_opts), backend, **stage_opts
            )
        stage_opts = {k: v for k, v in stage_opts.items() if k not in self.onnx_only_opts}
        if backend.name == "torch":
            return self.convert.load_torch(path, device=backend.device, **stage_opts)
        return self.convert.load_mlx(path, **stage_opts)

    def takes(self, backend_name: str, opt: str) -> bool:
        """Whether `backend_name`'s loader takes the stage option `opt` (an exported graph fixes some options)."""
        return opt not in (self.twin_only_opts if backend_name == "onnx" else self.onnx_only_opts)

    def checkpoint(self, cache: str | os.PathLike, size: str) -> Path:
        """The seeded synthetic checkpoint of preset `size` in the upstream format, generated into `cache`."""
        return self.synthetic.ensure_checkpoint(cache, size)

    def checkpoint_for(
        self, backend_name: str, path: str | os.PathLike, cache: str | os.PathLike, **stage_opts
    ) -> Path:
        """The file `backend_name` loads `path` from: `path` itself for torch; for MLX the same weights converted
        once into cache/converted/, so that an MLX process never imports torch (which unpickling needs) and its
        fresh-process memory is MLX's alone (keyed by the source's path, size and mtime); for ONNX Runtime the torch
        twin exported once into cache/onnx/ by a child process (keyed by the source's content and the exporter), so
        that the ONNX process never imports torch for it. An .onnx file is its own."""
        path = Path(path)
        if backend_name == "onnx":
            if path.suffix == ".onnx":
                return path
            return self.onnx.exported(path, cache, **{k: v for k, v in stage_opts.items() if k in self.export_opts})
        stage_opts = {k: v for k, v in stage_opts.items() if k not in self.onnx_only_opts + self.twin_only_opts}
        if backend_name != "mlx" or path.suffix == ".safetensors":
            return path
        stat = path.resolve().stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{sorted(stage_opts.items())}"
        dst = Path(cache) / "converted" / f"{path.stem}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.safetensors"
        if not dst.is_file():
            self.convert.convert_file(path, dst, **stage_opts)
        return dst


def _features(model, version: str = "v2", **_) -> Callable:
    return functools.partial(model.features_windowed, version=version)


def _infer(model, **_) -> Callable:
    return lambda *args: model.infer(*args)  # looked up per call: a variant may wrap the model's infer


MEL = Stage("mel", "Log-mel (RMVPE front end)", onnx=mel_onnx, loader=mel_load, channels_first=("torch", "onnx"))
RMVPE = Stage("rmvpe", "RMVPE pitch", tuple(rmvpe_config.PRESETS), rmvpe_convert, rmvpe_synthetic, rmvpe_onnx)
HUBERT = Stage(
    "hubert",
    "HuBERT/ContentVec features",
    tuple(hubert_config.PRESETS),
    hubert_convert,
    hubert_synthetic,
    hubert_onnx,
    export_opts=("config", "version"),
    onnx_only_opts=("version",),
    call=_features,
)
SYNTH = Stage(
    "synth",
    "RVC synthesis",
    synth_config.SIZES,
    synth_convert,
    synth_synthetic,
    synth_onnx,
    twin_only_opts=("tile_frames",),
    call=_infer,
    channels_first=("torch", "onnx"),
)
STAGES: dict[str, Stage] = {s.name: s for s in (MEL, RMVPE, HUBERT, SYNTH)}

# The content encoder of a pipeline of each size: the tiny HuBERT preset is 64 wide, which no synthesizer takes.
PIPELINE_HUBERT = {"full": "full", "tiny": "tiny-768"}


def get(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}: choose one of {', '.join(STAGES)}") from None


def recognise(obj: Any, what: str = "checkpoint") -> Stage:
    """The stage whose upstream checkpoint format an unpickled object is, from its structure (not tensor shapes)."""
    for stage in STAGES.values():
        if stage.convert is not None and stage.convert.recognise(obj):
            return stage
    raise CheckpointError(f"{what}: unrecognised checkpoint: expected an RVC voice .pth, rmvpe.pt or hubert_base.pt")


def recognise_path(path: str | os.PathLike) -> Stage:
    """The stage of an upstream checkpoint on disk: a folder is a Hugging Face HuBERT/ContentVec (the only stage
    shipped that way); a .safetensors or a pickle is recognised from its keys (a converted file is refused: it is
    already the output of `convert`)."""
    from rvc_bench.checkpoints import load_pickled, load_safetensors

    path = Path(path)
    if path.is_dir():
        return HUBERT
    if path.suffix == ".safetensors":
        weights, meta = load_safetensors(path)
        if "stage" in meta:
            raise CheckpointError(f"{path}: already converted ({meta['stage']!r} weights in MLX layout)")
        return recognise(weights, str(path))
    return recognise(load_pickled(path), str(path))


def pipeline_checkpoints(cache: str | os.PathLike, size: str) -> tuple[Path, Path]:
    """(hubert, rmvpe) synthetic checkpoints in the real formats for a pipeline of `size` ("full" or "tiny"; the
    HuBERT preset is PIPELINE_HUBERT[size]), generated into `cache` on first use. Random weights: timing and
    parity, not meaningful audio."""
    return HUBERT.checkpoint(cache, PIPELINE_HUBERT[size]), RMVPE.checkpoint(cache, size)


def check_weights_dir(folder: Path) -> None:
    """Read the real checkpoints the suites take from --weights-dir (safe and strict), before anything runs; a
    CheckpointError names what is wrong."""
    if not folder.is_dir():
        raise CheckpointError(f"--weights-dir {folder} is not a folder")
    readers = {"rmvpe.pt": RMVPE.convert.read, "hubert_base.pt": lambda path: HUBERT.convert.read(path, "full")}
    present = [name for name in readers if (folder / name).is_file()]
    if not present:
        raise CheckpointError(f"--weights-dir {folder} holds neither {' nor '.join(readers)}")
    for name in present:
        readers[name](folder / name)
