"""Synthesizer on ONNX Runtime: the torch twin's `infer` exported whole (text encoder with relative attention, prior
sample, reversed flow, NSF-HiFiGAN) with a dynamic frame axis, and run with the twins' `infer` call; numpy in and
out. Both random draws are graph inputs, so parity is deterministic:

  rvc-bench layout (our exports)   phone [1, T, C], phone_lengths [1], pitch [1, T] int64, pitchf [1, T] Hz, sid [1],
                                   eps [1, T, inter], sine_noise [1, T * upp] -> audio [1, 1, T * upp]
                                   ("-nono" voices: phone, phone_lengths, sid, eps)
  upstream layout (RVC's export)   phone, phone_lengths, pitch, pitchf, ds [1], rnd [1, inter, T] -> audio

An upstream file (SynthesizerTrnMsNSFsidM, pitch voices only) multiplies rnd by nothing where the twins scale eps by
0.66666, so the runner passes rnd = 0.66666 * eps (channels first); it draws the NSF source noise inside the graph,
so its output cannot be reproduced and passing `sine_noise` to it is an error. It carries no config: pass the
voice's SynthConfig.

The export traces relative attention on more frames than its window (T > 11), so T >= MIN_FRAMES is required; the
pipeline's chunks are at least 2 x_pad = 200 frames.

Streaming (skip_head / return_length, rt spec §4.5) needs the decoder on the returned frames only, which one graph
with a dynamic frame axis cannot crop to: so each export has two more graphs beside it (PARTS), the prior (text
encoder, prior sample, reversed flow -> z, g) and the decoder (z, g, f0, source noise -> audio), and the runner
crops z between them. A file without them (upstream's) emulates the head on the whole graph (slower, and its
decoder sees the frames around the returned ones).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np

from rvc_bench import onnx_graph
from rvc_bench.onnx_graph import OnnxModelError, Port
from rvc_bench.synth.config import PRIOR_NOISE_SCALE, WINDOW_SIZE, SynthConfig, stream_heads

STAGE = "synth"
MIN_FRAMES = WINDOW_SIZE + 2
EXAMPLE_FRAMES = 50  # export example; the frame axis is dynamic


def ports(cfg: SynthConfig, layout: str = "rvc-bench") -> tuple[tuple[Port, ...], tuple[Port, ...]]:
    frames = lambda name, dtype: Port(name, dtype, (1, "frames"))  # noqa: E731
    phone = (Port("phone", "float32", (1, "frames", cfg.phone_channels)), Port("phone_lengths", "int64", (1,)))
    audio = (Port("audio", "float32", (1, 1, "samples")),)
    pitch = (frames("pitch", "int64"), frames("pitchf", "float32"))
    if layout == "upstream":
        return (
            *phone,
            *pitch,
            Port("ds", "int64", (1,)),
            Port("rnd", "float32", (1, cfg.inter_channels, "frames")),
        ), audio
    eps = (Port("sid", "int64", (1,)), Port("eps", "float32", (1, "frames", cfg.inter_channels)))
    if not cfg.f0:
        return (*phone, *eps), audio
    return (*phone, *pitch, *eps, Port("sine_noise", "float32", (1, "samples"))), audio


def examples(cfg: SynthConfig, min_frames: int) -> tuple[dict, dict]:
    """Example tensors of every graph input (the graphs' and the streaming graphs'), and their dynamic axes: the
    frames (at least min_frames) and the source noise's upp x frames."""
    import torch

    g, t = torch.Generator().manual_seed(0), EXAMPLE_FRAMES
    example = {
        "phone": torch.randn(1, t, cfg.phone_channels, generator=g),
        "phone_lengths": torch.tensor([t]),
        "pitch": torch.randint(1, 256, (1, t), generator=g),
        "pitchf": 100 + 200 * torch.rand(1, t, generator=g),
        "sid": torch.tensor([0]),
        "eps": torch.randn(1, t, cfg.inter_channels, generator=g),
        "sine_noise": torch.randn(1, t * cfg.upp, generator=g),
        "z": torch.randn(1, cfg.inter_channels, t, generator=g),
        "g": torch.randn(1, cfg.gin_channels, 1, generator=g),
    }
    frames = torch.export.Dim("frames", min=min_frames)
    dims = {n: {1: frames} for n in ("phone", "pitch", "pitchf", "eps")}
    dims |= {"phone_lengths": None, "sid": None, "g": None, "z": {2: frames}, "sine_noise": {1: cfg.upp * frames}}
    return example, dims


