"""Stage: RMVPE pitch estimation (spec §3). Audio -> log-mel (rvc_bench.mel) -> salience [T, 360] -> f0 [T].

config.py       RMVPEConfig, presets "full" (the released rmvpe.pt) and "tiny" (CI)
model_torch.py  E2E twin in PyTorch (baseline), load(), RMVPE (audio -> salience, f0)
model_mlx.py    E2E twin in MLX (channels-last), load(), RMVPE
convert.py      rmvpe.pt -> MLX weights / .safetensors (strict): state_to_mlx, convert_checkpoint, convert_file
decode.py       numpy decoding shared by both: decode, coarse_pitch, transpose
synthetic.py    seeded synthetic rmvpe.pt: ensure_checkpoint(cache_dir, size, seed)

Importing this package imports neither torch nor MLX.
"""
