"""RMVPE on ONNX Runtime: the torch twin's E2E exported (U-Net, BiGRU as an ONNX GRU op, Linear, Sigmoid) and run
with the same calls as the twins (mel2hidden with the 32-frame padding and chunking, RMVPE audio -> salience, f0);
numpy in, numpy out.

The graph is the network alone, log-mel [1, 128, T] (T a multiple of 32) -> salience [1, T, 360]: the interface
of upstream's rmvpe.onnx, which therefore loads here too (its tensor names vary, so it is checked by position).
The log-mel comes from the mel stage's ONNX graph (rvc_bench.mel.model_onnx); padding, cropping and decoding are
numpy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from rvc_bench import onnx_graph
from rvc_bench.onnx_graph import Port
from rvc_bench.rmvpe.config import (PAD_MULTIPLE, THRESHOLD, RMVPEConfig, bounded_chunk, chunk_windows,
                                   preset)
from rvc_bench.rmvpe.decode import decode

STAGE = "rmvpe"
VARIANT = "e2e"
EXAMPLE_FRAMES = 64  # export example length; the frame axis is dynamic (multiples of 32)


def ports(cfg: RMVPEConfig) -> tuple[tuple[Port, ...], tuple[Port, ...]]:
    return ((Port("mel", "float32", (1, cfg.n_mels, "frames")),),
            (Port("salience", "float32", (1, "frames", cfg.n_bins)),))


def export(model, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Torch E2E (rvc_bench.rmvpe.model_torch) -> ONNX at `path`."""
    import torch

    cfg = model.cfg
    inputs, outputs = ports(cfg)
    example = torch.randn(1, cfg.n_mels, EXAMPLE_FRAMES, generator=torch.Generator().manual_seed(0))
    blocks = torch.export.Dim("blocks", min=1)
    return onnx_graph.export(model, (example,), path, inputs, outputs, {"mel": {2: PAD_MULTIPLE * blocks}},
                             {"stage": STAGE, "variant": VARIANT, "config": cfg.to_dict(), **(metadata or {})})


def export_path(checkpoint: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """Where the export of `checkpoint` (an rmvpe.pt, or its keys in a .safetensors) is cached."""
    return onnx_graph.export_path(cache_dir, STAGE, Path(checkpoint).stem, checkpoint)


def ensure(checkpoint: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """The cached export of `checkpoint`, made in this process from the torch twin on first use (imports torch)."""
    from rvc_bench.rmvpe.convert import load_torch

    return onnx_graph.cached_export(cache_dir, STAGE, Path(checkpoint).stem, checkpoint,
                                    lambda path, meta: export(load_torch(checkpoint).model, path, meta))


def exported(checkpoint: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """The cached export, made in a child process on first use (this process imports no torch)."""
    return onnx_graph.ensure_exported(export_path(checkpoint, cache_dir), __name__, checkpoint, cache_dir)


class E2E:
    """Log-mel [B, 128, T] (T a multiple of 32) -> salience [B, T, 360], as the twins' E2E."""

    def __init__(self, path: str | os.PathLike, backend, cfg: RMVPEConfig | None = None):
        self.backend = backend
        self.session, self.meta = onnx_graph.open_session(path, backend, STAGE)
        # Our exports carry their config; an upstream rmvpe.onnx is the released model (the "full" preset).
        self.cfg = RMVPEConfig.from_dict(json.loads(self.meta["config"])) if self.meta else (cfg or preset("full"))
        inputs, outputs = ports(self.cfg)
        by_name = bool(self.meta)
        onnx_graph.check_ports(self.session.get_inputs(), inputs, "input", str(path), by_name)
        onnx_graph.check_ports(self.session.get_outputs(), outputs, "output", str(path), by_name)
        self._input = self.session.get_inputs()[0].name

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        mel = np.asarray(mel, dtype=np.float32)
        if mel.ndim != 3 or mel.shape[-1] % PAD_MULTIPLE:
            raise ValueError(f"expected log-mel [batch, {self.cfg.n_mels}, frames (a multiple of {PAD_MULTIPLE})], "
                             f"got {mel.shape}")
        return np.concatenate([self.session.run(None, {self._input: row[None]})[0] for row in mel])

    def mel2hidden(self, mel: np.ndarray, chunk_frames: int | None = None,
                   overlap_frames: int | None = None) -> np.ndarray:
        """[B, 128, T] -> [B, T, 360]: zero-pad T to a multiple of 32, run, crop back; optionally in overlapping
        chunks (see the torch twin's mel2hidden)."""
        n_frames = mel.shape[-1]
        if chunk_frames is None:
            return self(_pad_frames(mel, n_frames))[:, :n_frames]
        overlap_frames = self.cfg.default_overlap if overlap_frames is None else overlap_frames
        out = [self(_pad_frames(mel[..., lo:hi], hi - lo))[:, keep_lo:keep_hi]
               for lo, hi, keep_lo, keep_hi in chunk_windows(n_frames, chunk_frames, overlap_frames)]
        return np.concatenate(out, axis=1)


def _pad_frames(mel: np.ndarray, n_frames: int) -> np.ndarray:
    n_pad = -n_frames % PAD_MULTIPLE
    return np.pad(mel, ((0, 0), (0, 0), (0, n_pad))) if n_pad else mel


class RMVPE:
    """Audio (16 kHz mono float32) -> log-mel -> salience -> f0, as the RVC pipeline calls it."""

    def __init__(self, model: E2E, mel, chunk_frames: int | None = None, overlap_frames: int | None = None):
        """chunk_frames, overlap_frames: as the twins' (config.bounded_chunk); default None: whole, as torch's and
        as upstream's ONNX RMVPE runs."""
        self.model, self.mel = model, mel
        self.chunk_frames, self.overlap_frames = chunk_frames, overlap_frames

    def salience(self, audio: np.ndarray) -> np.ndarray:
        """[N] -> [T, 360], T = N // 160 + 1."""
        mel = self.mel(np.asarray(audio, dtype=np.float32)[None])  # [1, 128, T]
        overlap = self.model.cfg.default_overlap if self.overlap_frames is None else self.overlap_frames
        return self.model.mel2hidden(mel, bounded_chunk(mel.shape[-1], self.chunk_frames, overlap), overlap)[0]

    def __call__(self, audio: np.ndarray, threshold: float = THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
        """[N] -> (salience [T, 360] float32, f0 [T] Hz float64, 0 = unvoiced)."""
        salience = self.salience(audio)
        return salience, decode(salience, threshold)


def load(path: str | os.PathLike, backend, chunk_frames: int | None = None, overlap_frames: int | None = None,
         cache_dir: str | os.PathLike | None = None) -> RMVPE:
    """The RMVPE stage from an exported (or upstream) RMVPE .onnx on an OnnxBackend, with the log-mel graph from the
    export cache (default: the fixture cache), as convert.load_torch gives the torch stage."""
    from rvc_bench.mel import model_onnx as mel_onnx

    return RMVPE(E2E(path, backend), mel_onnx.load(backend, cache_dir), chunk_frames, overlap_frames)
