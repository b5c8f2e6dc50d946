"""ContentVec / HuBERT checkpoints: the HF layout (file and folder) gives the features of the same weights in
fairseq layout, its errors name the file and field, conversion writes MLX weights with their config; loading is
strict (the key named as spelled, known unused keys optional, the fairseq cfg cross-checked) and safe (pickled code
refused); the synthetic checkpoint is the real format."""

from __future__ import annotations

import os

import mlx.core as mx
import numpy as np
import pytest
import torch
from hubert_twins import audio

from rvc_bench.checkpoints import load_pickled, load_safetensors, save_safetensors, save_torch_checkpoint
from rvc_bench.hubert import HubertConfig, convert, get_config, synthetic
from rvc_bench.layout import CheckpointError

# ---------------------------------------------------------------------------------------------------------------
# Checkpoint layouts and conversion


@pytest.mark.parametrize("suffix,wn_style", [(".bin", "parametrizations"), (".safetensors", "legacy")])
def test_hf_layout_gives_identical_outputs(tiny_ckpt, tiny_models, tmp_path, suffix, wn_style):
    hf_path = synthetic.write_hf(tmp_path / f"hubert_hf{suffix}", "tiny", seed=0, wn_style=wn_style)
    fs_state, _ = convert.read(tiny_ckpt, "tiny")
    hf_state, _ = convert.read(hf_path, "tiny")
    assert hf_state.keys() == fs_state.keys()
    assert all(np.array_equal(hf_state[k], fs_state[k]) for k in fs_state)
    x = audio(1.5)
    tm, mm = tiny_models
    tm_hf, mm_hf = convert.load_torch(hf_path, config="tiny"), convert.load_mlx(hf_path, config="tiny")
    for version in ("v1", "v2"):
        assert torch.equal(tm_hf.features(torch.from_numpy(x), version), tm.features(torch.from_numpy(x), version))
        assert np.array_equal(
            np.array(mm_hf.features(mx.array(x), version)), np.array(mm.features(mx.array(x), version))
        )


@pytest.mark.parametrize(
    "weights,wn_style", [("model.safetensors", "parametrizations"), ("pytorch_model.bin", "legacy")]
)
def test_hf_folder_gives_the_features_of_the_same_weights_in_fairseq_layout(
    tiny_ckpt, tiny_models, tmp_path, weights, wn_style
):
    """A folder as transformers' save_pretrained writes it (config.json + weights), on both backends and through
    `convert`: the features are exactly those of the fairseq file holding the same weights."""
    import json

    folder = synthetic.write_hf_folder(tmp_path / "contentvec", "tiny", seed=0, weights=weights, wn_style=wn_style)
    assert sorted(p.name for p in folder.iterdir()) == sorted(["config.json", weights])
    assert json.loads((folder / "config.json").read_text())["model_type"] == "hubert"
    x = audio(1.5)
    tm, mm = tiny_models
    tm_hf, mm_hf = convert.load_torch(folder, config="tiny"), convert.load_mlx(folder, config="tiny")
    mm_conv = convert.load_mlx(convert.convert_file(folder, tmp_path / "cv.safetensors", config="tiny"))
    for version in ("v1", "v2"):
        ref = tm.features(torch.from_numpy(x), version)
        assert torch.equal(tm_hf.features(torch.from_numpy(x), version), ref)
        ref_mlx = np.array(mm.features(mx.array(x), version))
        assert np.array_equal(np.array(mm_hf.features(mx.array(x), version)), ref_mlx)
        assert np.array_equal(np.array(mm_conv.features(mx.array(x), version)), ref_mlx)


def _folder_with(tmp_path, name, edit):
    folder = synthetic.write_hf_folder(tmp_path / name, "tiny", seed=0)
    edit(folder)
    return folder


def _edit_config(**changes):
    def edit(folder):
        import json

        cfg = json.loads((folder / "config.json").read_text())
        cfg.update(changes)
        (folder / "config.json").write_text(json.dumps(cfg))

    return edit


