"""The variants on torch: dtype conversion with fp32 islands, dynamic int8 quantisation, the channels-last memory
format, torch.compile."""

from __future__ import annotations

import torch

from rvc_bench.variant_parts import NotApplicable, StageParts, Variant, VariantError, cast_inputs, cast_outputs, lookup

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _cast(x, dtype):
    return x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def _fp32_island(module: torch.nn.Module, dtype) -> None:
    """Keep `module` in fp32 inside a half model: its weights, its inputs, and its output cast back to `dtype`."""
    module.float()
    module.register_forward_pre_hook(lambda _m, args: tuple(_cast(a, torch.float32) for a in args))
    module.register_forward_hook(lambda _m, _a, out: _cast(out, dtype))


def apply(model, parts: StageParts, v: Variant) -> None:
    core = lookup(model, parts.core)
    if v.name in DTYPES:
        dtype = DTYPES[v.name]
        core.to(dtype)
        present = dict(core.named_modules())  # a voice without pitch has no NSF source
        for name in parts.keep_fp32:
            if name in present:
                _fp32_island(present[name], dtype)
        cast_outputs(model, parts, _cast, dtype, torch.float32)
        cast_inputs(model, parts, _cast, dtype)
        return
    if v.name == "channels-last":  # the convolutions' outputs follow their weights' layout
        if not any(isinstance(m, torch.nn.Conv2d) for m in core.modules()):
            raise NotApplicable("variant channels-last changes nothing here: no 2-D convolution")
        core.to(memory_format=torch.channels_last)
        return
    device = next(core.parameters()).device.type
    if v.name == "int8":
        if device != "cpu":
            raise VariantError(f"variant int8 (torch dynamic quantisation) runs on the CPU only, not {device}")
        torch.ao.quantization.quantize_dynamic(core, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        return
    for path in parts.torch_compile:  # "compiled": each module's forward, in place
        lookup(model, path).compile()
