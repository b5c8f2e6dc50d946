"""rvc_bench.mlx_kernels: each rewrite against MLX's stock op and torch, the layers against the stock layers, and a
spy that fails if the MLX twins stop taking the fast paths on the CPU.

The rewrites sum the same fp32 terms as the stock ops, the transposed ones in another order. Measured on these
random O(1) cases: dilated bit-identical to MLX, transposed max |diff| <= 2.2e-7 (1-D) and ~6e-7 (2-D) of max |ref|,
the fused BiGRU ~2e-7; a misplaced tap, phase or crop gives O(1) (an unflipped polyphase kernel fails every case).
Bound: float32, 1e-5 relative to max |ref|.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mlx.utils import tree_flatten

from rvc_bench import layout, mlx_kernels
from rvc_bench.rmvpe import convert as rmvpe_convert
from rvc_bench.rmvpe import model_mlx as rmvpe_mlx
from rvc_bench.rmvpe.config import preset as rmvpe_preset
from rvc_bench.synth import model_mlx as synth_mlx
from rvc_bench.synth.config import preset as synth_preset

RTOL = 1e-5


def assert_close(out, ref):
    out, ref = np.asarray(out), np.asarray(ref)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= RTOL * np.abs(ref).max()


def conv_case(seed: int, length: int, kernel: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, length, 5)).astype(np.float32)  # batch 2, Cin 5 != Cout 6: order checks
    w = rng.standard_normal((6, kernel, 5)).astype(np.float32)  # MLX layout [Cout, K, Cin]
    return x, w


@pytest.mark.parametrize("length", [1, 16, 37, 64])  # 16, 37, 64: not multiples of 3 or 5; 1: all padding
@pytest.mark.parametrize("dilation", [1, 2, 3, 5])
@pytest.mark.parametrize("kernel", [3, 7, 11])  # ResBlock1 kernels (and dilations 1, 3, 5)
def test_space_to_batch_conv1d_matches_mlx_and_torch(kernel, dilation, length):
    x, w = conv_case(kernel * 100 + dilation * 10 + length, length, kernel)
    same = (kernel * dilation - dilation) // 2  # the ResBlock padding
    paddings = [p for p in (same, 0, 2) if length + 2 * p - dilation * (kernel - 1) >= 1]
    assert same in paddings
    for padding in paddings:
        out = mlx_kernels.space_to_batch_conv1d(mx.array(x), mx.array(w), padding, dilation)
        assert_close(out, mx.conv1d(mx.array(x), mx.array(w), 1, padding, dilation))
        expected = F.conv1d(
            torch.from_numpy(x.transpose(0, 2, 1)),
            torch.from_numpy(w.transpose(0, 2, 1).copy()),
            padding=padding,
            dilation=dilation,
        )
        assert_close(out, expected.numpy().transpose(0, 2, 1))


# (kernel, stride, padding) of the synthesizer's upsampling layers
FULL_SIZE_UPS = [(16, 10, 3), (16, 8, 4), (4, 2, 1), (20, 10, 5), (24, 12, 6), (16, 6, 5), (16, 4, 6)]
TINY_UPS = [(9, 5, 2), (5, 3, 1), (6, 4, 1), (12, 6, 3), (8, 4, 2), (8, 2, 3)]
OFF_CONFIG = [(7, 2, 0), (3, 4, 0), (16, 10, 0), (5, 1, 2)]  # no padding, kernel < stride, stride 1


@pytest.mark.parametrize("length", [1, 7, 13])  # 7, 13: not multiples of any stride
@pytest.mark.parametrize("kernel,stride,padding", [*FULL_SIZE_UPS, *TINY_UPS, *OFF_CONFIG])
def test_polyphase_conv_transpose1d_matches_mlx_and_torch(kernel, stride, padding, length):
    x, w = conv_case(kernel * 100 + stride * 10 + length, length, kernel)
    out = mlx_kernels.polyphase_conv_transpose1d(mx.array(x), mx.array(w), stride, padding)
    ref = mx.conv_transpose1d(mx.array(x), mx.array(w), stride, padding)
    assert ref.shape[1] == (length - 1) * stride + kernel - 2 * padding
    assert_close(out, ref)
    expected = F.conv_transpose1d(
        torch.from_numpy(x.transpose(0, 2, 1)),  # torch weight [Cin, Cout, K]
        torch.from_numpy(w.transpose(2, 0, 1).copy()),
        stride=stride,
        padding=padding,
    )
    assert_close(out, expected.numpy().transpose(0, 2, 1))


@pytest.mark.parametrize("height,width", [(5, 7), (1, 1), (4, 16)])
def test_phase_conv_transpose2d_matches_mlx_and_torch(height, width):
    torch.manual_seed(height * width)
    ref = torch.nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, bias=False)
    x = torch.randn(2, 6, height, width)
    with torch.inference_mode():
        expected = ref(x).numpy().transpose(0, 2, 3, 1)
    w = mx.array(layout.conv_transpose2d(ref.weight.detach().numpy()))
    xm = mx.array(x.numpy().transpose(0, 2, 3, 1))
    out = mlx_kernels.phase_conv_transpose2d(xm, w)
    assert out.shape == (2, 2 * height, 2 * width, 4)
    assert_close(out, mx.conv_transpose2d(xm, w, stride=2, padding=1, output_padding=1))
    assert_close(out, expected)


def test_fused_bigru_matches_mlx_gru_pair_and_torch():
    # Two stacked bidirectional layers, batch 2: every index of the fused loop is exercised.
    torch.manual_seed(0)
    ref = torch.nn.GRU(12, 8, num_layers=2, batch_first=True, bidirectional=True).eval()
    x = torch.randn(2, 37, 12)
    with torch.inference_mode():
        expected = ref(x)[0].numpy()
    state = {f"fc.0.gru.{k}": v.numpy() for k, v in ref.state_dict().items()}
    gru = mlx_kernels.BidirectionalGRU(12, 8, 2)
    weights = {k.removeprefix("fc.0.gru."): v for k, v in rmvpe_convert.gru_to_mlx(state).items()}
    gru.load_weights([(k, mx.array(v)) for k, v in weights.items()], strict=True)
    xm = mx.array(x.numpy())
    stock = xm  # the stock mlx.nn.GRU pair, one direction after the other
    for k in range(2):
        fwd, bwd = gru[f"l{k}"], gru[f"l{k}_reverse"]
        h0 = mx.zeros((2, 8))  # explicit zeros: see prior_art, mlx#3249
        stock = mx.concatenate([fwd(stock, h0), bwd(stock[:, ::-1], h0)[:, ::-1]], axis=-1)
    out = gru(xm)
    assert_close(out, stock)
    assert_close(out, expected)


def test_layers_keep_the_stock_parameters_and_numbers():
    rng = np.random.default_rng(0)
    x1 = mx.array(rng.standard_normal((1, 29, 6)).astype(np.float32))
    x2 = mx.array(rng.standard_normal((1, 5, 7, 6)).astype(np.float32))
    pairs = [
        (mlx_kernels.SpaceToBatchConv1d(6, 4, 7, dilation=3, padding=9), nn.Conv1d(6, 4, 7, dilation=3, padding=9), x1),
        (
            mlx_kernels.PolyphaseConvTranspose1d(6, 4, 16, 10, padding=3),
            nn.ConvTranspose1d(6, 4, 16, 10, padding=3),
            x1,
        ),
        (
            mlx_kernels.PhaseConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1),
            nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1),
            x2,
        ),
    ]
    with mx.stream(mx.cpu):  # the rewrites are selected on the CPU device only
        assert mlx_kernels.on_cpu()
        for ours, stock, x in pairs:
            params = tree_flatten(ours.parameters())
            assert [(k, v.shape) for k, v in params] == [(k, v.shape) for k, v in tree_flatten(stock.parameters())]
            stock.load_weights([(k, v + 0.1) for k, v in params], strict=True)  # nonzero bias
            ours.load_weights([(k, v + 0.1) for k, v in params], strict=True)
            assert_close(ours(x), stock(x))


# ---------------------------------------------------------------------------------------------------------------
# The MLX twins really take the fast paths on the CPU


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts calls of each rewrite (the layers look the functions up in mlx_kernels at call time)."""
    calls = {}
    for name in ("space_to_batch_conv1d", "polyphase_conv_transpose1d", "phase_conv_transpose2d", "fused_bigru"):
        original = getattr(mlx_kernels, name)

        def spy(*args, _original=original, _name=name):
            calls[_name] = calls.get(_name, 0) + 1
            return _original(*args)

        monkeypatch.setattr(mlx_kernels, name, spy)
    return calls


