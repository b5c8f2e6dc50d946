"""rvc-bench: parity and speed of RVC inference on MLX against PyTorch, stage by stage.

Stages (mel/, rmvpe/, hubert/, synth/): twin models, one per framework, that see only numpy weights, and a convert
module per stage that reads every file format and loads either twin; stages.py is the registry the pipeline, the
suites and the CLI look stages up in; mlx_kernels.py holds the MLX fast paths. pipeline.py is the whole
conversion on one backend. The harness (backends, measure, pytest_plugin, store, report, gate) measures, records
and judges. Importing the package, its registry or its converters imports neither torch nor MLX.
"""

__version__ = "0.1.0"
