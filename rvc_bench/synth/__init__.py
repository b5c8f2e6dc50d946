"""Stage: the synthesizer (spec §5): content features [T, 256|768] + pitch -> waveform [T * upp] at 32/40/48 kHz.

config.py       SynthConfig (the voice checkpoint's positional config list + version + f0), presets per variant
                ("v1-32k" ... "v2-48k", "-nono") at sizes "full" and "tiny"
model_torch.py  twin in PyTorch (baseline, channels-first like upstream): Synthesizer.infer, load, prepare/run
model_mlx.py    twin in MLX (channels-last): same names and signature
convert.py      voice .pth -> checked torch state / MLX weights / .safetensors: read_voice, load_torch, load_mlx,
                convert_file
synthetic.py    seeded synthetic voice .pth files (ensure_checkpoint) and seeded inputs with injectable noise

Importing this package imports neither torch nor MLX.
"""

from rvc_bench.synth.config import NAMES, SIZES, VARIANTS, SynthConfig, preset

__all__ = ["NAMES", "SIZES", "VARIANTS", "SynthConfig", "preset"]
