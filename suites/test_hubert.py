"""ContentVec / HuBERT stage: frame arithmetic, twin parity per layer, long-audio windows (both checkpoint layouts,
strict and safe loading: test_hubert_checkpoints.py; the bounds and inputs both use: hubert_twins.py; the tiny
checkpoint and twins: conftest.py; the benchmark: test_bench_hubert.py)."""

from __future__ import annotations

from dataclasses import fields

import mlx.core as mx
import numpy as np
import pytest
import torch
from hubert_twins import FULL_REL_L2, GROUP_NORM_60S_MAX_ABS, TINY_REL_L2, audio, torch_np

from rvc_bench import parity
from rvc_bench.fixtures import cache_dir
from rvc_bench.hubert import HubertConfig, convert, get_config, model_mlx, model_torch, synthetic

# ---------------------------------------------------------------------------------------------------------------
# Configuration and frame arithmetic


def test_frame_arithmetic_matches_the_spec():
    full, tiny = get_config("full"), get_config("tiny")
    for cfg in (full, tiny):
        assert (cfg.hop, cfg.receptive_field) == (320, 400)
    assert full.num_frames(156_736) == 489  # spec §2 example
    assert full.num_frames(400) == 1 and full.num_frames(399) == 0
    assert get_config(full.from_dict({**full.to_dict(), "not_a_field": 1})) == full  # unknown keys dropped


@pytest.mark.parametrize("seconds", [0.5, 41.0, 60.0, 300.0, 300.013])
def test_windows_tile_the_frame_grid(seconds):
    cfg = get_config("full")
    n = int(round(seconds * 16000))
    spans = cfg.windows(n)
    assert all(b - a <= 41 * 16000 for a, b in spans) and spans[-1][1] <= n
    frames = [cfg.num_frames(b - a) for a, b in spans]
    assert sum(frames) == cfg.num_frames(n)  # same frame count as one call
    starts = np.cumsum([0] + frames[:-1]) * cfg.hop
    assert [a for a, _ in spans] == list(starts)  # each window starts on the frame grid of the long call
    assert len(spans) == int(np.ceil(cfg.num_frames(n) / 2049))  # 2049 frames = 655 760 samples <= 41 s
    assert cfg.windows(399) == []


def test_parameter_count_matches_the_real_checkpoint():
    cfg = get_config("full")
    stored = convert.source_shapes(cfg, "fairseq", "legacy", convert.KNOWN_UNUSED["fairseq"])
    core = {k: s for k, s in convert.torch_shapes(cfg).items() if not k.startswith("final_proj")}
    # Spec §9: 94.70 M stored (incl. final_proj, label_embs_concat, mask_emb, weight_g), 94.37 M core.
    assert round(sum(np.prod(s) for s in stored.values()) / 1e6, 2) == 94.70
    assert round(sum(np.prod(s) for s in core.values()) / 1e6, 2) == 94.37


# ---------------------------------------------------------------------------------------------------------------
# Twin parity


def _per_layer(models, x):
    tm, mm = models
    ht = [torch_np(h) for h in tm.hidden_states(torch.from_numpy(x))]
    hm = mm.hidden_states(mx.array(x))
    mx.eval(hm)
    v1 = (torch_np(tm.features(torch.from_numpy(x), "v1")), np.array(mm.features(mx.array(x), "v1")))
    return ht, [np.array(h) for h in hm], v1


def test_twins_agree_at_every_layer_tiny(tiny_models):
    x = audio(2.0)
    cfg = get_config("tiny")
    ht, hm, (v1_t, v1_m) = _per_layer(tiny_models, x)
    assert len(ht) == len(hm) == cfg.layers + 1
    for i, (t, m) in enumerate(zip(ht, hm)):
        assert t.shape == m.shape == (1, cfg.num_frames(x.shape[1]), cfg.embed_dim)
        assert parity.tensor_metrics(m, t)["rel_l2"] <= TINY_REL_L2, f"layer {i}"
    assert v1_t.shape == v1_m.shape == (1, cfg.num_frames(x.shape[1]), cfg.final_dim)
    assert parity.tensor_metrics(v1_m, v1_t)["rel_l2"] <= TINY_REL_L2
    # v2 is the last layer; the layers really transform (a test that passes on identity would be worthless).
    assert np.array_equal(torch_np(tiny_models[0].features(torch.from_numpy(x), "v2")), ht[-1])
    assert parity.tensor_metrics(ht[-1], ht[0])["rel_l2"] > 0.5


