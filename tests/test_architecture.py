"""The package's shape, checked: imports go one way (no cycle, function-local imports included), a benchmark process
imports only the framework it measures, and rvc_bench.mlx_kernels is the only code that picks a kernel by device."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rvc_bench import measure, stages
from rvc_bench.fixtures import cache_dir

PACKAGE = Path(__file__).resolve().parents[1] / "rvc_bench"
SUITES = PACKAGE.parent / "suites"
# The only modules that import a framework when imported: the twins and the MLX kernels (the ONNX runners import
# onnxruntime only through the backend adapter that runs them).
FRAMEWORK_MODULES = {
    "model_torch",
    "model_mlx",
    "mlx_kernels",
    "variant_torch",
    "variant_mlx",
}  # import their framework


def modules() -> dict[str, Path]:
    """rvc_bench module name -> file, packages as their __init__.py."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the rvc_bench modules it imports anywhere in its body (module level or inside functions), with
    the packages whose __init__ each import runs."""
    known = modules()
    graph = {}
    for name, path in known.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                assert node.level == 0, f"{name}: relative import"
                targets |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        edges = set()
        for target in targets:
            parts = target.split(".")
            edges |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)} & known.keys()
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_walk_sees_function_local_imports():
    graph = import_graph()
    assert "rvc_bench.rmvpe.model_torch" in graph["rvc_bench.rmvpe.convert"]  # imported inside load_torch only
    assert "rvc_bench.hubert" in graph["rvc_bench.hubert.convert"]  # the package __init__ runs first
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_models_never_import_their_converter():
    graph = import_graph()
    for name, edges in graph.items():
        if name.rsplit(".", 1)[-1] in ("model_torch", "model_mlx"):
            assert not {e for e in edges if e.endswith(".convert")}, name


def _fresh(code: str) -> list[str]:
    """Run `code` in a new interpreter; return the frameworks (torch, mlx, onnxruntime) it has loaded at the end."""
    script = code + "\nimport sys; print(sorted(m for m in ('torch', 'mlx', 'onnxruntime') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return eval(proc.stdout.strip().splitlines()[-1])


def test_importing_the_package_and_the_benchmarks_loads_no_framework():
    names = [n for n in modules() if n.rsplit(".", 1)[-1] not in FRAMEWORK_MODULES]
    benches = [p.stem for p in sorted(SUITES.glob("test_bench_*.py"))]
    assert len(benches) == 6 and "rvc_bench.stages" in names and "rvc_bench.pipeline" in names
    code = "\n".join(f"import {n}" for n in names) + f"\nimport sys; sys.path.insert(0, {str(SUITES)!r})\n"
    assert _fresh(code + "\n".join(f"import {b}" for b in benches)) == []


def test_each_loader_imports_only_its_own_framework():
    cache = cache_dir()
    pt = stages.RMVPE.checkpoint(cache, "tiny")
    converted = stages.RMVPE.checkpoint_for("mlx", pt, cache)
    assert converted.suffix == ".safetensors" and converted != pt
    load = "from rvc_bench import stages\nstages.RMVPE.convert.{}({!r})"
    assert _fresh(load.format("load_torch", str(pt))) == ["torch"]
    assert _fresh(load.format("load_mlx", str(converted))) == ["mlx"]
    exported = stages.RMVPE.checkpoint_for("onnx", pt, cache)  # what the ONNX benchmark exports, in a child
    assert _fresh(
        "from rvc_bench import stages, backends\n"
        f"stages.RMVPE.load(backends.get_backend('onnx', 'cpu'), {str(exported)!r})"
    ) == ["onnxruntime"]
    assert _fresh(
        "from rvc_bench import stages, backends\n"  # a checkpoint: its cached export is found by content
        f"stages.RMVPE.load(backends.get_backend('onnx', 'cpu'), {str(pt)!r})"
    ) == ["onnxruntime"]


def test_only_the_kernels_module_picks_a_kernel_by_device():
    checks = sorted(
        str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if "default_device()" in path.read_text()
    )
    assert checks == ["mlx_kernels.py"]


@pytest.mark.parametrize("backend,framework", [("torch", "torch"), ("mlx", "mlx"), ("onnx", "onnxruntime")])
def test_a_fresh_process_benchmark_holds_only_its_framework(backend, framework):
    cache = cache_dir()
    for name in ("mlx", "onnx"):  # what the main run converts and exports
        stages.RMVPE.checkpoint_for(name, stages.RMVPE.checkpoint(cache, "tiny"), cache)
    nodeid = f"suites/test_bench_rmvpe.py::test_bench_rmvpe[0.5s-{backend}]"
    probe = measure.run_probe(nodeid, ["--lengths", "0.5", "--model-size", "tiny", "--backends", backend])
    assert probe["frameworks"] == [framework], json.dumps(probe)


def test_a_reference_benchmark_is_probed_in_a_fresh_process_too(tmp_path):
    """The numpy log-mel runs in the torch process; its probe once asked for `--backends numpy`, failed, and left
    the run incomplete."""
    from helpers import pytest_child

    from rvc_bench import store

    nodeid = "suites/test_bench_mel.py::test_bench_mel_reference"
    options = ("--lengths", "0.5", "--model-size", "tiny", "--backends", "torch", "--fresh-process")
    proc = pytest_child(nodeid, "--benchmark-only", *options, "--store", tmp_path, cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stdout[-2000:]
    rows = store.read(tmp_path).rows
    probe = rows[(rows.backend == "numpy") & (rows.metric == "time_cold_fresh_process")]
    assert len(probe) == 1 and 0 < probe.value.iloc[0] < 60


def test_functions_and_modules_stay_short():
    """Readable units (issue 24): no function of the package or of the tests over 79 lines, no module over 400 lines
    but the model twins (one file per stage per framework, which read alike side by side)."""
    long_functions, long_modules = [], []
    root = PACKAGE.parent
    tests = {str(p.relative_to(root)): p for p in sorted([*root.glob("tests/*.py"), *root.glob("suites/*.py")])}
    assert len(tests) > 40 and "suites/conftest.py" in tests
    for name, path in {**modules(), **tests}.items():
        text = path.read_text()
        if text.count("\n") > 400 and not path.stem.startswith("model_"):
            long_modules.append(f"{name} ({text.count(chr(10))} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 79:
                long_functions.append(f"{name}.{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long_modules and not long_functions, f"modules: {long_modules}; functions: {long_functions}"


def test_ruff_lint_and_format_are_clean():
    """The linter and formatter configured in pyproject.toml ([tool.ruff]) hold over the whole tree."""
    ruff = pytest.importorskip("ruff", reason="ruff comes with the test extra: pip install -e '.[test]'")
    del ruff
    root = PACKAGE.parent
    for args in (["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]):
        done = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=root, capture_output=True, text=True)
        assert done.returncode == 0, f"ruff {' '.join(args)}:\n{done.stdout}{done.stderr}"
