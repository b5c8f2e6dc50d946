"""Seeded synthetic ContentVec / HuBERT checkpoints in the real file formats (no weights are downloaded).

`write_fairseq` writes what RVC ships as assets/hubert/hubert_base.pt: a torch.save'd dict with the state dict under
"model" (legacy weight_g/weight_v on the positional conv, plus the unused mask_emb and label_embs_concat), a plain
dict "cfg" and an argparse.Namespace "args" (loaded through an inert stand-in, see rvc_bench.checkpoints). `write_hf`
writes the same weights under Hugging Face Transformers names, `write_hf_folder` a whole folder as transformers'
save_pretrained writes it (config.json + model.safetensors or pytorch_model.bin). Values are random but scaled so
that every block carries signal.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from rvc_bench.checkpoints import save_torch_checkpoint
from rvc_bench.hubert.config import HF_FIELDS, HF_REQUIRED, HubertConfig, get_config
from rvc_bench.hubert.convert import KNOWN_UNUSED, POS_CONV, WN_SUFFIXES, source_shapes, to_hf_name

# The real hubert_base.pt stores fp16; tiny test files use the same dtype so CI exercises the widening to fp32.
DEFAULT_DTYPE = "float16"


def _conv_spec(cfg: HubertConfig) -> str:
    """fairseq's conv_feature_layers string, e.g. "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2"."""
    runs: list[list] = []
    for layer in cfg.conv_layers:
        if runs and runs[-1][0] == layer:
            runs[-1][1] += 1
        else:
            runs.append([layer, 1])
    return " + ".join(f"[{layer}]" + (f" * {n}" if n > 1 else "") for layer, n in runs)


def fairseq_cfg(cfg: HubertConfig) -> dict:
    """The model and task sections fairseq saves as cfg (field names are fairseq's)."""
    model = {
        "_name": "hubert",
        "extractor_mode": "default",
        "conv_feature_layers": _conv_spec(cfg),
        "conv_bias": False,
        "layer_norm_first": False,
        "activation_fn": "gelu",
        "logit_temp": 0.1,
        "encoder_layers": cfg.layers,
        "encoder_embed_dim": cfg.embed_dim,
        "encoder_ffn_embed_dim": cfg.ffn_dim,
        "encoder_attention_heads": cfg.heads,
        "conv_pos": cfg.pos_conv_kernel,
        "conv_pos_groups": cfg.pos_conv_groups,
        "final_dim": cfg.final_dim,
    }
    task = {"_name": "hubert_pretraining", "sample_rate": 16000, "normalize": False, "labels": ["km"]}
    return {"model": model, "task": task}