@pytest.mark.full_size
def test_twins_agree_at_every_layer_full():
    path = synthetic.ensure_checkpoint(cache_dir(), "full")
    models = convert.load_torch(path, config="full"), convert.load_mlx(path, config="full")
    x = audio(5.0)
    ht, hm, (v1_t, v1_m) = _per_layer(models, x)
    assert ht[-1].shape == (1, 249, 768) and v1_t.shape == (1, 249, 256)
    for i, (t, m) in enumerate(zip(ht, hm)):
        assert parity.tensor_metrics(m, t)["rel_l2"] <= FULL_REL_L2, f"layer {i}"
    assert parity.tensor_metrics(v1_m, v1_t)["rel_l2"] <= FULL_REL_L2


def test_first_group_norm_is_accurate_at_60_s():
    """The first conv layer's GroupNorm normalises each channel over ~N/5 steps (191 999 at 60 s). Against float64
    on conv-output-like data (per-channel offset and scale), max abs error of the normalised output, measured over
    3 seeds: MLX nn.GroupNorm(pytorch_compatible) 1.2e-4 to 1.4e-4 (one fp32 sum over all steps), this twin's
    two-level sum 1.6e-6 to 2.6e-6, torch fp32 0.6e-6 to 0.9e-6. Bound 1e-5 (check group-norm-60s)."""
    _, k, stride = get_config("full").conv_layers[0]
    t, c = (60 * 16000 - k) // stride + 1, 8  # the first conv's output length at 60 s; few channels suffice
    rng = np.random.default_rng(0)
    x = (rng.uniform(-3, 3, c) + rng.uniform(0.5, 2, c) * rng.standard_normal((1, t, c))).astype(np.float32)
    weight, bias = rng.uniform(0.5, 1.5, c).astype(np.float32), rng.uniform(-1, 1, c).astype(np.float32)
    norm = model_mlx.ChannelGroupNorm(c, eps=1e-5)
    norm.weight, norm.bias = mx.array(weight), mx.array(bias)
    centred = x.astype(np.float64) - x.astype(np.float64).mean(axis=1, keepdims=True)
    ref = centred / np.sqrt((centred**2).mean(axis=1, keepdims=True) + 1e-5) * weight + bias
    assert np.abs(np.array(norm(mx.array(x))) - ref).max() <= GROUP_NORM_60S_MAX_ABS


def test_output_layer_and_input_checks(tiny_models):
    tm, mm = tiny_models
    x = audio(1.0)
    t1 = torch_np(tm.extract_features(torch.from_numpy(x), output_layer=1))
    assert np.array_equal(t1, torch_np(tm.hidden_states(torch.from_numpy(x))[1]))
    for model, arr in ((tm, torch.from_numpy), (mm, mx.array)):
        with pytest.raises(ValueError, match="samples >= 400"):
            model.features(arr(x[:, :399]))
        with pytest.raises(ValueError, match="output_layer 3"):
            model.extract_features(arr(x), output_layer=3)
        with pytest.raises(ValueError, match="'v3'"):
            model.features(arr(x), "v3")


def test_upsample2x_repeats_each_frame():
    feats = np.random.default_rng(0).standard_normal((1, 7, 5)).astype(np.float32)
    expected = np.repeat(feats, 2, axis=1)
    assert np.array_equal(torch_np(model_torch.upsample2x(torch.from_numpy(feats))), expected)
    assert np.array_equal(np.array(model_mlx.upsample2x(mx.array(feats))), expected)


def test_windowed_features(tiny_models):
    tm, mm = tiny_models
    cfg = get_config("tiny")
    x = audio(3.3)
    spans = cfg.windows(x.shape[1], max_seconds=1.0)
    assert len(spans) == 4
    wt = torch_np(tm.features_windowed(torch.from_numpy(x), "v2", max_seconds=1.0))
    wm = np.array(mm.features_windowed(mx.array(x), "v2", max_seconds=1.0))
    assert wt.shape == wm.shape == (1, cfg.num_frames(x.shape[1]), cfg.embed_dim)
    assert parity.tensor_metrics(wm, wt)["rel_l2"] <= TINY_REL_L2  # where each window sits: the tests below
    # Windows change the transformer's context, so the result differs from one long call, but not wildly.
    whole = torch_np(tm.features(torch.from_numpy(x), "v2"))
    assert 1e-4 < parity.tensor_metrics(wt, whole)["rel_l2"] < 0.5
    # Audio that fits one window is one call.
    assert np.array_equal(
        torch_np(tm.features_windowed(torch.from_numpy(x), "v1")), torch_np(tm.features(torch.from_numpy(x), "v1"))
    )


