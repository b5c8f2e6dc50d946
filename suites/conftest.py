"""Fixtures the pipeline's suites share (test_pipeline.py, test_pipeline_cli.py)."""

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
