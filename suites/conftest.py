"""Fixtures shared by the suites of one stage: the pipeline's tiny index, the tiny HuBERT and its twins (imported
inside each fixture: the benchmark processes load no framework for a fixture they do not use)."""

import pytest


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory):
    """A real IVF-Flat file built like training does: from content features of another clip (tiny HuBERT)."""
    from test_bench_pipeline import models  # imported here: the benchmark processes load no test helper they skip

    from rvc_bench import retrieval
    from rvc_bench.fixtures import generate

    feats = models("torch").features(generate(6.0, seed=7).audio)  # [299, 768]
    path = tmp_path_factory.mktemp("index") / "added_IVF7_Flat_nprobe_1_tiny_v2.index"
    return retrieval.load_index(retrieval.write_index(path, feats))


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """The tiny HuBERT as a fairseq checkpoint (test_hubert.py, test_hubert_checkpoints.py)."""
    from rvc_bench.hubert import synthetic

    return synthetic.write_fairseq(tmp_path_factory.mktemp("hubert") / "hubert_tiny.pt", "tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_models(tiny_ckpt):
    """Its torch and MLX twins."""
    from rvc_bench.hubert import convert

    return convert.load_torch(tiny_ckpt, config="tiny"), convert.load_mlx(tiny_ckpt, config="tiny")
