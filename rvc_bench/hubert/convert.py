"""Checkpoint reading and conversion for ContentVec / HuBERT-base: one name table, strict shapes, layout rules.

Two source layouts are accepted (spec §2): fairseq's `hubert_base.pt` (a dict with "model" plus config objects) and
Hugging Face Transformers' `HubertModel` names (optionally under a `hubert.` prefix) with RVC's `final_proj`, as a
state-dict file or as the folder save_pretrained writes (config.json + model.safetensors or pytorch_model.bin). Both
are read into one canonical state: fairseq names, float32, the positional conv's weight norm folded. The torch twin
loads that state as it is; the MLX twin gets the same names with channels-last conv weights.

The stage's one entry point for files: `load_torch(path, config=...)`, `load_mlx(path, config=...)` and
`convert_file(src, dst, config=...)`; `config` names the preset (shapes do not show the heads or the strides). The
model modules are imported inside the loaders only, so importing this module imports no framework.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rvc_bench import converted, layout
from rvc_bench.checkpoints import load_pickled, load_safetensors, to_numpy_state
from rvc_bench.hubert.config import FAIRSEQ_FIELDS, HF_FIELDS, HF_REQUIRED, HubertConfig, get_config
from rvc_bench.layout import CheckpointError

STAGE = "hubert"

# fairseq (canonical) key prefix <-> HF Transformers key prefix; "{i}" is a layer index. Keys are matched from their
# start, so `layer_norm.` means only the top-level LayerNorm, never `encoder.layer_norm.`.
NAME_TABLE = (
    ("feature_extractor.conv_layers.{i}.0.", "feature_extractor.conv_layers.{i}.conv."),
    ("feature_extractor.conv_layers.0.2.", "feature_extractor.conv_layers.0.layer_norm."),  # GroupNorm
    ("layer_norm.", "feature_projection.layer_norm."),
    ("post_extract_proj.", "feature_projection.projection."),
    ("encoder.pos_conv.0.", "encoder.pos_conv_embed.conv."),
    ("encoder.layer_norm.", "encoder.layer_norm."),
    ("encoder.layers.{i}.self_attn.", "encoder.layers.{i}.attention."),
    ("encoder.layers.{i}.self_attn_layer_norm.", "encoder.layers.{i}.layer_norm."),
    ("encoder.layers.{i}.fc1.", "encoder.layers.{i}.feed_forward.intermediate_dense."),
    ("encoder.layers.{i}.fc2.", "encoder.layers.{i}.feed_forward.output_dense."),
    ("encoder.layers.{i}.final_layer_norm.", "encoder.layers.{i}.final_layer_norm."),
    ("final_proj.", "final_proj."),
    ("mask_emb", "masked_spec_embed"),
)
# Present in real checkpoints, never used at inference: consumed (and shape-checked) explicitly.
KNOWN_UNUSED = {"fairseq": ("mask_emb", "label_embs_concat"), "hf": ("masked_spec_embed",)}
# The key that tells the layouts apart.
_MARKERS = {"fairseq": "post_extract_proj.weight", "hf": "feature_projection.projection.weight"}
_HF_PREFIX = "hubert."
POS_CONV = "encoder.pos_conv.0"  # the only weight-normed module (norm over dim 2: one g per kernel tap)
WN_SUFFIXES = layout.WEIGHT_NORM_STYLES
# Architecture flags a fairseq cfg may state that shapes cannot reveal: anything else is a different model.
_FAIRSEQ_REQUIRED = {"layer_norm_first": False, "extractor_mode": "default", "activation_fn": "gelu"}


def _compile(prefix: str) -> re.Pattern:
    return re.compile(re.escape(prefix).replace(re.escape("{i}"), r"(\d+)"))


_TO_HF = [(_compile(f), h) for f, h in NAME_TABLE]
_FROM_HF = [(_compile(h), f) for f, h in NAME_TABLE]


def _rename(key: str, table) -> str | None:
    for pattern, target in table:
        m = pattern.match(key)
        if m:
            head = target.replace("{i}", m.group(1)) if m.groups() else target
            return head + key[m.end() :]
    return None


def to_hf_name(key: str) -> str:
    """Canonical (fairseq) key -> HF Transformers key."""
    name = _rename(key, _TO_HF)
    if name is None:
        raise KeyError(key)
    return name


def from_hf_name(key: str) -> str:
    name = _rename(key, _FROM_HF)
    if name is None:
        raise KeyError(key)
    return name


# ---------------------------------------------------------------------------------------------------------------
# Shapes


def torch_shapes(cfg: HubertConfig) -> dict[str, tuple[int, ...]]:
    """Canonical state: fairseq names, torch layouts, pos_conv folded to one `weight`, no unused keys."""
    d, shapes, in_ch = cfg.embed_dim, {}, 1
    for i, (ch, k, _) in enumerate(cfg.conv_layers):
        shapes[f"feature_extractor.conv_layers.{i}.0.weight"] = (ch, in_ch, k)  # bias-free convs
        in_ch = ch
    shapes["feature_extractor.conv_layers.0.2.weight"] = (cfg.conv_layers[0][0],)
    shapes["feature_extractor.conv_layers.0.2.bias"] = (cfg.conv_layers[0][0],)
    shapes["layer_norm.weight"] = shapes["layer_norm.bias"] = (cfg.conv_dim,)
    shapes["post_extract_proj.weight"], shapes["post_extract_proj.bias"] = (d, cfg.conv_dim), (d,)
    shapes[f"{POS_CONV}.weight"] = (d, d // cfg.pos_conv_groups, cfg.pos_conv_kernel)
    shapes[f"{POS_CONV}.bias"] = (d,)
    shapes["encoder.layer_norm.weight"] = shapes["encoder.layer_norm.bias"] = (d,)
    for i in range(cfg.layers):
        p = f"encoder.layers.{i}."
        for proj in ("q", "k", "v", "out"):
            shapes[f"{p}self_attn.{proj}_proj.weight"], shapes[f"{p}self_attn.{proj}_proj.bias"] = (d, d), (d,)
        shapes[f"{p}self_attn_layer_norm.weight"] = shapes[f"{p}self_attn_layer_norm.bias"] = (d,)
        shapes[f"{p}fc1.weight"], shapes[f"{p}fc1.bias"] = (cfg.ffn_dim, d), (cfg.ffn_dim,)
        shapes[f"{p}fc2.weight"], shapes[f"{p}fc2.bias"] = (d, cfg.ffn_dim), (d,)
        shapes[f"{p}final_layer_norm.weight"] = shapes[f"{p}final_layer_norm.bias"] = (d,)
    shapes["final_proj.weight"], shapes["final_proj.bias"] = (cfg.final_dim, d), (cfg.final_dim,)
    return shapes


def source_shapes(cfg: HubertConfig, layout_name: str, wn_style: str | None, unused: tuple[str, ...] = ()) -> dict:
    """Shapes a checkpoint in `layout_name` must have, in its own key names.

    wn_style: "legacy" / "parametrizations" (pos_conv stored as g and v) or None (stored folded). `unused`: the
    known-unused keys this file holds (each is shape-checked).
    """
    shapes = torch_shapes(cfg)
    if wn_style is not None:
        g, v = WN_SUFFIXES[wn_style]
        shapes[POS_CONV + g] = (1, 1, cfg.pos_conv_kernel)
        shapes[POS_CONV + v] = shapes.pop(f"{POS_CONV}.weight")
    unused_shapes = {"mask_emb": (cfg.embed_dim,), "label_embs_concat": (cfg.num_label_embs, cfg.final_dim)}
    for key in unused:
        canonical = from_hf_name(key) if layout_name == "hf" else key
        shapes[canonical] = unused_shapes[canonical]
    if layout_name == "hf":
        shapes = {to_hf_name(k): s for k, s in shapes.items()}
    return shapes


# ---------------------------------------------------------------------------------------------------------------
# Reading


def recognise(obj: Any) -> bool:
    """Whether an unpickled object is a HuBERT checkpoint: fairseq (state under "model") or HF names."""
    state = obj.get("model", obj) if isinstance(obj, Mapping) else None
    return isinstance(state, Mapping) and any("pos_conv" in str(k) for k in state)


def detect_layout(state: Mapping[str, Any], what: str = "hubert checkpoint") -> str:
    for name, marker in _MARKERS.items():
        if marker in state:
            return name
    raise CheckpointError(
        f"{what}: not a HuBERT/ContentVec state dict: no key {_MARKERS['fairseq']!r} (fairseq) "
        f"or {_MARKERS['hf']!r} (HF)"
    )


def canonical_state(
    raw: Mapping[str, Any], cfg: HubertConfig, what: str = "hubert checkpoint"
) -> dict[str, np.ndarray]:
    """A fairseq or HF state dict (torch tensors or numpy) -> the canonical state.

    Strict: every key consumed, every shape checked, errors name the key as the file spells it.
    """
    if any(k.startswith(_HF_PREFIX) for k in raw):  # HubertFor* wrappers keep the encoder under `hubert.`
        raw = {k[len(_HF_PREFIX) :] if k.startswith(_HF_PREFIX) else k: v for k, v in raw.items()}
    src = detect_layout(raw, what)
    name = (lambda k: k) if src == "fairseq" else to_hf_name
    wn_style = next((s for s, pair in WN_SUFFIXES.items() if any(name(POS_CONV + x) in raw for x in pair)), None)
    unused = tuple(k for k in KNOWN_UNUSED[src] if k in raw)
    bad = next((k for k, v in raw.items() if not hasattr(v, "shape")), None)
    if bad is not None:
        raise CheckpointError(f"{what}: key {bad!r} holds a {type(raw[bad]).__name__}, not a tensor")
    layout.check_shapes(source_shapes(cfg, src, wn_style, unused), raw, f"{what} ({src} layout)")

    arrays = {k: v for k, v in raw.items() if k not in unused}
    if not all(isinstance(v, np.ndarray) for v in arrays.values()):
        arrays = to_numpy_state(arrays, what)  # torch tensors (fp16 in the real file) -> numpy fp32
    state = {(k if src == "fairseq" else from_hf_name(k)): v.astype(np.float32, copy=False) for k, v in arrays.items()}
    return layout.fold_weight_norms(state, lambda module: 2)  # check_shapes allowed g/v on POS_CONV only


def to_mlx(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Canonical state -> MLX weights: same names; the 3-D (conv) weights become channels-last."""
    return {k: layout.conv1d(v) if v.ndim == 3 else v for k, v in state.items()}


