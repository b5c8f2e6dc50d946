"""Stage: RMVPE pitch estimation (spec §3). Audio -> log-mel (rvc_bench.mel) -> salience [T, 360] -> f0 [T].

config.py       RMVPEConfig, presets "full" (the released rmvpe.pt) and "tiny" (CI), chunk plan, infer_config
model_torch.py  E2E twin in PyTorch (baseline): build(cfg), load(weights, cfg), RMVPE (audio -> salience, f0)
model_mlx.py    E2E twin in MLX (channels-last): the same
convert.py      the stage's files: load_torch(path), load_mlx(path), convert_file(src, dst), recognise(obj);
                read(path) -> (checked numpy state, cfg), to_mlx(state)
decode.py       numpy decoding shared by both: decode, coarse_pitch, transpose
synthetic.py    seeded synthetic rmvpe.pt: ensure_checkpoint(cache_dir, size, seed)

Loading goes one way: convert.py reads files and hands numpy weights to a model module, which knows only its own
framework. Importing this package imports neither torch nor MLX.
"""