# The frame grid of 3.3 s (52 800 samples, 164 frames) in windows of at most 1 s, stated here rather than read from
# HubertConfig.windows: (16000 - (400 - 320)) // 320 = 49 frames a window, so frames [0, 49), [49, 98), [98, 147),
# [147, 164); a window of frames [f, f + c) reads samples [320 f, 320 (f + c - 1) + 400).
GRID_FRAMES = ((0, 49), (49, 49), (98, 49), (147, 17))
GRID_SPANS = tuple((320 * f, 320 * (f + c - 1) + 400) for f, c in GRID_FRAMES)


def grid_misses(tm, mm, x) -> dict[str, float]:
    """rel_l2 of each twin's features_windowed (v2, 1 s windows) against its own features() of the GRID_SPANS
    windows, concatenated, and of MLX against torch; inf where the frame counts differ."""

    def miss(out, ref):
        return parity.tensor_metrics(out, ref)["rel_l2"] if out.shape == ref.shape else float("inf")

    wt = torch_np(tm.features_windowed(torch.from_numpy(x), "v2", max_seconds=1.0))
    wm = np.array(mm.features_windowed(mx.array(x), "v2", max_seconds=1.0))
    gt = np.concatenate([torch_np(tm.features(torch.from_numpy(x[:, a:b]), "v2")) for a, b in GRID_SPANS], axis=1)
    gm = np.concatenate([np.array(mm.features(mx.array(x[:, a:b]), "v2")) for a, b in GRID_SPANS], axis=1)
    return {"torch": miss(wt, gt), "mlx": miss(wm, gm), "twins": miss(wm, wt)}


def test_windows_sit_on_the_frame_grid_in_both_twins(tiny_models):
    """Both twins cut 3.3 s of speech-like audio (voiced glides, noise, silences) at the stated frame grid and
    concatenate the windows in order: each twin is bit-identical to its own per-window calls (measured 0.0), and the
    twins agree (4.8e-7, bound 1e-5)."""
    assert get_config("tiny").windows(52_800, max_seconds=1.0) == list(GRID_SPANS)
    got = grid_misses(*tiny_models, audio(3.3))
    assert got["torch"] == got["mlx"] == 0.0 and got["twins"] <= TINY_REL_L2, got


def _shift_later_windows(by: int):
    """HubertConfig.windows with every window after the first moved by `by` samples (frame count kept)."""
    windows = HubertConfig.windows
    return lambda cfg, n, max_seconds: [
        (a + by * (i > 0), b + by * (i > 0)) for i, (a, b) in enumerate(windows(cfg, n, max_seconds))
    ]


class MovedBoundary(HubertConfig):
    """The first window one frame shorter and the second one frame longer: still a tiling, not torch's."""

    def windows(self, n_samples, max_seconds):
        (a0, b0), (a1, b1), *rest = super().windows(n_samples, max_seconds)
        return [(a0, b0 - self.hop), (a1 - self.hop, b1), *rest]


@pytest.mark.parametrize("fault", ["one sample late", "one frame overlap", "mlx boundary moved"])
def test_a_misplaced_window_is_caught(tiny_models, monkeypatch, fault):
    """Planted faults the grid test must catch: windows after the first one sample late (rel_l2 0.26 on both twins)
    or re-reading the previous window's last frame (0.43), and MLX alone ending its first window a frame early
    (0.035 against its grid and against torch). Bound 1e-5: each misses by 3400x or more. A fault both twins share
    leaves them agreeing (4.8e-7): only the stated grid catches it."""
    tm, mm = tiny_models
    if fault == "mlx boundary moved":
        cfg, missed = mm.cfg, ("mlx", "twins")
        monkeypatch.setattr(mm, "cfg", MovedBoundary(**{f.name: getattr(cfg, f.name) for f in fields(cfg)}))
    else:
        missed = ("torch", "mlx")
        monkeypatch.setattr(HubertConfig, "windows", _shift_later_windows(1 if fault == "one sample late" else -320))
    got = grid_misses(tm, mm, audio(3.3))
    assert min(got[k] for k in missed) >= 1000 * TINY_REL_L2, got
