"""Layout rules against the frameworks themselves: a converted weight gives the torch layer's output in MLX."""

import numpy as np
import pytest
import torch

from rvc_bench import layout
from rvc_bench.layout import CheckpointError

rng = np.random.default_rng(0)


def test_conv1d_layout_with_groups_and_dilation():
    import mlx.core as mx

    conv = torch.nn.Conv1d(8, 12, 5, padding=4, dilation=2, groups=4)
    x = rng.standard_normal((1, 8, 30)).astype(np.float32)
    ref = conv(torch.from_numpy(x)).detach().numpy()
    w = layout.conv1d(conv.weight.detach().numpy())
    out = mx.conv1d(mx.array(x.transpose(0, 2, 1)), mx.array(w), padding=4, dilation=2, groups=4)
    out = np.array(out + mx.array(conv.bias.detach().numpy())).transpose(0, 2, 1)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_conv_transpose1d_layout():
    import mlx.core as mx

    conv = torch.nn.ConvTranspose1d(6, 4, 16, stride=8, padding=4, bias=False)
    x = rng.standard_normal((1, 6, 10)).astype(np.float32)
    ref = conv(torch.from_numpy(x)).detach().numpy()
    out = mx.conv_transpose1d(
        mx.array(x.transpose(0, 2, 1)),
        mx.array(layout.conv_transpose1d(conv.weight.detach().numpy())),
        stride=8,
        padding=4,
    )
    np.testing.assert_allclose(np.array(out).transpose(0, 2, 1), ref, atol=1e-5)


def test_conv2d_and_conv_transpose2d_layouts():
    import mlx.core as mx

    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    convt = torch.nn.ConvTranspose2d(5, 2, 3, stride=2, padding=1, output_padding=1, bias=False)
    x = rng.standard_normal((1, 3, 8, 6)).astype(np.float32)
    with torch.no_grad():
        ref = convt(conv(torch.from_numpy(x))).numpy()
    h = mx.conv2d(mx.array(x.transpose(0, 2, 3, 1)), mx.array(layout.conv2d(conv.weight.detach().numpy())), padding=1)
    h = h + mx.array(conv.bias.detach().numpy())
    out = mx.conv_transpose2d(
        h, mx.array(layout.conv_transpose2d(convt.weight.detach().numpy())), stride=2, padding=1, output_padding=1
    )
    np.testing.assert_allclose(np.array(out).transpose(0, 3, 1, 2), ref, atol=1e-5)


@pytest.mark.parametrize(
    "dim,module",
    [(0, torch.nn.Conv1d(4, 6, 3)), (0, torch.nn.ConvTranspose1d(4, 6, 3)), (2, torch.nn.Conv1d(4, 4, 8, groups=2))],
)
def test_weight_norm_fold_matches_torch(dim, module):
    wn = torch.nn.utils.weight_norm(module, dim=dim)
    with torch.no_grad():
        wn.weight_g.mul_(torch.rand_like(wn.weight_g) + 0.5)
        wn(torch.zeros(1, 4, 16))  # recompute .weight from g and v
    folded = layout.fold_weight_norm(wn.weight_g.detach().numpy(), wn.weight_v.detach().numpy(), dim)
    np.testing.assert_allclose(folded, wn.weight.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_fold_weight_norms_handles_both_key_styles_and_names_orphans():
    g, v = np.ones((2, 1, 1), np.float32), rng.standard_normal((2, 3, 1)).astype(np.float32)
    legacy = layout.fold_weight_norms({"a.weight_g": g, "a.weight_v": v, "a.bias": np.zeros(2)}, lambda m: 0)
    new = layout.fold_weight_norms(
        {"a.parametrizations.weight.original0": g, "a.parametrizations.weight.original1": v}, lambda m: 0
    )
    assert set(legacy) == {"a.weight", "a.bias"} and set(new) == {"a.weight"}
    np.testing.assert_array_equal(legacy["a.weight"], new["a.weight"])
    with pytest.raises(CheckpointError, match="'b.weight_g' has no partner 'b.weight_v'"):
        layout.fold_weight_norms({"b.weight_g": g}, lambda m: 0)


def test_gru_mapping_matches_torch():
    import mlx.core as mx
    import mlx.nn as nn

    gru = torch.nn.GRU(7, 5, batch_first=True)
    with torch.no_grad():
        for p in gru.parameters():
            p.uniform_(-0.5, 0.5)
    x = rng.standard_normal((1, 9, 7)).astype(np.float32)
    ref = gru(torch.from_numpy(x))[0].detach().numpy()
    params = layout.gru(
        *(getattr(gru, n).detach().numpy() for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"))
    )
    m = nn.GRU(7, 5)
    m.load_weights([(k, mx.array(v)) for k, v in params.items()], strict=True)
    np.testing.assert_allclose(np.array(m(mx.array(x))), ref, atol=1e-5)


def test_check_shapes_names_the_key():
    expected = {"a": (2, 3), "b": (4,)}
    with pytest.raises(CheckpointError, match="missing key 'b'"):
        layout.check_shapes(expected, {"a": np.zeros((2, 3))}, "m")
    with pytest.raises(CheckpointError, match="unexpected key 'c'"):
        layout.check_shapes(expected, {"a": np.zeros((2, 3)), "b": np.zeros(4), "c": np.zeros(1)}, "m")
    with pytest.raises(CheckpointError, match=r"key 'a' has shape \(3, 2\), expected \(2, 3\)"):
        layout.check_shapes(expected, {"a": np.zeros((3, 2)), "b": np.zeros(4)}, "m")
