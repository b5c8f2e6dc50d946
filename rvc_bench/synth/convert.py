"""Voice checkpoints (.pth) -> torch state / MLX weights: one name table, layout rules from rvc_bench.layout, strict.

A voice `.pth` (spec §6) is a dict: `weight` (net_g state dict without enc_q, usually fp16), `config` (the 18-entry
positional list), `sr`, `f0` (missing -> 1), `version` (missing -> "v1"), `info`, and from Applio possibly
`vocoder` and other metadata. Reading it:
1. load with the safe loader (never runs pickled code); refuse anything but the classic NSF HiFi-GAN decoder;
2. build the config; `config[-3]` (speakers) is taken from emb_g, as upstream does at load time;
3. drop enc_q.* (posterior encoder: training only, upstream loads with strict=False for it), widen to float32,
   fold weight norm (either key style; dim 0 everywhere in the synthesizer, which for ConvTranspose1d's
   [in, out, k] weight is the *input* channel);
4. check every key and shape against the torch twin (built on the meta device: no weights allocated).
The result (`VoiceCheckpoint.state`, torch layout) loads into the torch twin as is; `to_mlx` changes layouts for
the MLX twin. Errors name the key.

The stage's one entry point for files: `load_torch(path)`, `load_mlx(path)` (also a converted .safetensors) and
`convert_file(src, dst)`. The model modules are imported inside the loaders only, so importing this module imports
no framework.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rvc_bench import converted, layout
from rvc_bench.checkpoints import load_pickled, to_numpy_state
from rvc_bench.layout import CheckpointError
from rvc_bench.synth.config import SynthConfig

STAGE = "synth"
SUPPORTED_VOCODERS = ("HiFi-GAN",)  # Applio's name for the classic NSF HiFi-GAN; "MRF HiFi-GAN", "RefineGAN" differ
# Applio's name for the content encoder RVC trains on (hubert_base.pt); voices without `embedder_model` used it too.
# Others ("spin", "chinese-hubert-base", "custom" ...) need their own encoder at inference.
DEFAULT_EMBEDDER = "contentvec"

# Module name -> what its `.weight` is. Twins share names, so this table is the whole conversion: conv weights
# change layout, everything else (Linear, Embedding, biases, LayerNorm gamma/beta, relative embeddings) is copied.
# The third column says whether upstream wraps the module in weight norm (legal g/v pairs; folded with dim 0).
_C = r"(?:\d+)"
NAME_TABLE: tuple[tuple[str, str, bool], ...] = (
    (rf"enc_p\.encoder\.attn_layers\.{_C}\.conv_[qkvo]", "conv1d", False),
    (rf"enc_p\.encoder\.ffn_layers\.{_C}\.conv_[12]", "conv1d", False),
    (r"enc_p\.proj", "conv1d", False),
    (rf"flow\.flows\.{_C}\.(?:pre|post)", "conv1d", False),
    (rf"flow\.flows\.{_C}\.enc\.(?:cond_layer|in_layers\.{_C}|res_skip_layers\.{_C})", "conv1d", True),
    (r"dec\.(?:conv_pre|conv_post|cond)", "conv1d", False),
    (rf"dec\.noise_convs\.{_C}", "conv1d", False),
    (rf"dec\.resblocks\.{_C}\.convs[12]\.{_C}", "conv1d", True),
    (rf"dec\.ups\.{_C}", "conv_transpose1d", True),
)
_RULES = [(re.compile(pattern + r"$"), kind, wn) for pattern, kind, wn in NAME_TABLE]
_LAYOUT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "conv1d": layout.conv1d,
    "conv_transpose1d": layout.conv_transpose1d,
}
WEIGHT_NORM_DIM = 0


def recognise(obj: Any) -> bool:
    """Whether an unpickled object is a voice .pth: a dict with the net_g state dict and its config list."""
    return isinstance(obj, Mapping) and "weight" in obj and "config" in obj


def module_rule(module: str) -> tuple[str, bool] | None:
    """(layout kind, weight-normed upstream) for a module name, or None for plain copies."""
    for pattern, kind, wn in _RULES:
        if pattern.match(module):
            return kind, wn
    return None


def is_weight_normed(module: str) -> bool:
    rule = module_rule(module)
    return rule is not None and rule[1]


def _wn_dim(module: str) -> int:
    if not is_weight_normed(module):
        raise CheckpointError(f"weight-norm keys for {module!r}, which upstream does not weight-normalise")
    return WEIGHT_NORM_DIM


def expected_torch_shapes(cfg: SynthConfig) -> dict[str, tuple]:
    """Keys and shapes of the torch twin's state dict for cfg, without allocating weights (meta device)."""
    import torch

    from rvc_bench.synth.model_torch import Synthesizer

    with torch.device("meta"):
        model = Synthesizer(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@dataclass
class VoiceCheckpoint:
    config: SynthConfig
    state: dict[str, np.ndarray]  # torch layout, float32, weight norm folded, checked against the config
    meta: dict[str, Any] = field(default_factory=dict)  # sr, f0, version, info, vocoder ... (JSON-safe values)


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def read_voice_dict(ckpt: Any, what: str = "voice checkpoint") -> VoiceCheckpoint:
    """A loaded voice checkpoint dict -> VoiceCheckpoint (steps 1-4 above, after the file is unpickled)."""
    if not isinstance(ckpt, Mapping) or "weight" not in ckpt or "config" not in ckpt:
        found = sorted(map(str, ckpt)) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(f"{what}: not an RVC voice model (needs 'weight' and 'config'; found {found})")
    vocoder = ckpt.get("vocoder", "HiFi-GAN")
    if vocoder not in SUPPORTED_VOCODERS:
        raise CheckpointError(
            f"{what}: vocoder {vocoder!r} is not supported (only the classic NSF HiFi-GAN, "
            f"{', '.join(map(repr, SUPPORTED_VOCODERS))}, is implemented)"
        )
    weight = ckpt["weight"]
    if not isinstance(weight, Mapping) or not all(hasattr(v, "shape") for v in weight.values()):
        raise CheckpointError(f"{what}: 'weight' is not a state dict of tensors")
    if "emb_g.weight" not in weight:
        raise CheckpointError(f"{what}: missing key 'emb_g.weight'")
    version = ckpt.get("version", "v1")
    try:
        config = list(ckpt["config"])
        if len(config) >= 3:
            config[-3] = int(weight["emb_g.weight"].shape[0])  # speakers, as upstream overwrites it at load time
        f0 = int(ckpt.get("f0", 1))
        cfg = SynthConfig.from_list(config, version=version, f0=bool(f0))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{what}: bad 'config', 'f0' or 'version': {err}") from None
    state = to_numpy_state({k: v for k, v in weight.items() if not k.startswith("enc_q.")}, what)
    state = layout.fold_weight_norms(state, _wn_dim)
    layout.check_shapes(expected_torch_shapes(cfg), state, what)
    meta = {k: _plain(v) for k, v in ckpt.items() if k not in ("weight", "config")}
    meta.update(version=version, f0=f0, vocoder=vocoder)
    return VoiceCheckpoint(cfg, state, meta)


def read_voice(path: str | os.PathLike) -> VoiceCheckpoint:
    """Read a voice `.pth` safely and strictly (see the module docstring)."""
    return read_voice_dict(load_pickled(path), what=str(path))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """A voice's metadata (sr, f0, version, info; Applio's epoch, embedder_model, vocoder ...) as JSON-safe values,
    without building the model: from a .pth, or from the metadata of a converted .safetensors."""
    found = converted.read(path, STAGE)
    if found is not None:
        return found[1]
    ckpt = load_pickled(path)
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{path}: not an RVC voice model (a {type(ckpt).__name__}, not a dict)")
    return {k: _plain(v) for k, v in ckpt.items() if k not in ("weight", "config")}


def read(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], SynthConfig]:
    """A voice `.pth` -> (numpy state in torch layout, config), as read_voice without the metadata."""
    voice = read_voice(path)
    return voice.state, voice.config


