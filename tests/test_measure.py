"""The measuring core: the sync charges lazy work to the timed region, memory counters see allocations."""

import subprocess
import sys

import numpy as np
import pytest

from rvc_bench import measure
from rvc_bench.backends import MLXBackend, get_backend


def lazy_chain(a):
    """About 16 dependent 384x384 matmuls: MLX only records the graph until something evaluates it."""
    import mlx.core as mx

    x = a
    for _ in range(16):
        x = mx.tanh(x @ a)
    return x


class NoSyncMLX(MLXBackend):
    """What a broken adapter would do: return without forcing the outputs."""

    def sync(self, outputs=None):
        pass


def _eval_time(a, repeat=3):
    import time

    import mlx.core as mx

    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        mx.eval(lazy_chain(a))
        best = min(best, time.perf_counter() - t0)
    return best


def test_mlx_sync_charges_lazy_work_to_the_timed_region():
    import mlx.core as mx

    be = get_backend("mlx", "cpu")
    a = mx.random.normal((384, 384), key=mx.random.key(0)) / 20
    mx.eval(a)
    work = _eval_time(a)
    assert work > 2e-3, "the lazy chain must be measurably expensive for this test to mean anything"
    timed = min(measure.time_call(be, lazy_chain, (a,), repeat=3))
    # Removing the sync leaves only graph construction (microseconds) in the timed region: this fails then.
    assert timed >= 0.5 * work, f"timed {timed:.5f} s but the work takes {work:.5f} s: outputs were not forced"


def test_without_sync_the_work_escapes_the_timer():
    """The check above is sensitive: a backend that skips the sync measures far less than the real work."""
    import mlx.core as mx

    a = mx.random.normal((384, 384), key=mx.random.key(1)) / 20
    mx.eval(a)
    work = _eval_time(a)
    timed = min(measure.time_call(NoSyncMLX("cpu"), lazy_chain, (a,), repeat=3))
    assert timed < 0.5 * work


def test_sync_forces_every_output_in_a_nested_structure():
    import mlx.core as mx

    be = get_backend("mlx", "cpu")
    a = mx.random.normal((384, 384), key=mx.random.key(2)) / 20
    mx.eval(a)
    work = _eval_time(a)
    timed = min(measure.time_call(be, lambda x: {"pair": (x + 1, [lazy_chain(x)])}, (a,), repeat=3))
    assert timed >= 0.5 * work


def test_cold_call_records_time_and_mlx_peak_memory():
    import mlx.core as mx

    be = get_backend("mlx", "cpu")
    n = 2048  # a 16 MiB float32 result must show in the peak counter
    m = measure.cold_call(be, lambda: mx.ones((n, n)) * 2, ())
    assert m.cold_s > 0
    assert m.mem_framework_peak >= n * n * 4
    assert float(m.output[0, 0]) == 2.0


def test_torch_cpu_has_no_framework_peak_counter_and_says_so():
    be = get_backend("torch", "cpu")
    be.reset_peak_memory()
    assert np.isnan(be.peak_memory())
    assert be.memory_source == ""


def test_rss_peak_sees_a_transient_allocation():
    size = 256 * 2**20
    with measure.RssPeak() as rss:
        buf = np.ones(size // 8)  # touched pages, freed before the block ends
        del buf
    assert rss.delta >= 0.8 * size, (rss.source, rss.delta)


def test_numpy_round_trip_on_both_backends():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    for name in ("torch", "mlx"):
        be = get_backend(name, "cpu")
        np.testing.assert_array_equal(be.to_numpy(be.from_numpy(x)), x)


def test_warm_rounds_keep_every_round(benchmark):
    be = get_backend("torch", "cpu")
    times = measure.warm_rounds(benchmark, be, lambda: sum(range(1000)), (), rounds=4, warmup=2)
    assert len(times) == 4 and all(t > 0 for t in times)


def test_rounds_per_length():
    assert measure.per_length("7", 3, 1, "--rounds") == [7, 7, 7]
    assert measure.per_length("7,3,2", 3, 1, "--rounds") == [7, 3, 2]
    assert measure.compact([7, 7, 7]) == 7 and measure.compact([7, 3, 2]) == [7, 3, 2]
    for text, n in (("7,3", 3), ("0", 1), ("x", 1)):
        with pytest.raises(ValueError, match="--rounds"):
            measure.per_length(text, n, 1, "--rounds")
    # 0 timed rounds at a length: its first call only, which leaves nothing for warm-up rounds to precede
    assert measure.rounds_and_warmup("7,0,0", "1,0,0", 3) == ([7, 0, 0], [1, 0, 0])
    for rounds, warmup in (("7,0", "1"), ("0", "2"), ("-1", "0")):
        with pytest.raises(ValueError, match="--rounds"):
            measure.rounds_and_warmup(rounds, warmup, 2)


def _thp_mode() -> str:
    try:
        return open("/sys/kernel/mm/transparent_hugepage/enabled").read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc tuning is Linux-only")
def test_freed_memory_is_kept_for_reuse_and_given_back_before_a_cold_call():
    """In a fresh process (mallopt is process-wide): a freed 64 MiB block page-faults back in on every allocation
    with glibc's defaults; once the benchmark's setting is in, it is reused without faults, and trimming the heap
    (what cold_call does first) gives it back to the kernel."""
    code = """
import ctypes
import resource
from rvc_bench import measure

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def faults(n=3):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        p = libc.malloc(2**26)  # 64 MiB, written so that its pages are touched, then freed
        ctypes.memset(p, 1, 2**26)
        libc.free(p)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()

default = faults()
setting = measure.keep_freed_memory()
faults(1)
kept, held = faults(), rss()
measure.release_freed_memory()
print(setting, default, kept, held - rss())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    setting, numbers = proc.stdout.strip().rsplit(")", 1)
    default, kept, released = map(int, numbers.split())
    assert setting + ")" == measure.KEEP_FREED
    # glibc's default maps and unmaps the block each time (16384 faults per allocation here; fewer where
    # transparent huge pages are always on); kept, three allocations reuse the same pages
    assert kept < 1000 and (default > 3 * 16384 * 0.9 or "always" in _thp_mode())
    assert released > 48 * 2**20  # the kept block went back to the kernel


def test_a_sampled_peak_is_the_largest_value_seen():
    """Where no counter keeps its own peak (torch on MPS; RSS off Linux), a thread samples it: a short spike
    between start and stop is caught."""
    import time

    from rvc_bench.sampling import PeakSampler

    values = iter([3, 3, 9] + [4] * 1000)
    sampler = PeakSampler(lambda: next(values), 0.001)
    sampler.start()
    time.sleep(0.05)
    assert sampler.stop() == 9
