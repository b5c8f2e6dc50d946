"""Our converted weights file (`rvc-bench convert`): MLX-layout weights in a .safetensors whose metadata names the
stage and holds its config, so it loads into the MLX twin without the upstream file, without torch, and strictly."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rvc_bench.checkpoints import config_from_metadata, load_safetensors, save_safetensors
from rvc_bench.layout import CheckpointError


def write(dst: str | os.PathLike, stage: str, weights: Mapping[str, np.ndarray], config: dict, **meta: Any) -> Path:
    """Write atomically; `meta` (JSON values: source file name, voice sample rate ...) is kept beside the config."""
    dst = Path(dst)
    save_safetensors(dst, weights, {**meta, "stage": stage, "config": config})
    return dst


def read(path: str | os.PathLike, stage: str) -> tuple[dict[str, np.ndarray], dict] | None:
    """(MLX weights, metadata) of a converted `stage` file; None for any other file (an upstream checkpoint, or a
    .safetensors written by another tool, which the stage's own reader handles). A file converted for another
    stage is an error."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return None
    weights, meta = load_safetensors(path)
    if "stage" not in meta:
        return None
    if meta["stage"] != stage or "config" not in meta:
        raise CheckpointError(f"{path}: converted {meta['stage']!r} weights, not a {stage!r} model")
    return weights, meta


def mlx_weights(
    path: str | os.PathLike,
    stage: str,
    config_type: type,
    read_upstream: Callable[[Path], tuple[dict, Any]],
    to_mlx: Callable[[dict], dict],
) -> tuple[dict, Any]:
    """(MLX weights, config) for a stage's load_mlx: from a converted file (config from its metadata), or from an
    upstream file read by the stage's `read_upstream(path) -> (state, config)` and laid out by its `to_mlx`."""
    found = read(path, stage)
    if found is not None:
        return found[0], config_from_metadata(config_type.from_dict, found[1], path)
    state, cfg = read_upstream(Path(path))
    return to_mlx(state), cfg
