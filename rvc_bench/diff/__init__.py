"""`rvc-bench diff`: where two runs of a stage or of the pipeline part ways, module by module and frame by frame.

capture.py records every named submodule's output (torch hooks; MLX class swaps), sides.py runs a side (backend,
device, stage options, a commit, a port), compare.py pairs and judges the captures and places a divergence in time,
run.py puts them together, show.py prints, locate.py names the first divergent module behind the gate's parity
failures.
"""