@pytest.mark.parametrize(
    "edit,match",
    [
        (_edit_config(hidden_size=1024), r"config.json: hidden_size = 1024, expected 64"),
        (_edit_config(num_attention_heads=8), r"num_attention_heads = 8, expected 4"),  # shapes cannot show heads
        (_edit_config(conv_stride=[5, 2, 2, 2, 2, 2, 1]), r"conv_stride = \[5, 2, 2, 2, 2, 2, 1\], expected"),
        (_edit_config(do_stable_layer_norm=True), r"do_stable_layer_norm = True; only False is supported"),
        (_edit_config(feat_extract_norm="layer"), r"feat_extract_norm = 'layer'; only 'group' is supported"),
        (_edit_config(model_type="wav2vec2"), r"model_type = 'wav2vec2'; only 'hubert' is supported"),
        (lambda f: (f / "config.json").unlink(), r"contentvec: a folder without config.json"),
        (lambda f: (f / "config.json").write_text("{not json"), r"config.json: not a readable JSON file"),
        (lambda f: (f / "config.json").write_text("[1, 2]"), r"config.json: expected a JSON object, found list"),
        (lambda f: (f / "model.safetensors").unlink(), r"contentvec: no model.safetensors or pytorch_model.bin$"),
        (
            lambda f: [
                (f / "model.safetensors").rename(f / "model-00001-of-00002.safetensors"),
                (f / "model.safetensors.index.json").write_text("{}"),
            ],
            r"sharded weights are not supported",
        ),
        (
            lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 16),
            r"model.safetensors: not a readable safetensors",
        ),
    ],
)
def test_hf_folder_errors_name_the_file_and_field(tmp_path, edit, match):
    folder = _folder_with(tmp_path, "contentvec", edit)
    with pytest.raises(CheckpointError, match=match):
        convert.read(folder, "tiny")


def test_hf_folder_weights_are_checked_strictly(tmp_path):
    """The folder's weights go through the same strict check as a file: a missing key is named as HF spells it."""
    from safetensors.numpy import load_file, save_file

    def drop_key(folder):
        weights = load_file(folder / "model.safetensors")
        del weights["encoder.layers.1.feed_forward.output_dense.bias"]
        save_file(weights, folder / "model.safetensors")

    with pytest.raises(
        CheckpointError,
        match=r"model.safetensors \(hf layout\): missing key "
        r"'encoder.layers.1.feed_forward.output_dense.bias'",
    ):
        convert.read(_folder_with(tmp_path, "contentvec", drop_key), "tiny")


def test_hf_prefix_and_name_table_round_trip():
    cfg = get_config("tiny")
    fs = synthetic.fairseq_state(cfg, seed=1)
    hf = synthetic.hf_state(fs)
    prefixed = {("hubert." + k if k != "final_proj.weight" else k): v for k, v in hf.items()}
    a, b = convert.canonical_state(fs, cfg), convert.canonical_state(prefixed, cfg)
    assert all(np.array_equal(a[k], b[k]) for k in a) and a.keys() == b.keys()
    for key in convert.torch_shapes(cfg):
        assert convert.from_hf_name(convert.to_hf_name(key)) == key


def test_convert_file_writes_mlx_weights_with_config(tiny_ckpt, tiny_models, tmp_path):
    dst = convert.convert_file(tiny_ckpt, tmp_path / "hubert.safetensors", "tiny")
    weights, meta = load_safetensors(dst)
    assert meta["stage"] == "hubert" and HubertConfig.from_dict(meta["config"]) == get_config("tiny")
    assert weights["encoder.pos_conv.0.weight"].shape == (64, 16, 16)  # MLX conv layout [out, k, in/groups]
    model = convert.load_mlx(dst)  # config from the file's metadata
    x = mx.array(audio(1.0))
    assert np.array_equal(np.array(model.features(x)), np.array(tiny_models[1].features(x)))
    with pytest.raises(CheckpointError, match="already converted"):
        convert.read(dst, "tiny")
    # A converted file is loaded strictly too.
    del weights["encoder.layers.1.fc2.bias"]
    save_safetensors(tmp_path / "broken.safetensors", weights, meta)
    with pytest.raises(CheckpointError, match="missing key 'encoder.layers.1.fc2.bias'"):
        convert.load_mlx(tmp_path / "broken.safetensors")


def _fairseq_file(path, state, cfg_sections=None):
    save_torch_checkpoint(
        path,
        {
            "model": {k: torch.from_numpy(v) for k, v in state.items()},
            "cfg": cfg_sections or synthetic.fairseq_cfg(get_config("tiny")),
        },
    )
    return path


def _edit(state, key, new_key=None, value=None):
    out = dict(state)
    v = out.pop(key)
    out[new_key or key] = v if value is None else value
    return out


STRICT_CASES = {
    "renamed key": (
        lambda s: _edit(s, "encoder.layers.0.fc1.weight", "encoder.layers.0.fc_1.weight"),
        "missing key 'encoder.layers.0.fc1.weight'",
    ),
    "unexpected key": (
        lambda s: {**s, "encoder.layers.0.extra": np.zeros(3, np.float32)},
        "unexpected key 'encoder.layers.0.extra'",
    ),
    "wrong shape": (
        lambda s: _edit(s, "encoder.layers.1.self_attn.k_proj.weight", value=np.zeros((64, 63), np.float32)),
        r"key 'encoder.layers.1.self_attn.k_proj.weight' has shape \(64, 63\), expected \(64, 64\)",
    ),
    "weight_g without weight_v": (
        lambda s: {k: v for k, v in s.items() if k != "encoder.pos_conv.0.weight_v"},
        "missing key 'encoder.pos_conv.0.weight_v'",
    ),
    "wrong unused shape": (
        lambda s: _edit(s, "label_embs_concat", value=np.zeros((3, 16), np.float32)),
        "key 'label_embs_concat' has shape",
    ),
}


