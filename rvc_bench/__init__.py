"""rvc-bench: parity and speed of RVC inference on MLX against PyTorch, stage by stage."""

__version__ = "0.1.0"
