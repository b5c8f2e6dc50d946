"""Seeded synthetic RMVPE checkpoints in the real `rmvpe.pt` format (a bare torch state dict, torch.save).

A random network gives a meaningless but deterministic pitch. To make it exercise everything the real one does:
- BatchNorm running statistics are the statistics the layer really sees (one pass in training mode over a
  fixture clip), then perturbed, with random affine parameters and a non-zero num_batches_tracked, so eval-mode
  BatchNorm does real work and a backend that ignores running stats fails parity;
- the GRU input weights are scaled up so the recurrent state moves with the input instead of idling near zero;
- the output bias is shifted so that, on a fixture clip, about half the frames peak above the 0.03 voicing
  threshold: both voiced and unvoiced decoding run, and peaks land on many different bins.

Seeded and deterministic for one torch build and BLAS: the calibration is a torch forward pass, so a different
BLAS (even LD_PRELOAD=libopenblas, which torch's CPU wheel partly picks up) changes the last bits of the file.
The twins are always compared on the same file, so this never affects parity.

Two more kinds exist to test what splits the sequence (chunked inference): the calibrated GRU forgets within a few
frames, so chunks that cut it still agree with one pass on it. "torch-init" is the network as upstream's RMVPE class
builds it (torch's default initialisation, untrained BatchNorm statistics), "long-memory" the same with the GRU's
update gates biased towards keeping their state (z = sigmoid(bias) ~ 0.998: a state decays over ~400 frames), so a
split that cuts the BiGRU shows.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import numpy as np

from rvc_bench.checkpoints import save_torch_checkpoint
from rvc_bench.fixtures import generate
from rvc_bench.rmvpe.config import THRESHOLD, RMVPEConfig, preset

GENERATOR_VERSION = 2  # bump when the recipe changes, so cached files are regenerated
CALIBRATION_SECONDS = 3.0  # fixture clip used to set BN statistics and the output bias
CALIBRATION_SEED = 1234  # its seed: distinct from the clips the tests use (seed 0)
GRU_INPUT_GAIN = 4.0  # x default init U(+-1/sqrt(H)) on the input weights
PEAK_LOGIT_STD = 1.0  # spread of per-frame peak logits: salience peaks ~0.01..0.1, few frames near the threshold
VOICED_FRACTION = 0.5  # share of calibration frames whose peak salience exceeds THRESHOLD
KINDS = ("calibrated", "torch-init", "long-memory")
LONG_MEMORY_Z_BIAS = 6.0  # added to the update gates' input bias: z ~ sigmoid(6) = 0.9975 keeps the state


def build_state(cfg: RMVPEConfig, seed: int = 0, kind: str = "calibrated") -> OrderedDict:
    """A seeded random E2E state dict (torch tensors, fp32) with the key set of upstream rmvpe.pt (kind: KINDS)."""
    import torch

    if kind not in KINDS:
        raise ValueError(f"unknown synthetic RMVPE kind {kind!r}: choose one of {', '.join(KINDS)}")
    if kind != "calibrated":
        return _uncalibrated_state(cfg, seed, long_memory=kind == "long-memory")

    from rvc_bench.mel.model_torch import MelSpectrogram
    from rvc_bench.rmvpe.model_torch import E2E, pad_frames

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = E2E(cfg)
        gen = torch.Generator().manual_seed(seed + 1)
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        with torch.no_grad():
            for bn in bns:
                bn.weight.copy_(torch.empty_like(bn.weight).uniform_(0.7, 1.3, generator=gen))
                bn.bias.copy_(0.1 * torch.randn(bn.bias.shape, generator=gen))
            gru = model.fc[0].gru
            for name, param in gru.named_parameters():
                if name.startswith("weight_ih"):
                    param.mul_(GRU_INPUT_GAIN)

            clip = generate(CALIBRATION_SECONDS, CALIBRATION_SEED)
            mel = MelSpectrogram()(torch.from_numpy(clip.audio).unsqueeze(0))  # [1, 128, T]
            mel = pad_frames(mel, mel.shape[-1])

            # 1) Running stats = what each layer sees (cumulative average over one pass, momentum=None).
            for bn in bns:
                bn.reset_running_stats()
                bn.momentum = None
            model.train()
            model(mel)
            for bn in bns:
                bn.momentum = cfg.bn_momentum
                std = bn.running_var.sqrt()
                bn.running_mean.add_(0.1 * std * torch.randn(std.shape, generator=gen))
                bn.running_var.mul_(torch.empty_like(std).uniform_(-0.3, 0.3, generator=gen).exp())
                bn.num_batches_tracked.fill_(int(torch.randint(1000, 100000, (1,), generator=gen)))
            model.eval()

            # 2) Output layer: scale so frame peaks spread by PEAK_LOGIT_STD, shift so the calibration clip's
            #    median frame peak sits at the threshold.
            linear = model.fc[1]
            features = model.cnn(model.unet(mel.transpose(-1, -2).unsqueeze(1))).transpose(1, 2).flatten(-2)
            peak = linear(model.fc[0](features))[0].max(dim=-1).values.numpy()
            gain = PEAK_LOGIT_STD / float(np.std(peak))
            linear.weight.mul_(gain)
            linear.bias.mul_(gain)
            target = math.log(THRESHOLD / (1 - THRESHOLD))  # logit of the threshold
            linear.bias.add_(float(target - gain * np.quantile(peak, 1 - VOICED_FRACTION)))
    # An OrderedDict of tensors, exactly what torch.save(model.state_dict()) writes.
    return OrderedDict((k, v.detach().clone().contiguous()) for k, v in model.state_dict().items())


def _uncalibrated_state(cfg: RMVPEConfig, seed: int, long_memory: bool) -> OrderedDict:
    """torch's default initialisation (what upstream's E2E is before its weights load); long_memory: update gates
    biased to keep the state. gate order in torch's GRU weights: reset, update, new (rows H..2H are the update)."""
    import torch

    from rvc_bench.rmvpe.model_torch import E2E

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = E2E(cfg)
    if long_memory:
        with torch.no_grad():
            for name, param in model.fc[0].gru.named_parameters():
                if name.startswith("bias_ih"):
                    param[cfg.gru_hidden : 2 * cfg.gru_hidden] += LONG_MEMORY_Z_BIAS
    return OrderedDict((k, v.detach().clone().contiguous()) for k, v in model.state_dict().items())


def checkpoint_path(cache_dir: str | Path, size: str, seed: int = 0, kind: str = "calibrated") -> Path:
    tag = "" if kind == "calibrated" else f"-{kind}"
    return Path(cache_dir) / "checkpoints" / f"rmvpe-{size}{tag}-seed{seed}-v{GENERATOR_VERSION}.pt"


def ensure_checkpoint(cache_dir: str | Path, size: str, seed: int = 0, kind: str = "calibrated") -> Path:
    """Path of the synthetic rmvpe.pt for a preset ("full" or "tiny"), seed and kind, generated on first use."""
    path = checkpoint_path(cache_dir, size, seed, kind)
    if not path.is_file():
        save_torch_checkpoint(path, build_state(preset(size), seed, kind))
    return path