@pytest.mark.parametrize("case", list(STRICT_CASES))
def test_strict_load_names_the_key(tmp_path, case):
    edit, message = STRICT_CASES[case]
    path = _fairseq_file(tmp_path / "bad.pt", edit(synthetic.fairseq_state(get_config("tiny"))))
    for load in (convert.load_torch, convert.load_mlx):
        with pytest.raises(CheckpointError, match=message):
            load(path, config="tiny")
    with pytest.raises(CheckpointError, match=message):
        convert.convert_file(path, tmp_path / "out.safetensors", "tiny")
    assert not (tmp_path / "out.safetensors").exists()


def test_strict_load_names_hf_keys_as_spelled():
    cfg = get_config("tiny")
    hf = synthetic.hf_state(synthetic.fairseq_state(cfg))
    bad = _edit(hf, "encoder.layers.1.feed_forward.output_dense.bias", value=np.zeros(5, np.float32))
    with pytest.raises(CheckpointError, match="'encoder.layers.1.feed_forward.output_dense.bias' has shape"):
        convert.canonical_state(bad, cfg)
    with pytest.raises(CheckpointError, match="unexpected key 'label_embs_concat'"):  # fairseq-only key in HF file
        convert.canonical_state({**hf, "label_embs_concat": np.zeros((24, 16), np.float32)}, cfg)


def test_known_unused_keys_are_optional(tmp_path):
    cfg = get_config("tiny")
    state = synthetic.fairseq_state(cfg)
    lean = {k: v for k, v in state.items() if k not in convert.KNOWN_UNUSED["fairseq"]}
    a, b = convert.canonical_state(state, cfg), convert.canonical_state(lean, cfg)
    assert a.keys() == b.keys() == convert.torch_shapes(cfg).keys()


def test_fairseq_cfg_is_cross_checked(tmp_path):
    tiny = get_config("tiny")
    state = synthetic.fairseq_state(tiny)
    sections = synthetic.fairseq_cfg(tiny)
    pre_ln = _fairseq_file(
        tmp_path / "pre_ln.pt", state, {**sections, "model": {**sections["model"], "layer_norm_first": True}}
    )
    with pytest.raises(CheckpointError, match="layer_norm_first"):
        convert.read(pre_ln, "tiny")
    heads = _fairseq_file(
        tmp_path / "heads.pt", state, {**sections, "model": {**sections["model"], "encoder_attention_heads": 8}}
    )
    with pytest.raises(CheckpointError, match="encoder_attention_heads = 8, expected 4"):
        convert.read(heads, "tiny")
    with pytest.raises(CheckpointError, match="encoder_layers = 2, expected 12"):  # a tiny file read as full size
        convert.read(_fairseq_file(tmp_path / "ok.pt", state), "full")


def test_not_a_hubert_checkpoint(tmp_path):
    save_torch_checkpoint(tmp_path / "voice.pth", {"weight": {"emb_g.weight": torch.zeros(2, 2)}, "sr": "40k"})
    with pytest.raises(CheckpointError, match="not a HuBERT/ContentVec state dict"):
        convert.read(tmp_path / "voice.pth", "tiny")
    with pytest.raises(CheckpointError, match="not found"):
        convert.read(tmp_path / "missing.pt", "tiny")


class _RunsCode:
    """Pickles as a call to os.system: what a malicious hubert_base.pt would contain."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "hubert_base.pt"
    torch.save({"model": {"w": _RunsCode(marker)}, "cfg": {}}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load global (posix|os|nt)\.system"):
        convert.read(path, "tiny")
    with pytest.raises(CheckpointError, match="refusing"):
        convert.convert_file(path, tmp_path / "out.safetensors", "tiny")
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_synthetic_checkpoint_is_the_real_format_and_cached(tmp_path):
    path = synthetic.ensure_checkpoint(tmp_path, "tiny", seed=5)
    mtime = path.stat().st_mtime_ns
    assert synthetic.ensure_checkpoint(tmp_path, "tiny", seed=5) == path and path.stat().st_mtime_ns == mtime
    obj = load_pickled(path)  # argparse.Namespace "args" loads through an inert stand-in, as a plain dict
    assert type(obj["args"]) is dict and obj["args"]["encoder_layers"] == 2
    assert obj["cfg"]["task"]["normalize"] is False
    assert obj["model"]["encoder.pos_conv.0.weight_g"].dtype == torch.float16
    other = synthetic.ensure_checkpoint(tmp_path, "tiny", seed=6)
    assert not torch.equal(load_pickled(other)["model"]["final_proj.weight"], obj["model"]["final_proj.weight"])
