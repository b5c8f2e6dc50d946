"""MLX fast paths, in one place: the only code that looks at the device to pick a kernel.

MLX's CPU backend (measured on 0.32.4, Linux) runs dilated convolutions and transposed convolutions (which it
implements as input-dilated convolutions) on a slow generic loop: 20-75x slower than the rewrites below, which
compute the same sums with plain stride-1 convolutions. GPU backends (Metal, CUDA) have real kernels for both, so
there the stock ops run. The bidirectional GRU is rewritten on every device: its time loop is the one sequential
part of RMVPE, and the stock pair of mlx.nn.GRU spends ~20 small ops per step.

Each rewrite is a plain function (tested once against the stock op and torch in tests/test_mlx_kernels.py) and a
layer with the stock layer's parameters, named for what it does, that the MLX twins use in place of the stock one:

    SpaceToBatchConv1d(nn.Conv1d)            dilated conv as a non-dilated conv over the interleaved phases
    PolyphaseConvTranspose1d(nn.ConvTranspose1d)   transposed conv as one stride-1 conv + interleave
    PhaseConvTranspose2d(nn.ConvTranspose2d) RMVPE's k3/s2/p1/op1 transposed conv as one 2x2 conv + depth-to-space
    BidirectionalGRU                         torch's nn.GRU(bidirectional=True) as mlx.nn.GRU pairs, both
                                             directions stepped together by one compiled kernel
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


def on_cpu() -> bool:
    return mx.default_device() == mx.cpu


# ---- dilated conv1d -----------------------------------------------------------------------------------------------


def space_to_batch_conv1d(x: mx.array, w: mx.array, padding: int, dilation: int) -> mx.array:
    """mx.conv1d(x, w, padding=padding, dilation=dilation) as a non-dilated conv over the `dilation` interleaved
    phases x[r::d], stacked on the batch axis. x [B, T, Cin], w [Cout, K, Cin] -> [B, T + 2p - d(K-1), Cout]."""
    b, t, c = x.shape
    d, k = dilation, w.shape[1]
    t_out = t + 2 * padding - d * (k - 1)
    q = -(-(t + 2 * padding) // d)  # samples per phase (the padded input is extended to q * d)
    x = mx.pad(x, [(0, 0), (padding, q * d - t - padding), (0, 0)])  # [B, q*d, Cin]
    x = x.reshape(b, q, d, c).transpose(0, 2, 1, 3).reshape(b * d, q, c)  # [B*d, q, Cin], row r = phase r
    y = mx.conv1d(x, w)  # [B*d, q-K+1, Cout]: y_r[m] = sum_j w[j] x_pad[(m + j) d + r]
    y = y.reshape(b, d, q - k + 1, -1).transpose(0, 2, 1, 3).reshape(b, (q - k + 1) * d, -1)  # interleave
    return y[:, :t_out]


class SpaceToBatchConv1d(nn.Conv1d):
    """nn.Conv1d (same parameters); a dilated, ungrouped, stride-1 conv runs space_to_batch_conv1d on the CPU."""

    def __call__(self, x: mx.array) -> mx.array:
        if self.dilation == 1 or self.stride != 1 or self.groups != 1 or not on_cpu():
            return super().__call__(x)
        y = space_to_batch_conv1d(x, self.weight, self.padding, self.dilation)
        return y + self.bias if "bias" in self else y


# ---- transposed conv1d --------------------------------------------------------------------------------------------


def polyphase_conv_transpose1d(x: mx.array, w: mx.array, stride: int, padding: int) -> mx.array:
    """mx.conv_transpose1d(x, w, stride, padding) as a stride-1 conv with stride * Cout output channels followed by
    an interleave. x [B, T, Cin], w [Cout, K, Cin] -> [B, (T-1)s + K - 2p, Cout].

    y[n] = sum_i x[i] w[n + p - i s]; with n + p = a s + r (0 <= r < s) the taps that meet are w[j s + r] at
    i = a - j, so y[a s + r - p] = sum_j x[a - j] w[j s + r]: phase r is a plain conv of x with kernel w[r::s]."""
    b, t, _ = x.shape
    cout, k, cin = w.shape
    s = stride
    taps = -(-k // s)  # taps per phase
    t_out = (t - 1) * s + k - 2 * padding
    a = -(-(t_out + padding) // s)  # phase outputs needed
    # kernel [s*Cout, taps, Cin]: channel r*Cout + o, correlation tap u = taps-1-j holds w[o, j*s + r]
    wp = mx.pad(w, [(0, 0), (0, taps * s - k), (0, 0)]).reshape(cout, taps, s, cin)[:, ::-1]
    wp = wp.transpose(2, 0, 1, 3).reshape(s * cout, taps, cin)
    x = mx.pad(x, [(0, 0), (taps - 1, max(0, a - t)), (0, 0)])  # x[a - j] for j < taps, zeros outside [0, T)
    y = mx.conv1d(x, wp)[:, :a]  # [B, a, s*Cout]
    return y.reshape(b, a * s, cout)[:, padding : padding + t_out]  # row a*s + r is y[a s + r - p]


class PolyphaseConvTranspose1d(nn.ConvTranspose1d):
    """nn.ConvTranspose1d (same parameters, weight [Cout, K, Cin]); runs polyphase_conv_transpose1d on the CPU."""

    def __call__(self, x: mx.array) -> mx.array:
        if self.dilation != 1 or self.output_padding != 0 or not on_cpu():
            return super().__call__(x)
        y = polyphase_conv_transpose1d(x, self.weight, self.stride, self.padding)
        return y + self.bias if "bias" in self else y


# ---- RMVPE's stride-2 transposed conv2d ---------------------------------------------------------------------------
# Sub-pixel form of ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1). Output row 2m takes kernel row 1
# at input row m; output row 2m+1 takes kernel row 2 at input row m and kernel row 0 at input row m+1 (zero past
# the end, which is what output_padding adds). The same holds for columns, so each output phase (a, b) is a 2x2
# stride-1 convolution of the input padded by one row and column at the end; _PHASE_TAPS[a][d] is the kernel
# row (column) of phase a at offset d, None where that tap does not exist.
_PHASE_TAPS = ((1, None), (2, 0))
_ZERO_TAP = 9  # index of an appended zero tap in the flattened 3x3 kernel
_PHASE_INDEX = mx.array(
    [
        [_ZERO_TAP if kh is None or kw is None else 3 * kh + kw for kh in _PHASE_TAPS[a] for kw in _PHASE_TAPS[b]]
        for a in (0, 1)
        for b in (0, 1)
    ]
).reshape(-1)  # [4 phases x 4 taps]


def phase_conv_transpose2d(x: mx.array, w: mx.array) -> mx.array:
    """mx.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1) for a 3x3 kernel, as one 2x2 conv producing
    the four output phases as channels, then depth-to-space: the same sums with 16 taps per input pixel, not 36.
    x [B, H, W, Cin], w [Cout, 3, 3, Cin] -> [B, 2H, 2W, Cout]."""
    batch, height, width, _ = x.shape
    out, _, _, cin = w.shape
    taps = mx.concatenate([w.reshape(out, 9, cin), mx.zeros((out, 1, cin), x.dtype)], axis=1)
    w = mx.take(taps, _PHASE_INDEX, axis=1).reshape(out, 4, 2, 2, cin).swapaxes(0, 1).reshape(4 * out, 2, 2, cin)
    y = mx.conv2d(mx.pad(x, [(0, 0), (0, 1), (0, 1), (0, 0)]), w)  # [B, H, W, (a, b, out)]
    y = y.reshape(batch, height, width, 2, 2, out).transpose(0, 1, 3, 2, 4, 5)  # [B, H, a, W, b, out]
    return y.reshape(batch, 2 * height, 2 * width, out)


class PhaseConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d (same parameters); the k3/s2/p1/op1 case runs phase_conv_transpose2d on the CPU, where the
    stock op takes its naive reference loop (~120 ms per RMVPE decoder level whatever its size)."""

    def __call__(self, x: mx.array) -> mx.array:
        if not (
            on_cpu()
            and self.weight.shape[1:3] == (3, 3)
            and tuple(self.stride) == (2, 2)
            and tuple(self.padding) == (1, 1)
            and tuple(self.output_padding) == (1, 1)
            and self.dilation == 1
        ):
            return super().__call__(x)
        y = phase_conv_transpose2d(x, self.weight)
        return y + self.bias if "bias" in self else y


