"""The variants on MLX: dtype conversion with fp32 islands, nn.quantize, mx.compile."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from rvc_bench.variant_parts import NotApplicable, StageParts, Variant, cast_inputs, cast_outputs, lookup, resolve

DTYPES = {"fp16": mx.float16, "fp16-all": mx.float16, "bf16": mx.bfloat16}
QUANT_BITS = {"q8": 8, "q4": 4}
GROUP_SIZE = 64  # nn.quantize's default


def _cast(x, dtype):
    return x.astype(dtype) if isinstance(x, mx.array) and mx.issubdtype(x.dtype, mx.floating) else x


def _fp32_island(module: nn.Module, dtype) -> None:
    """Keep `module` in fp32 inside a half model: its weights, its inputs, and its output cast back to `dtype`."""
    module.set_dtype(mx.float32)
    cls = type(module)

    def __call__(self, *args, **kwargs):
        out = cls.__call__(self, *(_cast(a, mx.float32) for a in args), **kwargs)
        return _cast(out, dtype)

    module.__class__ = type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__})


def apply(model, parts: StageParts, v: Variant) -> None:
    core = lookup(model, parts.core)
    if v.name in DTYPES:
        dtype = DTYPES[v.name]
        core.set_dtype(dtype)
        if v.name != "fp16-all":
            present = dict(core.named_modules())  # a voice without pitch has no NSF source
            for name in parts.keep_fp32:
                if name in present:
                    _fp32_island(present[name], dtype)
        cast_outputs(model, parts, _cast, dtype, mx.float32)
        cast_inputs(model, parts, _cast, dtype, every=v.name == "fp16-all")
        return
    if v.name in QUANT_BITS:
        fits = lambda _, m: isinstance(m, (nn.Linear, nn.Embedding)) and m.weight.shape[-1] % GROUP_SIZE == 0  # noqa: E731
        if not any(fits(n, m) for n, m in core.named_modules()):
            raise NotApplicable(f"variant {v.name} quantises nothing here: no Linear or Embedding {GROUP_SIZE} wide")
        nn.quantize(core, group_size=GROUP_SIZE, bits=QUANT_BITS[v.name], class_predicate=fits)
        return
    for path in parts.mlx_compile:  # "compiled"
        owner, attr = resolve(model, path)
        setattr(owner, attr, mx.compile(getattr(owner, attr)))