def _fairseq_model_cfg(ckpt: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The model section of a fairseq checkpoint's configuration, where it is readable as plain data."""
    cfg = ckpt.get("cfg")
    if isinstance(cfg, Mapping) and isinstance(cfg.get("model"), Mapping):
        return cfg["model"]
    args = ckpt.get("args")  # an argparse.Namespace, loaded as a plain dict of its attributes
    return args if isinstance(args, Mapping) else None


def check_fairseq_cfg(model_cfg: Mapping[str, Any], cfg: HubertConfig, what: str) -> None:
    """Cross-check what a fairseq cfg states against the config we build: shapes cannot show heads or norm order."""
    for name, ours in FAIRSEQ_FIELDS.items():
        if name in model_cfg and model_cfg[name] != getattr(cfg, ours):
            raise CheckpointError(f"{what}: cfg.model.{name} = {model_cfg[name]!r}, expected {getattr(cfg, ours)!r}")
    for name, required in _FAIRSEQ_REQUIRED.items():
        value = model_cfg.get(name, required)
        if isinstance(value, (bool, str)) and value != required:
            raise CheckpointError(f"{what}: cfg.model.{name} = {value!r}; only {required!r} is supported")


# The weights file of a save_pretrained folder, in the order transformers prefers them (safetensors by default since
# transformers 4.35).
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def check_hf_config(hf: Mapping[str, Any], cfg: HubertConfig, what: str) -> None:
    """Cross-check a Hugging Face config.json against the config we build, as check_fairseq_cfg does for fairseq:
    the sizes must be the preset's, the architecture flags ContentVec's."""
    for name, required in HF_REQUIRED.items():
        if hf.get(name, required) != required:
            raise CheckpointError(f"{what}: {name} = {hf[name]!r}; only {required!r} is supported")
    for name, ours in HF_FIELDS.items():
        if name in hf and hf[name] != getattr(cfg, ours):
            raise CheckpointError(f"{what}: {name} = {hf[name]!r}, expected {getattr(cfg, ours)!r}")
    for i, name in enumerate(("conv_dim", "conv_kernel", "conv_stride")):
        expected = [layer[i] for layer in cfg.conv_layers]
        if name in hf and hf[name] != expected:
            raise CheckpointError(f"{what}: {name} = {hf[name]!r}, expected {expected!r}")


def read_folder(folder: Path, cfg: HubertConfig) -> dict[str, np.ndarray]:
    """A save_pretrained folder (config.json + model.safetensors or pytorch_model.bin) -> the canonical state."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{folder}: a folder without config.json, not a Hugging Face model folder")
    try:
        hf = json.loads(config_file.read_bytes())
    except (OSError, ValueError) as err:  # ValueError: bad JSON or bad UTF-8
        raise CheckpointError(f"{config_file}: not a readable JSON file ({type(err).__name__}: {err})") from None
    if not isinstance(hf, dict):
        raise CheckpointError(f"{config_file}: expected a JSON object, found {type(hf).__name__}")
    check_hf_config(hf, cfg, str(config_file))
    weights = next((folder / name for name in HF_WEIGHTS if (folder / name).is_file()), None)
    if weights is None:
        sharded = any(folder.glob("*.index.json"))
        raise CheckpointError(
            f"{folder}: no {' or '.join(HF_WEIGHTS)}" + (" (sharded weights are not supported)" if sharded else "")
        )
    raw = load_safetensors(weights)[0] if weights.suffix == ".safetensors" else load_pickled(weights)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{weights}: expected a state dict, found {type(raw).__name__}")
    return canonical_state(raw, cfg, str(weights))


def read(path: str | os.PathLike, config: str | HubertConfig = "full") -> tuple[dict[str, np.ndarray], HubertConfig]:
    """Any supported source -> (canonical torch-layout state, config).

    A folder is read as save_pretrained writes it (read_folder). `.safetensors` written by convert_file carry their
    own config and MLX layouts (load_mlx reads those); other `.safetensors` are read as torch-layout state dicts (HF
    `model.safetensors`). Everything else goes through the safe pickle loader.
    """
    path, cfg = Path(path), get_config(config)
    what = str(path)
    if path.is_dir():
        return read_folder(path, cfg), cfg
    if path.suffix == ".safetensors":
        weights, meta = load_safetensors(path)
        if meta.get("stage") == STAGE:
            raise CheckpointError(f"{path}: already converted to MLX layout; load it with load_mlx")
        return canonical_state(weights, cfg, what), cfg
    obj = load_pickled(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict, found {type(obj).__name__}")
    if "model" in obj and isinstance(obj["model"], Mapping):  # fairseq: weights under "model", config beside them
        model_cfg = _fairseq_model_cfg(obj)
        if model_cfg is not None:
            check_fairseq_cfg(model_cfg, cfg, what)
        obj = obj["model"]
    return canonical_state(obj, cfg, what), cfg


def load_torch(path: str | os.PathLike, device: str = "cpu", config: str | HubertConfig = "full"):
    """fairseq `hubert_base.pt`, an HF-layout checkpoint or an HF folder -> torch HubertModel (fp32, eval) on
    `device`."""
    from rvc_bench.hubert import model_torch

    state, cfg = read(path, config)
    return model_torch.load(state, cfg, str(path)).to(device)


def load_mlx(path: str | os.PathLike, config: str | HubertConfig = "full"):
    """A converted `.safetensors` (config from its metadata), or a fairseq / HF checkpoint or HF folder converted in
    memory."""
    from rvc_bench.hubert import model_mlx

    weights, cfg = converted.mlx_weights(path, STAGE, HubertConfig, lambda p: read(p, config), to_mlx)
    return model_mlx.load(weights, cfg, str(path))


def convert_file(src: str | os.PathLike, dst: str | os.PathLike, config: str | HubertConfig = "full") -> Path:
    """`rvc-bench convert hubert_base.pt -o hubert.safetensors` (or an HF folder): MLX weights + config, written
    atomically.

    The weights are strictly loaded into the MLX twin before anything is written, so a file that exists loads.
    """
    from rvc_bench.hubert import model_mlx

    state, cfg = read(src, config)
    weights = to_mlx(state)
    model_mlx.load(weights, cfg, str(src))
    return converted.write(dst, STAGE, weights, cfg.to_dict(), source=Path(src).name)
