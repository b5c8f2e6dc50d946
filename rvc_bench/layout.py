"""Framework layout rules for moving torch weights to MLX, written once and tested once.

Every rule here is a fact about the two frameworks, not about a model: conv weights become channels-last, weight
norm is folded along an explicit dim, a torch GRU's biases are recombined into MLX's. Stage converters only hold
name tables and call these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint that does not match the model: the message names the key."""


# torch -> MLX weight layouts (MLX convolutions are channels-last).
def conv1d(w: np.ndarray) -> np.ndarray:
    """torch Conv1d [out, in/g, k] -> MLX [out, k, in/g]."""
    return np.ascontiguousarray(w.transpose(0, 2, 1))


def conv2d(w: np.ndarray) -> np.ndarray:
    """torch Conv2d [out, in, kh, kw] -> MLX [out, kh, kw, in]."""
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1))


def conv_transpose1d(w: np.ndarray) -> np.ndarray:
    """torch ConvTranspose1d [in, out, k] -> MLX [out, k, in] (no kernel flip)."""
    return np.ascontiguousarray(w.transpose(1, 2, 0))


def conv_transpose2d(w: np.ndarray) -> np.ndarray:
    """torch ConvTranspose2d [in, out, kh, kw] -> MLX [out, kh, kw, in] (no kernel flip)."""
    return np.ascontiguousarray(w.transpose(1, 2, 3, 0))


def fold_weight_norm(g: np.ndarray, v: np.ndarray, dim: int) -> np.ndarray:
    """w = g * v / ||v||, the norm taken over every axis except `dim`; computed in fp32."""
    g = np.asarray(g, dtype=np.float32)
    v = np.asarray(v, dtype=np.float32)
    axes = tuple(a for a in range(v.ndim) if a != dim % v.ndim)
    norm = np.sqrt(np.sum(v * v, axis=axes, keepdims=True))
    return g * v / norm


# The two key styles torch writes for weight norm, as (g suffix, v suffix): legacy hooks and torch>=2.1
# parametrizations.
WEIGHT_NORM_STYLES = {
    "legacy": (".weight_g", ".weight_v"),
    "parametrizations": (".parametrizations.weight.original0", ".parametrizations.weight.original1"),
}


def fold_weight_norms(state: Mapping[str, np.ndarray], dim_for: Callable[[str], int]) -> dict[str, np.ndarray]:
    """Replace every (g, v) pair, in either key style, by `<module>.weight`; `dim_for(module)` names the dim.

    A g without its v (or the reverse) is an error naming the key.
    """
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        for g_suffix, v_suffix in WEIGHT_NORM_STYLES.values():
            if key.endswith(g_suffix) or key.endswith(v_suffix):
                is_g = key.endswith(g_suffix)
                module = key[: -len(g_suffix if is_g else v_suffix)]
                partner = module + (v_suffix if is_g else g_suffix)
                if partner not in state:
                    raise CheckpointError(f"weight-norm key {key!r} has no partner {partner!r}")
                if is_g:
                    if module + ".weight" in state:
                        raise CheckpointError(f"key {module + '.weight'!r} and weight-norm key {key!r} both present")
                    out[module + ".weight"] = fold_weight_norm(value, state[partner], dim_for(module))
                break
        else:
            out[key] = value
    return out


def gru(
    weight_ih: np.ndarray, weight_hh: np.ndarray, bias_ih: np.ndarray, bias_hh: np.ndarray
) -> dict[str, np.ndarray]:
    """One torch GRU direction -> mlx.nn.GRU parameters.

    Both use gate order (r, z, n). MLX folds the hidden bias of r and z into `b` and keeps the n-gate hidden bias
    apart as `bhn`, because that one sits inside r * (W_hn h + b_hn).
    """
    hidden = weight_hh.shape[1]
    b = bias_ih.astype(np.float32).copy()
    b[: 2 * hidden] += bias_hh[: 2 * hidden]
    return {"Wx": weight_ih, "Wh": weight_hh, "b": b, "bhn": bias_hh[2 * hidden :].copy()}


def check_shapes(expected: Mapping[str, tuple], got: Mapping[str, np.ndarray], what: str) -> None:
    """Strict load check: every expected key present, nothing extra, every shape equal, every value finite (a NaN
    weight would turn the output into silence or noise, not an error). Errors name the key."""
    missing = sorted(set(expected) - set(got))
    if missing:
        raise CheckpointError(
            f"{what}: missing key {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    extra = sorted(set(got) - set(expected))
    if extra:
        raise CheckpointError(
            f"{what}: unexpected key {extra[0]!r}" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
        )
    for key, shape in expected.items():
        if tuple(got[key].shape) != tuple(shape):
            raise CheckpointError(f"{what}: key {key!r} has shape {tuple(got[key].shape)}, expected {tuple(shape)}")
    for key in expected:
        if not _all_finite(got[key]):
            raise CheckpointError(f"{what}: key {key!r} holds NaN or infinite values")


def _all_finite(a) -> bool:
    """numpy arrays, and torch tensors by duck typing (this module stays framework-free)."""
    if isinstance(a, np.ndarray):
        return not np.issubdtype(a.dtype, np.inexact) or bool(np.isfinite(a).all())
    return bool(a.isfinite().all()) if hasattr(a, "isfinite") else True
