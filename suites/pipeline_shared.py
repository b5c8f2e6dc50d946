"""What the pipeline's parity tests share (test_pipeline.py, test_pipeline_glue.py, test_pipeline_cli.py): the
tiny HuBERT's config, windows that split a 3.3 s clip into 3 chunks, the fixture clips, and spec §1.5's split
points by definition (the tiny models and indexes: test_bench_pipeline.py; the `tiny_index` fixture: conftest.py)."""

from __future__ import annotations

import numpy as np

from rvc_bench import pipeline, stages
from rvc_bench.audio import HOP
from rvc_bench.fixtures import generate
from rvc_bench.hubert import get_config

TINY_HUBERT = get_config(stages.PIPELINE_HUBERT["tiny"])
SPLIT_WINDOWS = pipeline.Windows(x_pad=0.5, x_query=0.3, x_center=1.2, x_max=1.5)  # a 3.3 s clip -> 3 chunks


def clip(seconds: float = 2.0, seed: int = 1) -> np.ndarray:
    return generate(seconds, seed=seed).audio


def energy_at(x: np.ndarray) -> np.ndarray:
    """Spec §1.5's 10 ms L1 energy at each sample: 160 shifted |x| sums of the reflect-padded audio."""
    xp = np.abs(np.pad(x.astype(np.float64), (HOP // 2, HOP // 2), mode="reflect"))  # |.| is exact: once is enough
    energy = np.zeros(x.shape[0])
    for i in range(HOP):
        energy += xp[i : i + x.shape[0]]
    return energy


def split_points_by_definition(x: np.ndarray, w: pipeline.Windows) -> list[int]:
    """Spec §1.5 literally: the first minimum of the 10 ms energy in each window."""
    energy = energy_at(x)
    cuts = []
    for t in range(w.t_center, x.shape[0], w.t_center):
        part = energy[t - w.t_query : t + w.t_query]
        cuts.append(t - w.t_query + int(np.flatnonzero(part == part.min())[0]))
    return cuts
