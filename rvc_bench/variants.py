"""Optimisation variants of a stage (issue 21): half precision, quantised weights, compiled graphs, the best torch.

A variant changes a loaded stage's runner in place of the fp32 eager default: the store names it in its `variant`
column (`<stage variant>+<name>`) and its `dtype` column. This module is the registry and imports no framework; each
backend's way of applying a variant is in variant_<backend>.py (what they share: variant_parts.py), imported when a
variant is applied there.

Half precision keeps in fp32 what needs it, where upstream keeps it or measurement shows half breaks it: the log-mel
(RMVPE's front end runs fp32 and its output is cast), normalisation statistics computed over time (HuBERT's first
GroupNorm: its mean over 80 000 samples per second), the NSF source (the sine phase is a running sum over the chunk)
and the f0 the synthesizer is given (fp16 holds 400 Hz to 0.25 Hz, 1 cent). `fp16-all` keeps none of them, to show
what the exceptions buy.
"""

from __future__ import annotations

import numpy as np

from rvc_bench.variant_parts import NotApplicable, StageParts, Variant, VariantError

FP32 = "fp32"
BENCH = "benchmark"  # the tolerance table's check of the fp32 rows (tolerances.BENCHMARK)


VARIANTS = {
    v.name: v
    for v in (
        Variant(
            "fp16",
            "float16",
            ("mlx", "torch", "onnx"),
            "float16 weights and activations, fp32 where needed (ONNX Runtime: its float16 converter, CumSum in fp32)",
            "1.3-1.5x",
        ),
        Variant(
            "bf16", "bfloat16", ("mlx", "torch"), "bfloat16 weights and activations, fp32 where needed", "1.3-1.5x"
        ),
        Variant("fp16-all", "float16", ("mlx",), "float16 past the log-mel, no fp32 exceptions", "1.3-1.5x"),
        Variant("q8", "int8 weights", ("mlx",), "MLX nn.quantize, 8 bits, group 64, Linear/Embedding", "1.5-2x"),
        Variant("q4", "int4 weights", ("mlx",), "MLX nn.quantize, 4 bits, group 64, Linear/Embedding", "1.5-2x"),
        Variant(
            "int8",
            "int8 weights",
            ("torch", "onnx"),
            "dynamic int8 quantisation of the Linear layers (torch.ao on the CPU; ONNX Runtime's quantize_dynamic "
            "on MatMul/Gemm)",
        ),
        Variant(
            "compiled", "float32", ("mlx", "torch"), "mx.compile / torch.compile (inductor) of the forward", "1.2-1.3x"
        ),
        # A memory layout or a graph level changes which kernels run, not the arithmetic asked for: fp32 bounds.
        Variant(
            "channels-last",
            "float32",
            ("torch",),
            "torch.channels_last memory format for the 2-D convolutions (RMVPE's U-Net): oneDNN's NHWC kernels",
            "",
            BENCH,
        ),
        Variant(
            "ort-extended", "float32", ("onnx",), "ONNX Runtime graph optimisation EXTENDED (default ALL)", "", BENCH
        ),
        Variant("ort-basic", "float32", ("onnx",), "ONNX Runtime graph optimisation BASIC (default ALL)", "", BENCH),
        Variant("ort-none", "float32", ("onnx",), "ONNX Runtime graph optimisation disabled (default ALL)", "", BENCH),
    )
}


PARTS = {
    "hubert": StageParts(
        keep_fp32=("feature_extractor.conv_layers.0.2",),
        entry="features",
        cast_args=(0,),
        mlx_compile=("features",),
        torch_compile=("feature_extractor", "encoder"),
    ),
    "rmvpe": StageParts(
        core="model",
        half_out=("mel",),
        fp32_out=("salience",),
        mlx_compile=("model.cnn_features",),
        torch_compile=("model.unet", "model.cnn"),
    ),
    "synth": StageParts(
        keep_fp32=("dec.m_source",),
        entry="infer",
        cast_args=(0, 5, 6),
        mlx_compile=("dec.filter",),
        torch_compile=("enc_p", "flow", "dec.conv_pre", "dec.ups", "dec.resblocks", "dec.conv_post"),
        onnx_fp32_inputs=("pitchf",),
    ),
}


SEPARATOR = "+"  # a stored variant "<stage variant>+<name>" is that row with optimisation variant <name>