# ---- bidirectional GRU --------------------------------------------------------------------------------------------


@mx.compile
def _gru_step(xp: mx.array, h: mx.array, wh_t: mx.array, bhn: mx.array) -> mx.array:
    """One step of both directions at once (torch gate order r, z, n).

    xp: [2, B, 3H] input projections with b already added; h: [2, B, H]; wh_t: [2, H, 3H]; bhn: [2, 1, H].
    Compiled, so the gate arithmetic after the one batched matmul is a single fused kernel.
    """
    hidden = h.shape[-1]
    hp = h @ wh_t  # [2, B, 3H]
    rz = mx.sigmoid(xp[..., : 2 * hidden] + hp[..., : 2 * hidden])
    r, z = rz[..., :hidden], rz[..., hidden:]
    n = mx.tanh(xp[..., 2 * hidden :] + r * (hp[..., 2 * hidden :] + bhn))
    return (1 - z) * n + z * h


def fused_bigru(x: mx.array, fwd: nn.GRU, bwd: nn.GRU) -> mx.array:
    """One bidirectional layer, [B, T, D] -> [B, T, 2H] (forward | backward), in a single loop over time.

    The input projections of both directions for all T steps are one matmul; each step then does one batched
    [2, B, H] x [2, H, 3H] matmul and one fused gate kernel, the forward direction at step i and the backward
    direction at step T-1-i together.
    """
    batch, steps, _ = x.shape
    hidden = fwd.hidden_size
    w_x = mx.concatenate([fwd.Wx, bwd.Wx], axis=0)  # [6H, D]
    b = mx.concatenate([fwd.b, bwd.b])  # [6H]
    xp = mx.addmm(b, x, w_x.T).reshape(batch, steps, 2, 3 * hidden)  # [B, T, 2, 3H], one matmul for all steps
    # Step-major, backward direction time-reversed, made contiguous once so each step reads one block.
    xp = mx.contiguous(mx.stack([xp[:, :, 0], xp[:, ::-1, 1]]).transpose(2, 0, 1, 3))  # [T, 2, B, 3H]
    wh_t = mx.stack([fwd.Wh.T, bwd.Wh.T])  # [2, H, 3H]
    bhn = mx.stack([fwd.bhn, bwd.bhn])[:, None, :]  # [2, 1, H]
    h = mx.zeros((2, batch, hidden), x.dtype)
    states = []
    for i in range(steps):
        h = _gru_step(xp[i], h, wh_t, bhn)
        states.append(h)
    hs = mx.stack(states)  # [T, 2, B, H]
    out = mx.concatenate([hs[:, 0], hs[::-1, 1]], axis=-1)  # [T, B, 2H]: forward | backward in input time order
    return out.transpose(1, 0, 2)


class BidirectionalGRU(nn.Module):
    """torch's nn.GRU(bidirectional=True, batch_first=True) as mlx.nn.GRU pairs named like torch's key suffixes
    (l0, l0_reverse, l1, ...; parameters mapped by rvc_bench.layout.gru); each layer runs fused_bigru."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        for k in range(num_layers):
            size = input_size if k == 0 else 2 * hidden_size
            setattr(self, f"l{k}", nn.GRU(size, hidden_size))
            setattr(self, f"l{k}_reverse", nn.GRU(size, hidden_size))

    def __call__(self, x: mx.array) -> mx.array:  # [B, T, D] -> [B, T, 2H]
        for k in range(self.num_layers):
            x = fused_bigru(x, self[f"l{k}"], self[f"l{k}_reverse"])
        return x
