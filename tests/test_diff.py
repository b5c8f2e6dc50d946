"""rvc-bench diff: planted faults are found at their module (and no earlier one), or at their chunk or tile seam;
correct pairs report no divergence. Tiny models, seconds of audio."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rvc_bench import cli, fixtures, stages
from rvc_bench.diff import capture, compare, run, show, sides

pytest.importorskip("mlx.core")
pytest.importorskip("torch")


def _diff(stage, a="torch", b="mlx", seconds=1.0, plant_b=None, checkpoint=None, **kw):
    inputs = run.inputs_for(stage, "tiny", seconds, 0, checkpoint)
    return run.diff(stage, sides.parse_side(a, stage), sides.parse_side(b, stage), inputs, plant_b=plant_b, **kw)


@pytest.mark.parametrize(
    "stage, a, b",
    [
        ("mel", "torch", "mlx"),
        ("rmvpe", "torch", "mlx"),
        ("hubert", "torch", "mlx"),
        ("synth", "torch", "mlx/tile_frames=none"),
        ("pipeline", "torch", "mlx"),
    ],
)
def test_a_correct_pair_reports_no_divergence(stage, a, b):
    report = _diff(stage, a, b)
    assert not report.diverged, show.render(report)
    judged = [r for r in report.rows if r.status == compare.OK]
    assert stage == "mel" or len(judged) > 20  # the modules were paired, not skipped
    assert report.along and all(x.first is None for x in report.along)


def test_chunked_rmvpe_with_its_overlap_matches_the_whole_pass():
    report = _diff("rmvpe", "mlx/chunk_frames=none", "mlx/chunk_frames=64", seconds=3.0)
    assert not report.diverged, show.render(report)
    assert any(r.status.startswith(compare.CALLS) for r in report.rows)  # the U-Net ran per chunk on B


def _first(report) -> str:
    assert report.first is not None, show.render(report)
    return report.first.name


def test_a_transposed_conv_weight_is_found_at_its_conv():
    def plant(m):
        conv = m.model.unet.encoder.layers[1].conv[0].conv[3]
        conv.weight = conv.weight.swapaxes(1, 2)  # MLX [out, kh, kw, in]: the 3x3 kernel transposed

    assert _first(_diff("rmvpe", plant_b=plant)) == "model.unet.encoder.layers.1.conv.0.conv.3"


def test_a_batchnorm_with_wrong_statistics_is_found_at_it():
    def plant(m):
        bn = m.model.unet.decoder.layers[0].conv1[1]
        bn.running_var = bn.running_var * 1.5

    assert _first(_diff("rmvpe", plant_b=plant)) == "model.unet.decoder.layers.0.conv1.1"


def test_a_wrong_leaky_relu_slope_is_found_at_the_module_it_feeds(monkeypatch):
    from rvc_bench.synth import model_mlx

    monkeypatch.setattr(model_mlx, "LRELU_SLOPE_POST", 0.02)  # before conv_post only (upstream: 0.01)
    assert _first(_diff("synth", "torch", "mlx/tile_frames=none")) == "dec.conv_post"


def test_a_gru_with_swapped_gates_is_found_at_the_gru():
    import mlx.core as mx

    def plant(m):
        gru = m.model.fc[0].gru.l0_reverse
        h = gru.Wh.shape[1]
        swap = lambda w: mx.array(np.concatenate([w[h : 2 * h], w[:h], w[2 * h :]]))  # noqa: E731  (r, z) -> (z, r)
        gru.Wx, gru.Wh, gru.b = (swap(np.array(w)) for w in (gru.Wx, gru.Wh, gru.b))

    assert _first(_diff("rmvpe", plant_b=plant)) == "model.fc.0.gru"


def test_an_attention_scale_off_by_one_percent_is_found_at_the_attention():
    def plant(m):
        m.encoder.layers[1].self_attn.scale *= 1.01

    # The scale acts inside the attention's own code: the first output to carry it is its out_proj's.
    assert _first(_diff("hubert", plant_b=plant)) == "encoder.layers.1.self_attn.out_proj"


def test_a_tile_seam_without_enough_overlap_is_found_at_the_seam():
    def plant(m):
        m.dec.context = (1, 1)  # the filter reaches further: the seam's samples lack context

    report = _diff("synth", "mlx/tile_frames=none", "mlx/tile_frames=40", plant_b=plant)
    audio = next(a for a in report.along if a.signal == "audio")
    assert _first(report) == "dec"  # its submodules ran per tile on B (unpaired); the decoder as a whole did not
    assert audio.first is not None and "before the tile seam (B) at frame 40" in audio.seam, show.render(report)
    assert "tile seam (B) at frame 40" in report.where()


def test_rmvpe_chunks_that_cut_the_gru_are_found_at_a_chunk_seam():
    path = stages.RMVPE.synthetic.ensure_checkpoint(fixtures.cache_dir(), "tiny", kind="long-memory")
    report = _diff("rmvpe", "mlx/chunk_frames=none", "mlx/chunk_frames=64,cut_gru=true", 3.0, checkpoint=path)
    salience = next(a for a in report.along if a.signal == "salience")
    assert salience.first is not None and "chunk seam (B)" in salience.seam, show.render(report)
    assert report.diverged


def test_a_port_with_its_own_names_is_compared_through_a_name_map(tmp_path):
    port = tmp_path / "my_port.py"
    port.write_text(
        "import mlx.nn as nn\n"
        "from rvc_bench import stages\n"
        "from rvc_bench.backends import get_backend\n"
        "class Pitch(nn.Module):\n"
        "    def __init__(self, inner):\n"
        "        super().__init__()\n"
        "        self.front, self.backbone, self.inner = inner.mel, inner.model, inner\n"
        "    def __call__(self, audio):\n"
        "        return self.inner(audio)\n"
        "def load(path):\n"
        "    return Pitch(stages.RMVPE.model(get_backend('mlx'), path))\n"
    )
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"backbone": "model", "front": "mel"}))
    out = tmp_path / "out.json"
    status = _cli(["rmvpe", "torch", "mlx", "--port", f"{port}:load", "--name-map", str(names), "--json"], out)
    result = json.loads(out.read_text())
    assert status == 0, result["where"]
    assert sum(m["status"] == "ok" for m in result["modules"]) > 20


def _cli(args, out=None, capsys=None):
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = cli.main(["diff", *args, "--model-size", "tiny", "--seconds", "1"])
    if out is not None:
        out.write_text(buf.getvalue())
    return status


def test_cli_exit_statuses_and_one_line_errors(tmp_path, capsys):
    assert _cli(["hubert"]) == 0
    assert _cli(["rmvpe", "torch", "mlx", "--bound", "1e-12"]) == 1
    for bad, says in [
        (["rmvpe", "cuda"], "unknown backend 'cuda'"),
        (["rmvpe", "mlx/tile_frames=3"], "'tile_frames=3' is not an option of rmvpe"),
        (["rmvpe", "torch", "mlx", "--checkpoint", str(tmp_path / "none.pt")], "checkpoint not found"),
        (["rmvpe", "torch", "mlx", "--audio", str(tmp_path / "none.wav")], "audio file not found"),
        (["rmvpe", "mlx"], "needs --base REF or --port"),
        (["rmvpe", "torch", "--base", "no-such-ref"], "invalid reference: no-such-ref"),
    ]:
        capsys.readouterr()
        assert _cli(bad) == 2, bad
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1, err


def test_outputs_past_the_memory_limit_stop_side_a_with_one_line():
    """A long full-size input would hold more module outputs than the machine has memory (a minute of pipeline was
    killed for memory at 21 GiB): side A stops at the limit, with an error naming what to shorten."""
    with pytest.raises(sides.DiffError, match=r"passed the .* GiB this diff may hold .* shorter --seconds than 1$"):
        _diff("hubert", limit=100_000)
    assert not _diff("hubert", limit=10**9).diverged  # the same pair under a limit it stays within


def test_a_side_at_a_commit_runs_in_its_worktree():
    inputs = run.inputs_for("rmvpe", "tiny", 1.0, 0)
    report = run.diff("rmvpe", sides.Side("mlx", commit="HEAD"), sides.parse_side("mlx", "rmvpe"), inputs)
    assert sum(r.status == compare.OK for r in report.rows) > 20
    assert not report.diverged, show.render(report)


def test_the_gate_names_the_first_divergent_module_of_a_parity_failure(tmp_path, monkeypatch, capsys):
    """A stored MLX RMVPE row past its bound, and an MLX RMVPE with a planted BatchNorm fault: the gate's summary
    names that BatchNorm (and --no-locate leaves it out)."""
    from rvc_bench import store
    from rvc_bench.rmvpe import convert

    load_mlx = convert.load_mlx

    def faulty(path, **opts):
        model = load_mlx(path, **opts)
        bn = model.model.unet.decoder.layers[0].conv1[1]
        bn.running_var = bn.running_var * 1.5
        return model

    monkeypatch.setattr(convert, "load_mlx", faulty)
    run = store.Run(machine_id="m-1", model_size="tiny")
    common = dict(stage="rmvpe", variant="whole", device="cpu", device_name="cpu", dtype="float32", audio_seconds=1)
    run.add(backend="mlx", metric="parity.max_abs", value=0.5, unit="", reference="torch", **common)
    run.flush(tmp_path, "mlx")
    assert cli.main(["gate", "--store", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "rmvpe mlx(cpu) 1s [tiny]: first divergent module: rmvpe model.unet.decoder.layers.0.conv1.1" in out
    assert cli.main(["gate", "--store", str(tmp_path), "--no-locate"]) == 1
    assert "first divergent module" not in capsys.readouterr().out


def test_a_recording_and_a_long_pipeline_are_placed_along_time(tmp_path):
    """A wav file as the input (read as `infer` reads it), and a pipeline long enough to be cut into chunks: every
    signal is placed, the features too, and the chunk seams are known."""
    import soundfile as sf

    wav = tmp_path / "voice.wav"
    sf.write(wav, fixtures.clip(2.0, 3).audio, 16000)
    assert _cli(["hubert", "--audio", str(wav)]) == 0
    from rvc_bench import pipeline

    inputs = run.inputs_for("pipeline", "tiny", 3.0, 0)
    short = pipeline.Options(seed=0, windows=pipeline.Windows(x_pad=0.1, x_query=0.2, x_center=1.0, x_max=1.5))
    a, b = (sides.parse_side(s, "pipeline") for s in ("torch", "mlx"))
    res = sides.run_pipeline(b, inputs, capture.Recorder(), options=short)
    assert set(res.signals) == {"salience", "f0", "features", "audio"}
    assert len(res.seams["audio"]["chunk"][0]) == 2  # three chunks
    report = run.diff("pipeline", a, b, inputs, options=short)
    assert not report.diverged, show.render(report)