def export(model, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Torch Synthesizer (rvc_bench.synth.model_torch) -> ONNX at `path`, rvc-bench layout."""
    import torch

    cfg = model.cfg

    class Infer(torch.nn.Module):  # forward's parameters are the graph's input names
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, phone, phone_lengths, pitch, pitchf, sid, eps, sine_noise):
            return self.model.infer(phone, phone_lengths, pitch, pitchf, sid, eps, sine_noise)

    class InferNoPitch(Infer):
        def forward(self, phone, phone_lengths, sid, eps):
            return self.model.infer(phone, phone_lengths, sid=sid, eps=eps)

    example, dims = examples(cfg, MIN_FRAMES)
    inputs, outputs = ports(cfg)
    names = [p.name for p in inputs]
    return onnx_graph.export(
        Infer() if cfg.f0 else InferNoPitch(),
        tuple(example[n] for n in names),
        path,
        inputs,
        outputs,
        {n: dims[n] for n in names},
        {"stage": STAGE, "variant": cfg.name, "config": cfg.to_dict(), **(metadata or {})},
    )


PARTS = ("prior", "decoder")


def part_path(path: str | os.PathLike, part: str) -> Path:
    """The streaming graph `part` beside the export at `path`."""
    return Path(path).with_suffix(f".{part}.onnx")


def part_ports(cfg: SynthConfig, part: str) -> tuple[tuple[Port, ...], tuple[Port, ...]]:
    z, g = Port("z", "float32", (1, cfg.inter_channels, "frames")), Port("g", "float32", (1, cfg.gin_channels, 1))
    if part == "prior":
        inputs, _ = ports(cfg)
        return tuple(p for p in inputs if p.name not in ("pitchf", "sine_noise")), (z, g)
    f0 = (Port("pitchf", "float32", (1, "frames")), Port("sine_noise", "float32", (1, "samples"))) if cfg.f0 else ()
    return (z, g, *f0), ports(cfg)[1]


def export_part(model, part: str, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """One streaming graph (PARTS) of a torch Synthesizer -> ONNX at `path`: the prior gives z for every frame
    (masked by phone_lengths), the decoder takes z masked."""
    import torch

    cfg = model.cfg

    class Prior(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, phone, phone_lengths, pitch, sid, eps):
            z, _, g, _ = self.model.prior(phone, phone_lengths, pitch, sid, eps)
            return z, g

    class PriorNoPitch(Prior):
        def forward(self, phone, phone_lengths, sid, eps):
            return super().forward(phone, phone_lengths, None, sid, eps)

    class Decoder(Prior):
        def forward(self, z, g, pitchf, sine_noise):
            return self.model.dec(z, g, pitchf, sine_noise, None, self.model.tile_frames)

    class DecoderNoPitch(Prior):
        def forward(self, z, g):
            return self.model.dec(z, g, None, None, None, self.model.tile_frames)

    example, dims = examples(cfg, MIN_FRAMES if part == "prior" else 2)
    inputs, outputs = part_ports(cfg, part)
    names = [p.name for p in inputs]
    return onnx_graph.export(
        {("prior", True): Prior, ("prior", False): PriorNoPitch, ("decoder", True): Decoder}.get(
            (part, cfg.f0), DecoderNoPitch
        )(),
        tuple(example[n] for n in names),
        path,
        inputs,
        outputs,
        {n: dims[n] for n in names},
        {"stage": STAGE, "part": part, "variant": cfg.name, "config": cfg.to_dict(), **(metadata or {})},
    )


def export_path(checkpoint: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """Where the export of a voice `.pth` is cached."""
    return onnx_graph.export_path(cache_dir, STAGE, Path(checkpoint).stem, checkpoint)


def ensure(checkpoint: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """The cached export and its streaming graphs, made in this process from the torch twin on first use (imports
    torch)."""
    from rvc_bench.synth.convert import load_torch

    model = functools.cache(lambda: load_torch(checkpoint))
    path = onnx_graph.cached_export(
        cache_dir, STAGE, Path(checkpoint).stem, checkpoint, lambda path, meta: export(model(), path, meta)
    )
    meta = onnx_graph.source_metadata(checkpoint)
    for part in PARTS:
        if not part_path(path, part).is_file():
            export_part(model(), part, part_path(path, part), meta)
    return path


def exported(checkpoint: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """The cached export, made in a child process on first use (this process imports no torch); its streaming
    graphs are written after it, so the last of them stands for all."""
    path = export_path(checkpoint, cache_dir)
    onnx_graph.ensure_exported(part_path(path, PARTS[-1]), __name__, checkpoint, cache_dir)
    return path


class Synthesizer:
    """`infer` as the twins': phone [B, T, C], phone_lengths [B] (None: every frame valid), pitch [B, T] and nsff0
    [B, T] (pitch voices), sid [B], eps [B, T, inter], sine_noise [B, T * upp] -> audio [B, 1, T * upp]."""

    def __init__(self, path: str | os.PathLike, backend, cfg: SynthConfig | None = None):
        self.backend, self.path = backend, Path(path)
        self.session, self.meta = onnx_graph.open_session(path, backend, STAGE)
        names = {i.name for i in self.session.get_inputs()}
        self.layout = "upstream" if not self.meta and "rnd" in names else "rvc-bench"
        if self.meta:
            cfg = SynthConfig.from_dict(json.loads(self.meta["config"]))
        elif cfg is None:
            raise OnnxModelError(
                f"{path}: not an rvc-bench export, so it carries no synthesizer config: pass the "
                "voice's SynthConfig (e.g. read from its .pth)"
            )
        if self.layout == "upstream" and not cfg.f0:
            raise OnnxModelError(f"{path}: upstream's ONNX synthesizer is a pitch model, but the config is {cfg.name}")
        self.cfg = cfg
        inputs, outputs = ports(cfg, self.layout)
        onnx_graph.check_ports(self.session.get_inputs(), inputs, "input", str(path))
        onnx_graph.check_ports(self.session.get_outputs(), outputs, "output", str(path))
        self.parts = {}  # the streaming graphs, where the export has them
        if self.layout == "rvc-bench" and all(part_path(path, p).is_file() for p in PARTS):
            for part in PARTS:
                self.parts[part], _ = onnx_graph.open_session(part_path(path, part), backend, STAGE)
                inputs, outputs = part_ports(cfg, part)
                onnx_graph.check_ports(self.parts[part].get_inputs(), inputs, "input", str(part_path(path, part)))
                onnx_graph.check_ports(self.parts[part].get_outputs(), outputs, "output", str(part_path(path, part)))

    @property
    def injects_sine_noise(self) -> bool:
        """Whether the NSF source noise is an input (reproducible output) rather than drawn inside the graph."""
        return self.layout == "rvc-bench"

    def infer(
        self,
        phone,
        phone_lengths=None,
        pitch=None,
        nsff0=None,
        sid=None,
        eps=None,
        sine_noise=None,
        skip_head=None,
        return_length=None,
    ) -> np.ndarray:
        """The twins' `infer`. Streaming (skip_head, return_length) runs the prior on all T frames and the decoder
        on the returned ones (the twins' decoder input: the flow's receptive field ends at fh); without the
        streaming graphs it is emulated on the whole graph (eps zero before fh, the source noise zero outside the
        returned frames; the returned frames cut out), whose decoder and NSF sine phase see the frames around the
        returned ones, which the twins' do not, at the cost of T frames."""
        fh, _ = stream_heads(skip_head, return_length)
        cut = None if skip_head is None else slice(skip_head, skip_head + return_length)
        if cut is not None and eps is not None:
            eps = np.pad(np.asarray(eps, np.float32), ((0, 0), (fh, 0), (0, 0)))
        if cut is not None and not self.parts:
            upp, n = self.cfg.upp, np.asarray(phone).shape[1]
            if sine_noise is not None:
                sine_noise = np.pad(
                    np.asarray(sine_noise, np.float32),
                    ((0, 0), (skip_head * upp, (n - skip_head - return_length) * upp)),
                )
            audio = self.infer(phone, phone_lengths, pitch, nsff0, sid, eps, sine_noise)
            return audio[..., skip_head * upp : (skip_head + return_length) * upp]
        cfg = self.cfg
        phone = np.asarray(phone, dtype=np.float32)
        b, t = phone.shape[:2]
        if t < MIN_FRAMES:
            raise ValueError(f"the ONNX synthesizer needs at least {MIN_FRAMES} frames, got {t}")
        if cfg.f0 and (pitch is None or nsff0 is None):
            raise ValueError("this is a pitch model: pass pitch and nsff0")
        if sine_noise is not None and not self.injects_sine_noise:
            raise ValueError(
                "this upstream-exported synthesizer draws its NSF noise inside the graph: sine_noise "
                "cannot be injected (its output is not reproducible)"
            )
        sid = np.zeros(b, np.int64) if sid is None else np.asarray(sid, np.int64)
        if phone_lengths is None:
            phone_lengths = np.full(b, t, np.int64)  # all frames valid: a mask of ones, as the twins' None
        if eps is None:  # the twins draw these when not given; so does upstream's ONNX inference
            eps = np.random.standard_normal((b, t, cfg.inter_channels)).astype(np.float32)
        if sine_noise is None and cfg.f0 and self.injects_sine_noise:
            frames = t if cut is None else return_length  # streaming: the returned frames' noise only
            sine_noise = np.random.standard_normal((b, frames * cfg.upp)).astype(np.float32)
        out = []
        for i in range(b):
            feed = {"phone": phone[i : i + 1], "phone_lengths": np.asarray(phone_lengths, np.int64)[i : i + 1]}
            if cfg.f0:
                feed.update(
                    pitch=np.asarray(pitch, np.int64)[i : i + 1], pitchf=np.asarray(nsff0, np.float32)[i : i + 1]
                )
            if self.layout == "upstream":
                rnd = np.float32(PRIOR_NOISE_SCALE) * np.asarray(eps, np.float32)[i : i + 1].transpose(0, 2, 1)
                feed.update(ds=sid[i : i + 1], rnd=np.ascontiguousarray(rnd))
            else:
                feed.update(sid=sid[i : i + 1], eps=np.asarray(eps, np.float32)[i : i + 1])
                if cfg.f0:
                    feed["sine_noise"] = np.asarray(sine_noise, np.float32)[i : i + 1]
            out.append(self.session.run(None, feed)[0] if cut is None else self._head(feed, cut))
        return np.concatenate(out)

    def _head(self, feed: dict, cut: slice) -> np.ndarray:
        """One item's frames `cut` through the streaming graphs, from the whole graph's feed (eps [1, T, inter],
        the source noise of the returned frames only): the prior on every frame, the decoder on z's cut."""
        z, g = self.parts["prior"].run(None, {k: v for k, v in feed.items() if k not in ("pitchf", "sine_noise")})
        decoder = {"z": np.ascontiguousarray(z[..., cut]), "g": g}
        if self.cfg.f0:
            decoder |= {"pitchf": feed["pitchf"][:, cut], "sine_noise": feed["sine_noise"]}
        return self.parts["decoder"].run(None, decoder)[0]


def load(path: str | os.PathLike, backend, cfg: SynthConfig | None = None) -> Synthesizer:
    """An exported (or upstream, with `cfg`) synthesizer .onnx on an OnnxBackend."""
    return Synthesizer(path, backend, cfg)


def prepare(inputs) -> dict:
    """SynthInputs (time-major numpy) -> infer() keyword arguments, batch 1, as the twins' prepare."""
    b = lambda a: np.ascontiguousarray(a)[None]  # noqa: E731
    return dict(
        phone=b(inputs.phone),
        pitch=b(inputs.pitch),
        nsff0=b(inputs.pitchf),
        eps=b(inputs.eps),
        sine_noise=b(inputs.sine_noise),
    )


def run(model: Synthesizer, inputs) -> dict:
    """One call on SynthInputs; returns {"audio": [T * upp]} (the graph has no intermediate outputs). An upstream
    graph draws its own NSF noise, so the inputs' sine_noise is not passed to it."""
    kwargs = prepare(inputs)
    if not model.injects_sine_noise:
        kwargs["sine_noise"] = None
    return {"audio": model.infer(**kwargs).reshape(-1)}
