"""Stage: the synthesizer (spec §5): content features [T, 256|768] + pitch -> waveform [T * upp] at 32/40/48 kHz.

config.py       SynthConfig (the voice checkpoint's positional config list + version + f0), presets per variant
                ("v1-32k" ... "v2-48k", "-nono") at sizes "full" and "tiny"
model_torch.py  twin in PyTorch (baseline, channels-first inside like upstream): build(cfg), load(weights, cfg),
                Synthesizer.infer, prepare/run (numpy in, numpy out)
model_mlx.py    twin in MLX (channels-last): the same names and signatures
convert.py      the stage's files: load_torch(path), load_mlx(path), convert_file(src, dst), recognise(obj);
                read_voice(path) -> VoiceCheckpoint (checked numpy state, cfg, metadata), to_mlx(state)
synthetic.py    seeded synthetic voice .pth files (ensure_checkpoint) and seeded inputs with injectable noise

Loading goes one way: convert.py reads files and hands numpy weights to a model module, which knows only its own
framework. Importing this package imports neither torch nor MLX.
"""

from rvc_bench.synth.config import NAMES, SIZES, VARIANTS, SynthConfig, preset

__all__ = ["NAMES", "SIZES", "VARIANTS", "SynthConfig", "preset"]
