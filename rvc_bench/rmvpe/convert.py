"""rmvpe.pt (a bare torch state dict; also the same keys in a .safetensors) -> checked numpy state -> torch twin,
MLX weights, or a converted .safetensors.

The stage's one entry point for files: `load_torch(path)` and `load_mlx(path)` give the RMVPE stage (audio -> f0)
on either framework, `convert_file(src, dst)` writes the MLX weights. Strict: the state dict must hold exactly the
keys and shapes of E2E(config) in torch (num_batches_tracked included, and consumed here by name), and the MLX
weights must load into the MLX twin with nothing missing or extra. Every error names the key. The model modules are
imported inside the loaders only, so importing this module imports no framework.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rvc_bench import converted, layout
from rvc_bench.checkpoints import load_pickled, load_safetensors, to_numpy_state
from rvc_bench.layout import CheckpointError
from rvc_bench.rmvpe.config import RMVPEConfig, infer_config

STAGE = "rmvpe"

# torch key pattern -> what happens to it. Every key of E2E matches exactly one rule (tested), so order is irrelevant.
_NAME_TABLE: list[tuple[re.Pattern, str]] = [
    (re.compile(r"\.num_batches_tracked$"), "drop"),  # BatchNorm training counter: consumed, not needed for eval
    (re.compile(r"^fc\.0\.gru\.(weight|bias)_(ih|hh)_l\d+(_reverse)?$"), "gru"),  # regrouped per direction below
    (re.compile(r"^unet\.decoder\.layers\.\d+\.conv1\.0\.weight$"), "conv_transpose2d"),
    (re.compile(r"(\.conv\.[03]|\.shortcut|^cnn)\.weight$"), "conv2d"),
    (
        re.compile(
            r"(\.conv\.[03]|\.shortcut|^cnn)\.bias$|"  # conv biases (shortcut, cnn)
            r"\.(bn|conv\.[14]|conv1\.1)\.(weight|bias|running_mean|running_var)$|"  # BatchNorm
            r"^fc\.1\.(weight|bias)$"
        ),
        "copy",
    ),  # Linear 2H -> 360: same layout in both frameworks
]
_LAYOUT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "conv2d": layout.conv2d,
    "conv_transpose2d": layout.conv_transpose2d,
    "copy": lambda w: w,
}
_GRU_KEY = re.compile(r"^fc\.0\.gru\.(weight|bias)_(ih|hh)_(l\d+(?:_reverse)?)$")


def expected_torch_shapes(cfg: RMVPEConfig) -> dict[str, tuple]:
    """Keys and shapes of E2E(cfg).state_dict(), without allocating weights (meta device)."""
    import torch

    from rvc_bench.rmvpe.model_torch import E2E

    with torch.device("meta"):
        model = E2E(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def rule_for(key: str) -> str:
    for pattern, rule in _NAME_TABLE:
        if pattern.search(key):
            return rule
    raise CheckpointError(f"no conversion rule for key {key!r}")


def recognise(obj: Any) -> bool:
    """Whether an unpickled object is an rmvpe.pt: a bare state dict with the U-Net's keys."""
    return isinstance(obj, Mapping) and any(str(k).startswith("unet.") for k in obj)


def read(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], RMVPEConfig]:
    """rmvpe.pt, or a .safetensors holding its keys -> (numpy state in torch layout, config read from its keys),
    checked against E2E(config).

    Read with the safe loaders: no pickled code runs.
    """
    if Path(path).suffix == ".safetensors":
        state, meta = load_safetensors(path)
        if "stage" in meta:  # our converted file: MLX layout
            raise CheckpointError(
                f"{path}: converted {meta['stage']!r} weights in MLX layout, not an rmvpe.pt state "
                "dict" + ("; only the MLX backend loads it" if meta["stage"] == STAGE else "")
            )
        state = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in state.items()}  # fp16 -> fp32
    else:
        state = load_pickled(path)
        if not isinstance(state, Mapping) or not all(hasattr(v, "shape") for v in state.values()):
            raise CheckpointError(f"{path}: expected a bare state dict of tensors (the rmvpe.pt format)")
        state = to_numpy_state(state, str(path))
    try:
        cfg = infer_config(state)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    layout.check_shapes(expected_torch_shapes(cfg), state, str(path))
    return state, cfg


def to_mlx(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Checked torch-layout state -> MLX weights: counters dropped, convs channels-last, the BiGRU regrouped."""
    out: dict[str, np.ndarray] = {}
    gru: dict[str, np.ndarray] = {}
    for key, value in state.items():
        rule = rule_for(key)
        if rule == "drop":
            continue
        if rule == "gru":
            gru[key] = value
            continue
        out[key] = _LAYOUT[rule](value.astype(np.float32, copy=False))
    out.update(gru_to_mlx(gru))
    return out


def gru_to_mlx(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """torch `fc.0.gru.{weight,bias}_{ih,hh}_l<k>[_reverse]` -> MLX `fc.0.gru.l<k>[_reverse].{Wx,Wh,b,bhn}`."""
    parts: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        match = _GRU_KEY.match(key)
        if match is None:
            raise CheckpointError(f"not a BiGRU key: {key!r}")
        kind, mat, direction = match.groups()
        parts.setdefault(direction, {})[f"{kind}_{mat}"] = np.asarray(value, dtype=np.float32)
    out = {}
    for direction, p in sorted(parts.items()):
        missing = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"} - set(p)
        if missing:
            raise CheckpointError(f"BiGRU {direction}: missing key 'fc.0.gru.{sorted(missing)[0]}_{direction}'")
        for name, value in layout.gru(p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]).items():
            out[f"fc.0.gru.{direction}.{name}"] = np.ascontiguousarray(value, dtype=np.float32)
    return out


def load_torch(path: str | os.PathLike, device: str = "cpu", **rmvpe_opts):
    """The torch RMVPE stage (model_torch.RMVPE around E2E, eval mode) on `device`; rmvpe_opts: chunk_frames,
    overlap_frames."""
    from rvc_bench.rmvpe import model_torch

    state, cfg = read(path)
    return model_torch.RMVPE(model_torch.load(state, cfg, str(path)).to(device), **rmvpe_opts)


def load_mlx(path: str | os.PathLike, **rmvpe_opts):
    """The MLX RMVPE stage (model_mlx.RMVPE around E2E) from a converted .safetensors, an rmvpe.pt, or its keys in a
    .safetensors."""
    from rvc_bench.rmvpe import model_mlx

    weights, cfg = converted.mlx_weights(path, STAGE, RMVPEConfig, read, to_mlx)
    return model_mlx.RMVPE(model_mlx.load(weights, cfg, str(path)), **rmvpe_opts)


def convert_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """`rvc-bench convert rmvpe.pt -o rmvpe.safetensors`: strict conversion, config stored in the metadata.

    The weights are strictly loaded into the MLX twin before anything is written, so a file that exists loads.
    """
    from rvc_bench.rmvpe import model_mlx

    state, cfg = read(src)
    weights = to_mlx(state)
    model_mlx.load(weights, cfg, str(src))
    return converted.write(dst, STAGE, weights, cfg.to_dict(), source=Path(src).name)