def of_row(variant: str) -> str:
    """The optimisation variant of a stored row's `variant` (fp32 when it names none)."""
    return variant.rpartition(SEPARATOR)[2] if SEPARATOR in variant else FP32


def optimised(row_variants) -> np.ndarray:
    """Which stored rows (their `variant` values) are optimisation variants, as a boolean mask."""
    return np.array([of_row(v) != FP32 for v in row_variants], dtype=bool)


def check_of(variant: str) -> str:
    """The tolerance table's check a stored row (its `variant`) is held to."""
    return tolerance_check(of_row(variant))


def tolerance_check(name: str) -> str:
    """The tolerance table's check of variant `name`: "benchmark" for fp32, else the variant's own (default
    "variant-<name>")."""
    if name == FP32:
        return BENCH
    return (VARIANTS[name].check if name in VARIANTS else "") or f"variant-{name}"


def get(name: str) -> Variant:
    if name not in VARIANTS:
        raise VariantError(f"unknown variant {name!r}: choose from {FP32}, {', '.join(VARIANTS)}")
    return VARIANTS[name]


def parse(text: str) -> tuple[str, ...]:
    """`--variants fp16,q8` -> the names (fp32, the default row, may be listed too)."""
    names = tuple(dict.fromkeys(filter(None, (n.strip() for n in text.split(",")))))
    for n in names:
        if n != FP32:
            get(n)
    return names or (FP32,)


def check(name: str, stage: str, backend: str) -> Variant | None:
    """The variant, after checking that `backend` runs it on `stage` (None: fp32)."""
    if name == FP32:
        return None
    v = get(name)
    if backend not in v.backends:
        raise VariantError(f"variant {name} does not run on {backend} (it runs on {', '.join(v.backends)})")
    if stage not in PARTS:
        raise VariantError(f"variant {name} does not apply to the {stage} stage")
    return v


def apply(runner, stage: str, name: str):
    """The runner (rvc_bench.stages.Runner; for stage "pipeline" a pipeline.Models) with variant `name` applied to
    its model (each network); fp32: unchanged."""
    if stage == "pipeline":
        apply_models(runner, name)
    else:
        apply_model(runner.model, stage, name, runner.backend.name)
    return runner


def apply_models(models, name: str) -> None:
    """Variant `name` applied to each network of a pipeline (rvc_bench.pipeline.Models); a quantisation skips a
    network with no layer it takes (a memory layout, one with no 2-D convolution), and is refused only where no
    network has one."""
    skipped = []
    networks = [s for s in ("hubert", "rmvpe", "synth") if getattr(models, s) is not None]
    for stage in networks:
        try:
            apply_model(getattr(models, stage), stage, name, models.backend.name)
        except NotApplicable as err:
            skipped.append(err)
    if networks and len(skipped) == len(networks):
        raise skipped[0]


def apply_model(model, stage: str, name: str, backend: str) -> None:
    """Variant `name` applied in place to a stage's framework model (Stage.model) on `backend`."""
    v = check(name, stage, backend)
    if v is None:
        return
    if backend == "mlx":
        from rvc_bench import variant_mlx as impl
    elif backend == "onnx":
        from rvc_bench import variant_onnx as impl
    else:
        from rvc_bench import variant_torch as impl
    impl.apply(model, PARTS[stage], v)


def from_flags(
    backend: str, dtype: str | None, quantize: int | None, compile_: bool, channels_last: bool
) -> tuple[str, ...]:
    """`infer`'s --dtype / --quantize / --channels-last / --compile -> the variants to apply, in that order (each one
    checked on `backend`, so a combination it cannot run is refused with one line)."""
    names = []
    if dtype is not None:
        names.append({"float16": "fp16", "bfloat16": "bf16"}[dtype])
    if quantize is not None:
        dynamic = backend in VARIANTS["int8"].backends  # torch's and ONNX Runtime's dynamic quantisation
        if dynamic and quantize != 8:
            raise VariantError(f"--quantize {quantize}: {backend}'s dynamic quantisation is 8-bit only")
        names.append("int8" if dynamic else f"q{quantize}")
    if channels_last:
        names.append("channels-last")
    if compile_:
        names.append("compiled")
    for name in names:
        v = get(name)
        if backend not in v.backends:
            raise VariantError(f"{backend} cannot run {name} ({v.what}); it runs on {', '.join(v.backends)}")
    return tuple(names)