def fairseq_state(cfg: HubertConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random fp32 weights under fairseq names, in the order and shapes of the real file."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in source_shapes(cfg, "fairseq", "legacy", KNOWN_UNUSED["fairseq"]).items():
        if key.endswith("weight_g"):
            w = np.abs(2.0 + 0.3 * rng.standard_normal(shape))  # per-tap norm; positional term std ~ 0.8
        elif key.endswith("weight_v"):
            w = rng.standard_normal(shape)
        elif key.endswith(".bias") or key == "mask_emb":
            w = 0.05 * rng.standard_normal(shape)
        elif len(shape) == 1:  # GroupNorm / LayerNorm gains
            w = 1.0 + 0.1 * rng.standard_normal(shape)
        else:  # conv and linear weights: fan-in scaling (x2 variance for the GELU convs) keeps activations O(1)
            fan_in = int(np.prod(shape[1:]))
            gain = 2.0 if key.startswith("feature_extractor") else 1.0
            w = rng.standard_normal(shape) * np.sqrt(gain / fan_in)
        out[key] = w.astype(np.float32)
    return out


def _torch_dict(state: dict[str, np.ndarray], dtype: str) -> dict:
    import torch

    return {k: torch.from_numpy(v.astype(dtype)) for k, v in state.items()}


def write_fairseq(
    path: str | os.PathLike, cfg: str | HubertConfig = "full", seed: int = 0, dtype: str = DEFAULT_DTYPE
) -> Path:
    cfg = get_config(cfg)
    sections = fairseq_cfg(cfg)
    ckpt = {
        "model": _torch_dict(fairseq_state(cfg, seed), dtype),
        "cfg": sections,
        "args": argparse.Namespace(arch="hubert", **sections["model"]),  # pre-2021 fairseq files carry this
        "optimizer_history": [],
        "extra_state": {},
        "last_optimizer_state": None,
    }
    save_torch_checkpoint(path, ckpt)
    return Path(path)


def hf_state(state: dict[str, np.ndarray], wn_style: str = "parametrizations") -> dict[str, np.ndarray]:
    """The same weights under HF Transformers names (label_embs_concat has no HF counterpart and is dropped).

    wn_style: "parametrizations" (torch >= 2.1 weight norm, what current transformers writes) or "legacy".
    """
    out, suffix = {}, WN_SUFFIXES[wn_style]
    for key, value in state.items():
        if key == "label_embs_concat":
            continue
        if key.startswith(POS_CONV + ".weight_"):
            key = POS_CONV + suffix[0 if key.endswith("_g") else 1]
        out[to_hf_name(key)] = value
    return out


def write_hf(
    path: str | os.PathLike,
    cfg: str | HubertConfig = "full",
    seed: int = 0,
    dtype: str = DEFAULT_DTYPE,
    wn_style: str = "parametrizations",
) -> Path:
    """HF-layout state dict: `.safetensors` (as transformers saves) or a torch.save'd dict (pytorch_model.bin)."""
    path = Path(path)
    state = hf_state(fairseq_state(get_config(cfg), seed), wn_style)
    if path.suffix == ".safetensors":
        from safetensors.numpy import save

        from rvc_bench.fileio import atomic_write_bytes

        atomic_write_bytes(path, save({k: v.astype(dtype) for k, v in state.items()}, metadata={"format": "pt"}))
    else:
        save_torch_checkpoint(path, _torch_dict(state, dtype))
    return path


def hf_config(cfg: HubertConfig, dtype: str = DEFAULT_DTYPE) -> dict:
    """config.json of a ContentVec saved by transformers' save_pretrained (HubertModel plus RVC's final_proj):
    every field of its HubertConfig, including the training-only ones a loader must ignore."""
    out = {
        "architectures": ["HubertModelWithFinalProj"],
        **HF_REQUIRED,
        **{hf: getattr(cfg, ours) for hf, ours in HF_FIELDS.items()},
        "conv_dim": [c for c, _, _ in cfg.conv_layers],
        "conv_kernel": [k for _, k, _ in cfg.conv_layers],
        "conv_stride": [s for _, _, s in cfg.conv_layers],
        "num_feat_extract_layers": len(cfg.conv_layers),
        "activation_dropout": 0.1,
        "apply_spec_augment": True,
        "attention_dropout": 0.1,
        "bos_token_id": 1,
        "ctc_loss_reduction": "sum",
        "ctc_zero_infinity": False,
        "eos_token_id": 2,
        "feat_proj_dropout": 0.0,
        "final_dropout": 0.1,
        "hidden_dropout": 0.1,
        "initializer_range": 0.02,
        "layerdrop": 0.1,
        "mask_feature_length": 10,
        "mask_feature_min_masks": 0,
        "mask_feature_prob": 0.0,
        "mask_time_length": 10,
        "mask_time_min_masks": 2,
        "mask_time_prob": 0.05,
        "pad_token_id": 0,
        "torch_dtype": dtype,
        "transformers_version": "4.46.3",
        "use_weighted_layer_sum": False,
        "vocab_size": 32,
    }
    return dict(sorted(out.items()))  # transformers writes its keys sorted


def write_hf_folder(folder: str | os.PathLike, cfg: str | HubertConfig = "full", weights="model.safetensors", **kw):
    """A folder as save_pretrained writes it: config.json plus `weights` ("model.safetensors", the default since
    transformers 4.35, or "pytorch_model.bin"), written by write_hf(cfg, **kw) (seed, dtype, wn_style)."""
    from rvc_bench.fileio import atomic_write_bytes

    folder, cfg = Path(folder), get_config(cfg)
    if weights not in ("model.safetensors", "pytorch_model.bin"):
        raise ValueError(f"weights must be model.safetensors or pytorch_model.bin, got {weights!r}")
    write_hf(folder / weights, cfg, **kw)
    config = hf_config(cfg, kw.get("dtype", DEFAULT_DTYPE))
    atomic_write_bytes(folder / "config.json", (json.dumps(config, indent=2) + "\n").encode())
    return folder


def ensure_checkpoint(
    cache_dir: str | os.PathLike, size: str = "tiny", seed: int = 0, dtype: str = DEFAULT_DTYPE, layout: str = "fairseq"
) -> Path:
    """The cached synthetic checkpoint for (size, seed, dtype, layout), generated on first use.

    layout: "fairseq" (hubert_base.pt form) or "hf" (HF names, safetensors).
    """
    get_config(size)  # fail early on an unknown size
    name = f"hubert-{size}-seed{seed}-{dtype}" + (".pt" if layout == "fairseq" else "-hf.safetensors")
    path = Path(cache_dir) / "checkpoints" / name
    if not path.is_file():
        if layout == "fairseq":
            write_fairseq(path, size, seed, dtype)
        elif layout == "hf":
            write_hf(path, size, seed, dtype)
        else:
            raise ValueError(f"unknown layout {layout!r}: 'fairseq' or 'hf'")
    return path
