"""ContentVec / HuBERT on ONNX Runtime: the torch twin's RVC features exported (conv stack, transformer; v1 =
final_proj of layer 9, v2 = layer 12, one graph per version) and run with the twins' calls; numpy in, numpy out.

Graph interface: audio [1, 1, N] -> features [1, F, C], the layout of upstream's ContentVec exports
(vec-256-layer-9.onnx, vec-768-layer-12.onnx), which therefore load here too: their tensor names vary, so they are
checked by position, their version is read from the feature width (256 -> v1, 768 -> v2), and their frame
arithmetic is the released model's (the "full" preset; 320-sample hop, 400-sample receptive field).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from rvc_bench import onnx_graph
from rvc_bench.hubert.config import T_MAX_SECONDS, HubertConfig, get_config
from rvc_bench.onnx_graph import OnnxModelError, Port

STAGE = "hubert"
EXAMPLE_SAMPLES = 16000  # export example: 1 s; the sample axis is dynamic


def width(cfg: HubertConfig, version: str) -> int:
    if version not in ("v1", "v2"):
        raise ValueError(f"unknown RVC version {version!r}: 'v1' or 'v2'")
    return cfg.final_dim if version == "v1" else cfg.embed_dim


def ports(cfg: HubertConfig, version: str) -> tuple[tuple[Port, ...], tuple[Port, ...]]:
    return (
        (Port("source", "float32", (1, 1, "samples")),),
        (Port("features", "float32", (1, "frames", width(cfg, version))),),
    )


def export(model, version: str, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Torch HubertModel (rvc_bench.hubert.model_torch) -> ONNX graph of its `version` features at `path`."""
    import torch

    class Features(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, source):  # [1, 1, N] -> [1, F, C]
            return self.model.features(source[:, 0], version)

    cfg = model.cfg
    inputs, outputs = ports(cfg, version)
    example = 0.1 * torch.randn(1, 1, EXAMPLE_SAMPLES, generator=torch.Generator().manual_seed(0))
    samples = torch.export.Dim("samples", min=cfg.receptive_field)
    return onnx_graph.export(
        Features(),
        (example,),
        path,
        inputs,
        outputs,
        {"source": {2: samples}},
        {"stage": STAGE, "variant": version, "version": version, "config": cfg.to_dict(), **(metadata or {})},
    )


def _variant(checkpoint: str | os.PathLike, config: str, version: str) -> str:
    width(get_config(config), version)  # an unknown version or preset fails before any hashing or export
    return f"{Path(checkpoint).stem}-{config}-{version}"


def export_path(
    checkpoint: str | os.PathLike, cache_dir: str | os.PathLike, config: str = "full", version: str = "v2"
) -> Path:
    """Where the export of `checkpoint`'s `version` features (HuBERT preset `config`) is cached."""
    return onnx_graph.export_path(cache_dir, STAGE, _variant(checkpoint, config, version), checkpoint)


def ensure(
    checkpoint: str | os.PathLike, cache_dir: str | os.PathLike, config: str = "full", version: str = "v2"
) -> Path:
    """The cached export, made in this process from the torch twin on first use (imports torch)."""
    from rvc_bench.hubert.convert import load_torch

    return onnx_graph.cached_export(
        cache_dir,
        STAGE,
        _variant(checkpoint, config, version),
        checkpoint,
        lambda path, meta: export(load_torch(checkpoint, config=config), version, path, meta),
    )


def exported(
    checkpoint: str | os.PathLike, cache_dir: str | os.PathLike, config: str = "full", version: str = "v2"
) -> Path:
    """The cached export, made in a child process on first use (this process imports no torch)."""
    return onnx_graph.ensure_exported(
        export_path(checkpoint, cache_dir, config, version),
        __name__,
        checkpoint,
        cache_dir,
        config=config,
        version=version,
    )


class HubertModel:
    """RVC content features of one version: features / features_windowed as the twins' (source [B, N])."""

    def __init__(self, path: str | os.PathLike, backend, cfg: HubertConfig | str = "full"):
        self.backend, self.path = backend, Path(path)
        self.session, self.meta = onnx_graph.open_session(path, backend, STAGE)
        if self.meta:
            self.cfg = get_config(HubertConfig.from_dict(json.loads(self.meta["config"])))
            self.version = self.meta["version"]
        else:
            self.cfg = get_config(cfg)
            self.version = self._upstream_version(str(path))
        inputs, outputs = ports(self.cfg, self.version)
        by_name = bool(self.meta)
        onnx_graph.check_ports(self.session.get_inputs(), inputs, "input", str(path), by_name)
        onnx_graph.check_ports(self.session.get_outputs(), outputs, "output", str(path), by_name)
        self._input = self.session.get_inputs()[0].name

    def _upstream_version(self, what: str) -> str:
        outputs = self.session.get_outputs()
        shape = list(outputs[0].shape) if len(outputs) == 1 else []
        by_width = {width(self.cfg, v): v for v in ("v1", "v2")}
        if len(shape) != 3 or shape[-1] not in by_width:
            widths = " or ".join(f"{w} ({v})" for w, v in by_width.items())
            raise OnnxModelError(
                f"{what}: cannot tell the RVC version: the runner needs one output [1, frames, "
                f"{widths}], the file has {[(o.name, o.shape) for o in outputs]}"
            )
        return by_width[shape[-1]]

    def features(self, source: np.ndarray, version: str = "v2") -> np.ndarray:
        """RVC's content features: [B, N] 16 kHz audio -> [B, F, 256 (v1) | 768 (v2)]."""
        if version != self.version:
            raise ValueError(f"this ONNX graph computes {self.version} features, not {version}")
        source = np.asarray(source, dtype=np.float32)
        if source.ndim != 2 or source.shape[1] < self.cfg.receptive_field:
            raise ValueError(
                f"expected 16 kHz audio [batch, samples >= {self.cfg.receptive_field}], got {source.shape}"
            )
        return np.concatenate([self.session.run(None, {self._input: row[None, None]})[0] for row in source])

    def features_windowed(
        self, source: np.ndarray, version: str = "v2", max_seconds: float = T_MAX_SECONDS
    ) -> np.ndarray:
        """features() over windows of at most max_seconds that tile the frame grid (HubertConfig.windows)."""
        spans = self.cfg.windows(np.shape(source)[-1], max_seconds)
        if len(spans) <= 1:
            return self.features(source, version)
        return np.concatenate([self.features(source[:, a:b], version) for a, b in spans], axis=1)


def load(
    path: str | os.PathLike, backend, config: HubertConfig | str = "full", version: str | None = None
) -> HubertModel:
    """An exported (or upstream ContentVec) .onnx on an OnnxBackend. `config` applies to upstream files only (ours
    carry theirs); `version`, when given, must be the one the graph computes (one graph per version: ONNX Runtime
    runs every node of a graph, whatever outputs are asked for, so a graph with both would run v2's layers for v1)."""
    model = HubertModel(path, backend, config)
    if version is not None and version != model.version:
        raise OnnxModelError(f"{path}: the graph computes {model.version} features, not {version}")
    return model
