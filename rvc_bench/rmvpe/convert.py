"""rmvpe.pt (torch state dict) -> MLX weights: one name table, layout rules from rvc_bench.layout, strict.

Strict means: the state dict must hold exactly the keys and shapes of E2E(config) in torch (num_batches_tracked
included, and consumed here by name), and the result must load into the MLX twin with nothing missing or extra.
Every error names the key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from rvc_bench import layout
from rvc_bench.checkpoints import load_pickled, save_safetensors, to_numpy_state
from rvc_bench.layout import CheckpointError
from rvc_bench.rmvpe.config import RMVPEConfig, infer_config

# torch key pattern -> what happens to it. Every key of E2E matches exactly one rule (tested), so order is irrelevant.
_NAME_TABLE: list[tuple[re.Pattern, str]] = [
    (re.compile(r"\.num_batches_tracked$"), "drop"),  # BatchNorm training counter: consumed, not needed for eval
    (re.compile(r"^fc\.0\.gru\.(weight|bias)_(ih|hh)_l\d+(_reverse)?$"), "gru"),  # regrouped per direction below
    (re.compile(r"^unet\.decoder\.layers\.\d+\.conv1\.0\.weight$"), "conv_transpose2d"),
    (re.compile(r"(\.conv\.[03]|\.shortcut|^cnn)\.weight$"), "conv2d"),
    (re.compile(r"(\.conv\.[03]|\.shortcut|^cnn)\.bias$|"  # conv biases (shortcut, cnn)
                r"\.(bn|conv\.[14]|conv1\.1)\.(weight|bias|running_mean|running_var)$|"  # BatchNorm
                r"^fc\.1\.(weight|bias)$"), "copy"),  # Linear 2H -> 360: same layout in both frameworks
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


def state_to_mlx(state: Mapping[str, np.ndarray], cfg: RMVPEConfig | None = None,
                 what: str = "RMVPE state dict") -> tuple[dict[str, np.ndarray], RMVPEConfig]:
    """Numpy torch state dict -> (MLX weights, config). Checks every key and shape against E2E(cfg) first."""
    state = {k: np.asarray(v) for k, v in state.items()}
    cfg = cfg or infer_config(state)
    layout.check_shapes(expected_torch_shapes(cfg), state, what)
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
    out.update(state_to_mlx_gru(gru))
    return out, cfg


def state_to_mlx_gru(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
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


def convert_checkpoint(src_pt: str | os.PathLike, cfg: RMVPEConfig | None = None) -> tuple[dict[str, np.ndarray], RMVPEConfig]:
    """rmvpe.pt -> (MLX weights, config), read with the safe loader (no arbitrary pickled code runs)."""
    state = load_pickled(src_pt)
    if not isinstance(state, Mapping) or not all(hasattr(v, "shape") for v in state.values()):
        raise CheckpointError(f"{src_pt}: expected a bare state dict of tensors (the rmvpe.pt format)")
    return state_to_mlx(to_numpy_state(state, str(src_pt)), cfg, what=str(src_pt))


def convert_file(src_pt: str | os.PathLike, dst_safetensors: str | os.PathLike, cfg: RMVPEConfig | None = None) -> Path:
    """`rvc-bench convert rmvpe.pt -o rmvpe.safetensors`: strict conversion, config stored in the metadata.

    The weights are strictly loaded into the MLX twin before anything is written, so a file that exists loads.
    """
    from rvc_bench.rmvpe.model_mlx import load

    weights, cfg = convert_checkpoint(src_pt, cfg)
    load(weights, cfg)
    dst = Path(dst_safetensors)
    save_safetensors(dst, weights, {"stage": "rmvpe", "config": cfg.to_dict(), "source": Path(src_pt).name})
    return dst
