# Every suite and test goes through the rvc-bench plugin: options, the `bench` fixture, the run store.
pytest_plugins = ["rvc_bench.pytest_plugin"]