def to_mlx(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Torch-layout (folded) state -> MLX weights: conv layouts changed, everything else copied."""
    out = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        rule = module_rule(module) if leaf == "weight" else None
        out[key] = _LAYOUT[rule[0]](value) if rule else np.ascontiguousarray(value, dtype=np.float32)
    return out


def load_torch(path: str | os.PathLike, device: str = "cpu", tile_frames: int | None = None):
    """The torch Synthesizer (eval) of a voice .pth, on `device`; tile_frames: the decoder's time tiles (tiling.py;
    None: one pass)."""
    from rvc_bench.synth import model_torch

    state, cfg = read(path)
    model = model_torch.load(state, cfg, str(path)).to(device)
    model.tile_frames = tile_frames
    return model


def load_mlx(path: str | os.PathLike, tile_frames: int | None | str = "auto"):
    """The MLX Synthesizer of a voice .pth or of a converted .safetensors (convert_file); tile_frames: the decoder's
    time tiles (tiling.py; None: one pass; "auto": the MLX default, tiles on the CPU device only)."""
    from rvc_bench.synth import model_mlx

    weights, cfg = converted.mlx_weights(path, STAGE, SynthConfig, read, to_mlx)
    model = model_mlx.load(weights, cfg, str(path))
    if tile_frames != "auto":
        model.tile_frames = tile_frames
    return model


def convert_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """`rvc-bench convert voice.pth -o voice.safetensors`: MLX weights plus the config in the metadata, with the
    voice's own metadata (sr, f0, version, info ...) beside it.

    The weights are strictly loaded into the MLX twin before anything is written, so a file that exists loads.
    """
    from rvc_bench.synth import model_mlx

    voice = read_voice(src)
    weights = to_mlx(voice.state)
    model_mlx.load(weights, voice.config, str(src))
    return converted.write(dst, STAGE, weights, voice.config.to_dict(), **{**voice.meta, "source": Path(src).name})
