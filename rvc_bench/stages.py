"""The stage registry: what each stage of RVC inference is, said once for the pipeline, the suites and the CLI.

A stage has a name (the run store's `stage` column; its suites are suites/test_<name>.py for parity and
suites/test_bench_<name>.py for speed), a title, its config presets, its convert module and its synthetic checkpoint
generator. The convert module is the only code that reads the stage's files, and every stage's has the same calls:

    load_torch(path, device="cpu", **stage_opts)   the torch model (RMVPE: the audio -> f0 stage around E2E)
    load_mlx(path, **stage_opts)                   the MLX model, also from a converted .safetensors
    convert_file(src, dst, **stage_opts)           upstream file -> converted .safetensors (strict)
    recognise(obj)                                 is this unpickled object the stage's upstream format?

(stage_opts: HuBERT's `config` preset, which shapes cannot reveal; RMVPE's chunking.) The synthetic module's
`ensure_checkpoint(cache, size)` writes a seeded checkpoint in the upstream format. The log-mel front end has no
weights, so it has neither.

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

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from rvc_bench import fixtures
from rvc_bench.hubert import config as hubert_config
from rvc_bench.hubert import convert as hubert_convert
from rvc_bench.hubert import model_onnx as hubert_onnx
from rvc_bench.hubert import synthetic as hubert_synthetic
from rvc_bench.layout import CheckpointError
from rvc_bench.mel import model_onnx as mel_onnx
from rvc_bench.rmvpe import config as rmvpe_config
from rvc_bench.rmvpe import convert as rmvpe_convert
from rvc_bench.rmvpe import model_onnx as rmvpe_onnx
from rvc_bench.rmvpe import synthetic as rmvpe_synthetic
from rvc_bench.synth import config as synth_config
from rvc_bench.synth import convert as synth_convert
from rvc_bench.synth import model_onnx as synth_onnx
from rvc_bench.synth import synthetic as synth_synthetic


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

    def load(self, backend, path: str | os.PathLike, **stage_opts) -> Any:
        """The stage's model from `path` on `backend` (an rvc_bench.backends adapter: its name and device). ONNX
        Runtime loads an .onnx file directly, and any other checkpoint through its export in the fixture cache."""
        if backend.name == "onnx":
            return self.onnx.load(self.checkpoint_for("onnx", path, fixtures.cache_dir(), **stage_opts), backend,
                                  **stage_opts)
        stage_opts = {k: v for k, v in stage_opts.items() if k not in self.onnx_only_opts}
        if backend.name == "torch":
            return self.convert.load_torch(path, device=backend.device, **stage_opts)
        return self.convert.load_mlx(path, **stage_opts)

    def checkpoint(self, cache: str | os.PathLike, size: str) -> Path:
        """The seeded synthetic checkpoint of preset `size` in the upstream format, generated into `cache`."""
        return self.synthetic.ensure_checkpoint(cache, size)

    def checkpoint_for(self, backend_name: str, path: str | os.PathLike, cache: str | os.PathLike,
                       **stage_opts) -> Path:
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
        stage_opts = {k: v for k, v in stage_opts.items() if k not in self.onnx_only_opts}
        if backend_name != "mlx" or path.suffix == ".safetensors":
            return path
        stat = path.resolve().stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{sorted(stage_opts.items())}"
        dst = Path(cache) / "converted" / f"{path.stem}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.safetensors"
        if not dst.is_file():
            self.convert.convert_file(path, dst, **stage_opts)
        return dst


MEL = Stage("mel", "Log-mel (RMVPE front end)", onnx=mel_onnx)
RMVPE = Stage("rmvpe", "RMVPE pitch", tuple(rmvpe_config.PRESETS), rmvpe_convert, rmvpe_synthetic, rmvpe_onnx)
HUBERT = Stage("hubert", "HuBERT/ContentVec features", tuple(hubert_config.PRESETS), hubert_convert,
               hubert_synthetic, hubert_onnx, export_opts=("config", "version"), onnx_only_opts=("version",))
SYNTH = Stage("synth", "RVC synthesis", synth_config.SIZES, synth_convert, synth_synthetic, synth_onnx)
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
