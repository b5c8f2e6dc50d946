"""Names shared by the measuring and the presentation layers, without importing either (no framework, no
machine probe): the backends a run can measure and the reference implementations timed beside them."""

BACKENDS = ("torch", "mlx", "onnx")
REFERENCES = ("numpy",)  # reference implementations, timed beside the backends but never compared with them