def _count(model, kind, applies=lambda m: True) -> int:
    return sum(1 for _, m in model.named_modules() if isinstance(m, kind) and applies(m))


def test_synthesizer_takes_the_fast_paths_on_cpu(kernel_calls):
    cfg = synth_preset("v2-40k", "tiny")
    model = synth_mlx.build(cfg)
    dilated = _count(model, mlx_kernels.SpaceToBatchConv1d, lambda m: m.dilation > 1)
    ups = _count(model, mlx_kernels.PolyphaseConvTranspose1d)
    assert dilated == 2 * 3 * len(cfg.upsample_rates) and ups == len(cfg.upsample_rates)  # ResBlock dilations 3, 5
    frames = 9
    with mx.stream(mx.cpu):
        audio = model.infer(
            mx.zeros((1, frames, cfg.phone_channels)),
            pitch=mx.ones((1, frames), mx.int32),
            nsff0=mx.full((1, frames), 200.0),
            eps=mx.zeros((1, frames, cfg.inter_channels)),
            sine_noise=mx.zeros((1, frames * cfg.upp)),
        )
        mx.eval(audio)
    assert kernel_calls == {"space_to_batch_conv1d": dilated, "polyphase_conv_transpose1d": ups}


def test_rmvpe_takes_the_fast_paths_on_cpu(kernel_calls):
    cfg = rmvpe_preset("tiny")
    model = rmvpe_mlx.build(cfg)
    levels = _count(model, mlx_kernels.PhaseConvTranspose2d)
    assert levels == cfg.en_de_layers
    with mx.stream(mx.cpu):
        mx.eval(model(mx.zeros((1, 32, cfg.n_mels))))
    assert kernel_calls == {"phase_conv_transpose2d": levels, "fused_bigru": cfg.n_gru}
