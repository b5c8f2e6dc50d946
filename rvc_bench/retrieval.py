"""Feature retrieval (spec §4): blend each content-feature frame with its nearest neighbours in a voice's faiss index.

An RVC `.index` is a faiss IVF-Flat index (L2) over the voice's training features (256-d for v1, 768-d for v2),
stored with nprobe = 1; the database is read back with reconstruct_n. Per frame the k = 8 nearest stored vectors are
averaged with weights (1 / squared distance)^2, normalised per frame, and mixed in with `rate`.

faiss (package faiss-cpu, a dependency) is imported only when an index is used, so a broken install fails there. The
weighting and blending are plain numpy, so they are shared by both backends and testable without faiss.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from rvc_bench.fileio import atomic_write_bytes

K = 8  # neighbours per frame
DEFAULT_RATE = 0.75  # the WebUI's default index_rate


class RetrievalError(ValueError):
    """An index that cannot be used (faiss missing, unreadable file, wrong dimension); one-line message."""


def _faiss():
    try:
        import faiss
    except ImportError:
        raise RetrievalError("using an index needs faiss: pip install faiss-cpu") from None
    return faiss


# ---------------------------------------------------------------------------------------------------------------
# The math (numpy): weights and blend


def neighbour_weights(score: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """[F, k] squared L2 distances and ids -> [F, k] weights (1/score)^2 normalised per row (float64).

    Guards, where upstream would produce inf/NaN: an exact match (score 0) takes the whole weight of its row (shared
    equally between exact matches); slots faiss left empty (id -1, fewer than k vectors in the probed list) get
    weight 0; a row with no neighbour at all gets all-zero weights (the caller keeps the input frame). Computed as
    (min score / score)^2 before normalising: the same ratios, without float overflow for tiny distances.
    """
    score = np.asarray(score, dtype=np.float64)
    valid = (np.asarray(ix) >= 0) & np.isfinite(score)
    s = np.where(valid, np.maximum(score, 0.0), np.inf)
    s_min = s.min(axis=1, keepdims=True)  # inf for a row without neighbours
    exact = valid & (s == 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(valid, (s_min / s) ** 2, 0.0)
    w = np.where(exact.any(axis=1, keepdims=True), exact.astype(np.float64), w)
    w = np.nan_to_num(w, nan=0.0)
    total = w.sum(axis=1, keepdims=True)
    return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


def blend(feats: np.ndarray, database: np.ndarray, score: np.ndarray, ix: np.ndarray, rate: float) -> np.ndarray:
    """feats [F, C] -> rate * retrieved + (1 - rate) * feats, retrieved = sum_k w_k database[ix_k] (float32)."""
    feats = np.asarray(feats, dtype=np.float32)
    w = neighbour_weights(score, ix).astype(np.float32)  # [F, k]
    retrieved = np.einsum("fk,fkc->fc", w, database[np.maximum(ix, 0)])  # [F, C]
    found = w.sum(axis=1) > 0
    retrieved[~found] = feats[~found]  # no neighbour: leave the frame as it is
    return (rate * retrieved + (1.0 - rate) * feats).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# The index file


class FeatureIndex:
    """A loaded RVC index: the faiss index (searched as stored, nprobe from the file) and its database [n, d]."""

    def __init__(self, index, path: str = "index"):
        self.index = index
        self.path = path
        self.dim = int(index.d)
        if index.ntotal == 0:
            name = Path(path).name
            hint = (
                f": RVC's 'trained_' index is the empty trained quantizer; pass the 'added_' file trained beside it "
                f"({name.replace('trained', 'added', 1)})"
                if "trained" in name
                else ""
            )
            raise RetrievalError(f"{path}: the index holds no vectors{hint}")
        self.database = index.reconstruct_n(0, index.ntotal).astype(np.float32, copy=False)  # [n, d]

    @property
    def nprobe(self) -> int | None:
        ivf = _faiss().try_extract_index_ivf(self.index)
        return None if ivf is None else int(ivf.nprobe)

    def search(self, feats: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
        """[F, d] float32 -> (squared L2 distances [F, k], ids [F, k])."""
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[1] != self.dim:
            raise RetrievalError(
                f"{self.path}: index vectors are {self.dim}-d but the content features are "
                f"{feats.shape[-1]}-d (a v1 index with a v2 voice, or the other way round?)"
            )
        return self.index.search(feats, k)

    def blend(self, feats: np.ndarray, rate: float) -> np.ndarray:
        score, ix = self.search(feats)
        return blend(feats, self.database, score, ix, rate)


def load_index(path: str | os.PathLike) -> FeatureIndex:
    path = Path(path)
    if not path.is_file():
        raise RetrievalError(f"index file not found: {path}")
    faiss = _faiss()
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as err:
        detail = str(err).split("Error: ")[-1].strip().splitlines()[0] if str(err).strip() else "unknown error"
        raise RetrievalError(f"{path}: not a readable faiss index ({detail})") from None
    return FeatureIndex(index, str(path))


# ---------------------------------------------------------------------------------------------------------------
# Synthetic indexes in the real format (tests, `rvc-bench infer` on synthetic voices)


def n_ivf_for(n: int) -> int:
    """Inverted lists RVC's train_index picks for n vectors: min(16 sqrt(n), n // 39), at least 1."""
    return max(1, min(int(16 * math.sqrt(n)), n // 39))


def build_index(vectors: np.ndarray, n_ivf: int | None = None):
    """faiss "IVF{n},Flat" (L2) trained on and filled with `vectors` [n, d], nprobe 1, as RVC writes it."""
    faiss = _faiss()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n_ivf = n_ivf or n_ivf_for(vectors.shape[0])
    index = faiss.index_factory(vectors.shape[1], f"IVF{n_ivf},Flat")
    faiss.extract_index_ivf(index).nprobe = 1
    index.train(vectors)
    for start in range(0, vectors.shape[0], 8192):  # RVC adds in batches of 8192
        index.add(vectors[start : start + 8192])
    return index


def write_index(path: str | os.PathLike, vectors: np.ndarray, n_ivf: int | None = None) -> Path:
    """Build (see build_index) and write atomically with faiss's own serialisation."""
    faiss = _faiss()
    path = Path(path)
    atomic_write_bytes(path, faiss.serialize_index(build_index(vectors, n_ivf)).tobytes())
    return path


def synthetic_vectors(n: int, dim: int, seed: int = 0, clusters: int = 16) -> np.ndarray:
    """[n, dim] float32 around `clusters` centres, each vector layer-normalised like HuBERT/ContentVec outputs."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim))
    x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    return x.astype(np.float32)


def ensure_synthetic_index(
    cache_dir: str | os.PathLike, dim: int, n: int = 2000, seed: int = 0, vectors: np.ndarray | None = None
) -> Path:
    """The cached synthetic index for (dim, n, seed), named like RVC's 'added_' files; generated on first use.

    `vectors` replaces the seeded ones (e.g. content features of a clip, as training would collect them); the
    caller keeps (n, seed) distinct for distinct vectors.
    """
    version = {256: "v1", 768: "v2"}.get(dim, f"{dim}d")
    n_ivf = n_ivf_for(n)
    path = Path(cache_dir) / "indexes" / f"added_IVF{n_ivf}_Flat_nprobe_1_synthetic-n{n}-seed{seed}_{version}.index"
    if not path.is_file():
        vecs = synthetic_vectors(n, dim, seed) if vectors is None else np.asarray(vectors, dtype=np.float32)
        if vecs.shape != (n, dim):
            raise ValueError(f"vectors must be [{n}, {dim}], got {vecs.shape}")
        write_index(path, vecs, n_ivf)
    return path
