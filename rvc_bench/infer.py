"""`rvc-bench infer`: one voice conversion of a file on one backend, as a user runs it.

VOICE + INPUT (any rate and channel count, read as upstream's ffmpeg loader reads it) -> OUT (.wav, .flac, .ogg) at
the voice's sample rate or --resample-sr. Everything that can be checked before the conversion is: a bad output path
costs nothing. Bad input of any kind is an InferError with a one-line message; the CLI prints it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from rvc_bench import audio, blas, pipeline, retrieval, stages, variants
from rvc_bench.backends import BackendError, get_backend
from rvc_bench.fileio import check_folder, check_output
from rvc_bench.layout import CheckpointError


class InferError(Exception):
    """Bad input (files, options, weights, audio): one line."""


def options(args) -> pipeline.Options:
    same = ("f0_up_key", "index_rate", "protect", "rms_mix_rate", "sid", "seed", "deterministic", "resample_sr")
    opts = pipeline.Options(**{k: getattr(args, k) for k in same})  # the options are named as upstream's
    opts.check()
    return opts


def synthetic_checkpoint(flag: str, stage, size: str) -> Path:
    from rvc_bench import fixtures

    cache = check_folder(fixtures.cache_dir(), "the fixture cache (RVC_BENCH_CACHE)")
    path = stage.checkpoint(cache, size)
    print(
        f"rvc-bench infer: no {flag} given: using the synthetic {size}-size checkpoint {path} (random weights, "
        f"generated into {cache})",
        file=sys.stderr,
    )
    return path


def load_models(args, backend) -> pipeline.Models:
    """The voice, HuBERT and RMVPE of `args` on `backend` (synthetic ones where asked), with a note where the voice
    was trained on another encoder's features."""
    from rvc_bench.synth.convert import DEFAULT_EMBEDDER, read_metadata

    hubert_preset = stages.PIPELINE_HUBERT[args.model_size]
    hubert, rmvpe = args.hubert, args.rmvpe
    if args.synthetic_models:
        hubert = hubert or synthetic_checkpoint("--hubert", stages.HUBERT, hubert_preset)
        rmvpe = rmvpe or synthetic_checkpoint("--rmvpe", stages.RMVPE, args.model_size)
    models = pipeline.load_models(backend, args.voice, hubert, rmvpe, hubert_preset)
    if args.tile_frames is not None:
        models.synth.tile_frames = args.tile_frames
    embedder = read_metadata(args.voice).get("embedder_model", DEFAULT_EMBEDDER)
    if embedder != DEFAULT_EMBEDDER:  # the features must come from the encoder the voice was trained on
        print(
            f"rvc-bench infer: note: {args.voice} was trained on {embedder!r} features (its embedder_model), "
            f"not ContentVec's: --hubert must be that encoder, or the conversion is wrong",
            file=sys.stderr,
        )
    return models


def backend_text(args, backend) -> str:
    """What ran, for the summary line: the backend and device, and its BLAS or execution providers."""
    if args.backend == "onnx":
        return f"{backend.label} (onnxruntime {backend.ort.__version__}, {' + '.join(backend.providers)})"
    if backend.device == "cpu":
        used = blas.mlx_blas_in_process()[0] if args.backend == "mlx" else blas.torch_blas_in_process()
        return f"{backend.label} (BLAS: {used})"
    return backend.label


def convert_file(args) -> str:
    """Convert args.input with args.voice into args.output (atomic); returns the summary line."""
    from rvc_bench.measure import keep_freed_memory

    keep_freed_memory()  # as the benchmarks run (rvc_bench.measure): each window reuses the last one's memory
    try:
        opts = options(args)
        out = check_output(args.output, [args.voice, args.input, args.index, args.hubert, args.rmvpe], args.force)
        audio.output_format(out)
        if not Path(args.voice).is_file():
            raise InferError(f"voice model not found: {args.voice}")
        x, source = audio.read_audio(args.input)
        optimise = variants.from_flags(args.backend, args.dtype, args.quantize, args.compile, args.channels_last)
        backend = get_backend(args.backend, getattr(args, f"{args.backend}_device"))
        index = retrieval.load_index(args.index) if args.index else None  # read even when --index-rate 0 skips it
        models = load_models(args, backend)
        for name in optimise:
            variants.apply_models(models, name)
        t0 = time.perf_counter()
        result = pipeline.convert(models, x, opts, index)
        seconds = time.perf_counter() - t0
        if not np.any(result.audio):
            raise InferError(
                f"{args.voice}: converting {args.input} gave silence (every sample zero); {out} not written"
            )
        audio.write_audio(out, result.audio, result.sr)  # the int16 samples RVC returns; atomic
    except (
        audio.AudioError,
        CheckpointError,
        retrieval.RetrievalError,
        pipeline.OptionError,
        BackendError,
        variants.VariantError,
    ) as err:
        raise InferError(str(err)) from None
    ran = backend_text(args, backend) + "".join(f" + {n}" for n in optimise)
    return (
        f"rvc-bench infer: converted {x.size / audio.SAMPLE_RATE:.2f} s ({source} -> {audio.SAMPLE_RATE} Hz mono) "
        f"in {seconds:.2f} s on {ran} -> {out} ({result.sr} Hz, {result.seconds:.2f} s, "
        f"{len(result.cuts) + 1} chunk(s))"
    )
