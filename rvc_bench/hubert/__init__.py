"""Stage: ContentVec / HuBERT-base content features (spec §2).

config.py (framework-free config, presets "full"/"tiny", frame and window arithmetic), model_torch.py and
model_mlx.py (twins), convert.py (fairseq / HF checkpoints -> canonical state -> MLX safetensors), synthetic.py
(seeded checkpoints in the real file formats). Importing this package imports neither torch nor MLX.
"""

from rvc_bench.hubert.config import PRESETS, T_MAX_SECONDS, HubertConfig, get_config

__all__ = ["HubertConfig", "PRESETS", "T_MAX_SECONDS", "get_config"]
