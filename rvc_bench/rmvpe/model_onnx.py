"""RMVPE on ONNX Runtime: the torch twin's E2E exported (U-Net, BiGRU as an ONNX GRU op, Linear, Sigmoid) and run
with the same calls as the twins (mel2hidden with the 32-frame padding and chunking, RMVPE audio -> salience, f0);
numpy in, numpy out.

The graph is the network alone, log-mel [1, 128, T] (T a multiple of 32) -> salience [1, T, 360]: the interface
of upstream's rmvpe.onnx, which therefore loads here too (its tensor names vary, so it is checked by position).
The log-mel comes from the mel stage's ONNX graph (rvc_bench.mel.model_onnx); padding, cropping and decoding are
numpy. Beside it, an export holds the network's two parts as graphs of their own (<name>.front.onnx: log-mel ->
U-Net + cnn features [1, T, 384]; <name>.head.onnx: features -> BiGRU, Linear, Sigmoid -> salience), so that
chunked inference can run the U-Net in chunks and the BiGRU over the whole sequence, as the twins do. An upstream
single graph runs whole (or with the BiGRU cut per chunk, the measured variant) only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from rvc_bench import onnx_graph
from rvc_bench.onnx_graph import Port
from rvc_bench.rmvpe.config import PAD_MULTIPLE, THRESHOLD, RMVPEConfig, bounded_chunk, chunk_windows, preset
from rvc_bench.rmvpe.decode import decode

STAGE = "rmvpe"
VARIANT = "e2e"
PARTS = ("front", "head")  # the graphs exported beside the whole network (see the module docstring)
LAYOUT_VERSION = 2  # bump when the set of graphs exported per checkpoint changes (2: the parts added)
EXAMPLE_FRAMES = 64  # export example length; the frame axis is dynamic (multiples of 32)


def ports(cfg: RMVPEConfig, part: str = VARIANT) -> tuple[tuple[Port, ...], tuple[Port, ...]]:
    mel = Port("mel", "float32", (1, cfg.n_mels, "frames"))
    features = Port("features", "float32", (1, "frames", cfg.cnn_out))
    salience = Port("salience", "float32", (1, "frames", cfg.n_bins))
    return {"e2e": ((mel,), (salience,)), "front": ((mel,), (features,)), "head": ((features,), (salience,))}[part]


def part_path(path: str | os.PathLike, part: str) -> Path:
    return Path(path).with_suffix(f".{part}.onnx")


def export(model, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Torch E2E (rvc_bench.rmvpe.model_torch) -> ONNX at `path`, its parts first beside it (so `path` existing
    means they do)."""
    import torch

    cfg = model.cfg
    blocks = torch.export.Dim("blocks", min=1)
    mel = torch.randn(1, cfg.n_mels, EXAMPLE_FRAMES, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = model.cnn_features(mel)
    front, head = _parts_as_modules(model)
    # The whole network first (exporting the GRU alone leaves the exporter unable to trace it again in this
    # process), under a temporary name that becomes `path` once its parts are written.
    path, pending = Path(path), part_path(path, "pending")
    graphs = {
        pending: ("e2e", model, mel, {"mel": {2: PAD_MULTIPLE * blocks}}),
        part_path(path, "front"): ("front", front, mel, {"mel": {2: PAD_MULTIPLE * blocks}}),
        # nn.GRU alone as the graph: a declared frame Dim fails torch.export's check, AUTO keeps the axis dynamic
        part_path(path, "head"): ("head", head, features, {"features": {1: torch.export.Dim.AUTO}}),
    }
    for dst, (part, module, example, dynamic) in graphs.items():
        onnx_graph.export(
            module,
            (example,),
            dst,
            *ports(cfg, part),
            dynamic,
            {"stage": STAGE, "variant": part, "config": cfg.to_dict(), **(metadata or {})},
        )
    os.replace(pending, path)
    return Path(path)


def _parts_as_modules(model):
    """E2E's two parts as modules for the exporter, forward's parameter named like the graph's input."""
    import torch

    class Front(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.e2e = model

        def forward(self, mel):
            return self.e2e.cnn_features(mel)

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = model.fc

        def forward(self, features):
            return self.fc(features)

    return Front(), Head()


def export_path(checkpoint: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """Where the export of `checkpoint` (an rmvpe.pt, or its keys in a .safetensors) is cached."""
    return onnx_graph.export_path(cache_dir, STAGE, f"{Path(checkpoint).stem}-l{LAYOUT_VERSION}", checkpoint)


def ensure(checkpoint: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """The cached export of `checkpoint`, made in this process from the torch twin on first use (imports torch). One
    export per process: once torch's exporter has traced the BiGRU alone it cannot trace it again (`exported` runs
    each in a child)."""
    from rvc_bench.rmvpe.convert import load_torch

    return onnx_graph.cached_export(
        cache_dir,
        STAGE,
        f"{Path(checkpoint).stem}-l{LAYOUT_VERSION}",
        checkpoint,
        lambda path, meta: export(load_torch(checkpoint).model, path, meta),
    )


def exported(checkpoint: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """The cached export, made in a child process on first use (this process imports no torch)."""
    return onnx_graph.ensure_exported(export_path(checkpoint, cache_dir), __name__, checkpoint, cache_dir)


class E2E:
    """Log-mel [B, 128, T] (T a multiple of 32) -> salience [B, T, 360], as the twins' E2E."""

    def __init__(self, path: str | os.PathLike, backend, cfg: RMVPEConfig | None = None):
        self.backend, self.path = backend, Path(path)
        self.session, self.meta = onnx_graph.open_session(path, backend, STAGE)
        # Our exports carry their config; an upstream rmvpe.onnx is the released model (the "full" preset).
        self.cfg = RMVPEConfig.from_dict(json.loads(self.meta["config"])) if self.meta else (cfg or preset("full"))
        inputs, outputs = ports(self.cfg)
        by_name = bool(self.meta)
        onnx_graph.check_ports(self.session.get_inputs(), inputs, "input", str(path), by_name)
        onnx_graph.check_ports(self.session.get_outputs(), outputs, "output", str(path), by_name)
        self._input = self.session.get_inputs()[0].name
        self._parts = None  # opened on the first chunked call

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        mel = np.asarray(mel, dtype=np.float32)
        if mel.ndim != 3 or mel.shape[-1] % PAD_MULTIPLE:
            raise ValueError(
                f"expected log-mel [batch, {self.cfg.n_mels}, frames (a multiple of {PAD_MULTIPLE})], got {mel.shape}"
            )
        return np.concatenate([self.session.run(None, {self._input: row[None]})[0] for row in mel])

    def parts(self) -> dict:
        """{"front": session, "head": session} of an rvc-bench export; an upstream single graph has none."""
        if self._parts is None:
            paths = {part: part_path(self.path, part) for part in PARTS}
            if not self.meta or not all(p.is_file() for p in paths.values()):
                raise onnx_graph.OnnxModelError(
                    f"{self.path}: chunked inference runs the U-Net in chunks and the BiGRU whole, which needs the "
                    f"network's parts as graphs of their own ({', '.join(p.name for p in paths.values())}: an "
                    f"rvc-bench export); this file is one graph: run it whole"
                )
            self._parts = {}
            for part, p in paths.items():
                session, _ = onnx_graph.open_session(p, self.backend, STAGE)
                inputs, outputs = ports(self.cfg, part)
                onnx_graph.check_ports(session.get_inputs(), inputs, "input", str(p))
                onnx_graph.check_ports(session.get_outputs(), outputs, "output", str(p))
                self._parts[part] = session
        return self._parts

    def mel2hidden(
        self, mel: np.ndarray, chunk_frames: int | None = None, overlap_frames: int | None = None, cut_gru: bool = False
    ) -> np.ndarray:
        """[B, 128, T] -> [B, T, 360]: zero-pad T to a multiple of 32, run, crop back; optionally the U-Net in
        overlapping chunks and the BiGRU whole, or (cut_gru) the whole network per chunk (see the torch twin's
        mel2hidden)."""
        n_frames = mel.shape[-1]
        mel = _pad_frames(np.asarray(mel, dtype=np.float32), n_frames)
        if chunk_frames is None:
            return self(mel)[:, :n_frames]
        overlap_frames = self.cfg.default_overlap if overlap_frames is None else overlap_frames
        windows = chunk_windows(mel.shape[-1], chunk_frames, overlap_frames)
        if cut_gru:
            return np.concatenate([self(mel[..., lo:hi])[:, a:b] for lo, hi, a, b in windows], axis=1)[:, :n_frames]
        front, head = self.parts()["front"], self.parts()["head"]
        features = np.concatenate(
            [
                np.concatenate([front.run(None, {"mel": row[None, :, lo:hi]})[0] for row in mel])[:, a:b]
                for lo, hi, a, b in windows
            ],
            axis=1,
        )
        return np.concatenate([head.run(None, {"features": row[None]})[0] for row in features])[:, :n_frames]


def _pad_frames(mel: np.ndarray, n_frames: int) -> np.ndarray:
    n_pad = -n_frames % PAD_MULTIPLE
    return np.pad(mel, ((0, 0), (0, 0), (0, n_pad))) if n_pad else mel


class RMVPE:
    """Audio (16 kHz mono float32) -> log-mel -> salience -> f0, as the RVC pipeline calls it."""

    def __init__(
        self, model: E2E, mel, chunk_frames: int | None = None, overlap_frames: int | None = None, cut_gru: bool = False
    ):
        """chunk_frames, overlap_frames, cut_gru: as the twins' (config.bounded_chunk); default None: whole, as
        torch's and as upstream's ONNX RMVPE runs."""
        self.model, self.mel = model, mel
        self.chunk_frames, self.overlap_frames, self.cut_gru = chunk_frames, overlap_frames, cut_gru

    def salience(self, audio: np.ndarray) -> np.ndarray:
        """[N] -> [T, 360], T = N // 160 + 1."""
        mel = self.mel(np.asarray(audio, dtype=np.float32)[None])  # [1, 128, T]
        overlap = self.model.cfg.default_overlap if self.overlap_frames is None else self.overlap_frames
        chunk = bounded_chunk(mel.shape[-1], self.chunk_frames, overlap)
        return self.model.mel2hidden(mel, chunk, overlap, self.cut_gru)[0]

    def __call__(self, audio: np.ndarray, threshold: float = THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
        """[N] -> (salience [T, 360] float32, f0 [T] Hz float64, 0 = unvoiced)."""
        salience = self.salience(audio)
        return salience, decode(salience, threshold)


def load(
    path: str | os.PathLike,
    backend,
    chunk_frames: int | None = None,
    overlap_frames: int | None = None,
    cut_gru: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> RMVPE:
    """The RMVPE stage from an exported (or upstream) RMVPE .onnx on an OnnxBackend, with the log-mel graph from the
    export cache (default: the fixture cache), as convert.load_torch gives the torch stage."""
    from rvc_bench.mel import model_onnx as mel_onnx

    return RMVPE(E2E(path, backend), mel_onnx.load(backend, cache_dir), chunk_frames, overlap_frames, cut_gru)
