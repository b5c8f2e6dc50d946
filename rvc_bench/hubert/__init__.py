"""Stage: ContentVec / HuBERT-base content features (spec §2).

config.py       HubertConfig (framework-free), presets "full" / "tiny" / "tiny-768", frame and window arithmetic
model_torch.py  twin in PyTorch: build(cfg), load(weights, cfg), HubertModel.features / features_windowed
model_mlx.py    twin in MLX (channels-last): the same
convert.py      the stage's files (fairseq or HF checkpoints, converted .safetensors): load_torch(path, config=...),
                load_mlx(path, config=...), convert_file(src, dst, config=...), recognise(obj);
                read(path, config) -> (canonical numpy state, cfg), to_mlx(state)
synthetic.py    seeded checkpoints in the real file formats: ensure_checkpoint(cache_dir, size)

Loading goes one way: convert.py reads files and hands numpy weights to a model module, which knows only its own
framework. Importing this package imports neither torch nor MLX.
"""

from rvc_bench.hubert.config import PRESETS, T_MAX_SECONDS, HubertConfig, get_config

__all__ = ["HubertConfig", "PRESETS", "T_MAX_SECONDS", "get_config"]
