"""ContentVec / HuBERT-base configuration (framework-free), frame arithmetic and long-audio windows.

Field values follow fairseq's HubertConfig defaults as RVC's hubert_base.pt uses them (spec §2).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rvc_bench.stage_config import StageConfig

SAMPLE_RATE = 16000  # Hz; the content encoder only ever sees 16 kHz mono
T_MAX_SECONDS = 41.0  # longest window the pipeline feeds in fp32 (spec §1, x_max of the fp32 row)

# (channels, kernel, stride) of the 7 feature-extractor convs: total stride 320 samples (50 Hz), receptive field 400.
_FULL_CONVS = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2


@dataclass(frozen=True)
class HubertConfig(StageConfig):
    conv_layers: tuple[tuple[int, int, int], ...] = _FULL_CONVS
    embed_dim: int = 768  # transformer width
    ffn_dim: int = 3072
    heads: int = 12
    layers: int = 12
    pos_conv_kernel: int = 128  # even: the last output step is dropped (SamePad)
    pos_conv_groups: int = 16
    final_dim: int = 256  # final_proj output (v1 features)
    num_label_embs: int = 504  # rows of the unused label_embs_concat (500 classes + 4 specials)
    v1_layer: int = 9  # RVC v1 reads this layer, then final_proj
    eps: float = 1e-5  # every LayerNorm / GroupNorm

    def __post_init__(self):
        object.__setattr__(self, "conv_layers", tuple(tuple(int(n) for n in layer) for layer in self.conv_layers))

    @property
    def conv_dim(self) -> int:
        return self.conv_layers[-1][0]

    @property
    def v2_layer(self) -> int:
        return self.layers

    # -- frame arithmetic (the convs have no padding) ------------------------------------------------------------
    @property
    def hop(self) -> int:
        """Samples per output frame (320 = 20 ms)."""
        hop = 1
        for _, _, s in self.conv_layers:
            hop *= s
        return hop

    @property
    def receptive_field(self) -> int:
        """Samples one output frame sees (400)."""
        rf = 1
        for _, k, s in reversed(self.conv_layers):
            rf = (rf - 1) * s + k
        return rf

    def num_frames(self, n_samples: int) -> int:
        """Frames the feature extractor yields for n_samples; 0 when the input is shorter than one frame."""
        n = n_samples
        for _, k, s in self.conv_layers:
            n = (n - k) // s + 1
            if n <= 0:
                return 0
        return n

    def windows(self, n_samples: int, max_seconds: float = T_MAX_SECONDS) -> list[tuple[int, int]]:
        """Sample spans [start, stop) of windows of at most max_seconds that tile the frame grid of one long call.

        Window w starts on a frame boundary and carries receptive_field - hop extra samples, so the windows together
        yield exactly num_frames(n_samples) frames, each computed from the same samples as in one call; only the
        transformer's context stops at a window edge.
        """
        per_window = (int(max_seconds * SAMPLE_RATE) - (self.receptive_field - self.hop)) // self.hop
        if per_window < 1:
            raise ValueError(f"max_seconds={max_seconds} is shorter than one frame")
        total = self.num_frames(n_samples)
        spans = []
        for first in range(0, total, per_window):
            count = min(per_window, total - first)
            spans.append((first * self.hop, (first + count - 1) * self.hop + self.receptive_field))
        return spans


_TINY = HubertConfig(
    conv_layers=((32, 10, 5),) + ((32, 3, 2),) * 4 + ((32, 2, 2),) * 2,
    embed_dim=64,
    ffn_dim=128,
    heads=4,
    layers=2,
    pos_conv_kernel=16,
    pos_conv_groups=4,
    final_dim=16,
    num_label_embs=24,
    v1_layer=1,
)
PRESETS: dict[str, HubertConfig] = {
    # hubert_base.pt / ContentVec legacy: 94.7 M parameters.
    "full": HubertConfig(),
    # CI size: same strides (same frame rate and window arithmetic), small widths; v1 reads layer 1 of 2.
    "tiny": _TINY,
    # The tiny pipeline's content encoder: "tiny" with the output widths a synthesizer takes (768 for v2, 256 for v1).
    # One 768-wide layer (v1 and v2 both read it) keeps it cheap on MLX's reference-BLAS CPU build.
    "tiny-768": dataclasses.replace(_TINY, embed_dim=768, final_dim=256, pos_conv_groups=16, layers=1, v1_layer=1),
}


def get_config(size: str | HubertConfig) -> HubertConfig:
    if isinstance(size, HubertConfig):
        return size
    try:
        return PRESETS[size]
    except KeyError:
        raise ValueError(f"unknown hubert config {size!r}: choose one of {', '.join(PRESETS)}") from None


# Fairseq's own names for the fields a checkpoint's cfg["model"] may state; used to cross-check a preset.
FAIRSEQ_FIELDS = {
    "encoder_layers": "layers",
    "encoder_embed_dim": "embed_dim",
    "encoder_ffn_embed_dim": "ffn_dim",
    "encoder_attention_heads": "heads",
    "conv_pos": "pos_conv_kernel",
    "conv_pos_groups": "pos_conv_groups",
    "final_dim": "final_dim",
}

# A Hugging Face folder's config.json (transformers' HubertConfig, as save_pretrained writes it): the fields that
# size the model, by our name, and the architecture flags shapes cannot reveal, with the only values RVC's
# ContentVec has (absent fields take transformers' defaults, which are these).
HF_FIELDS = {
    "hidden_size": "embed_dim",
    "intermediate_size": "ffn_dim",
    "num_attention_heads": "heads",
    "num_hidden_layers": "layers",
    "num_conv_pos_embeddings": "pos_conv_kernel",
    "num_conv_pos_embedding_groups": "pos_conv_groups",
    "classifier_proj_size": "final_dim",  # RVC's final_proj: Linear(hidden_size, classifier_proj_size)
    "layer_norm_eps": "eps",
}
HF_REQUIRED = {
    "model_type": "hubert",
    "feat_extract_norm": "group",  # GroupNorm on the first conv only (fairseq extractor_mode "default")
    "do_stable_layer_norm": False,  # post-LN transformer
    "conv_bias": False,
    "feat_extract_activation": "gelu",
    "hidden_act": "gelu",
    "feat_proj_layer_norm": True,
    "conv_pos_batch_norm": False,
}
