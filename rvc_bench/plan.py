"""A benchmark run's plan: every option of a run declared once, validated once, and written out again.

The same declarations serve argparse (the parent parsers of `rvc-bench run`, `ab` and `infer`) and pytest (the
plugin's options), so the command line `rvc-bench run` gives each backend's pytest process is the plan serialised
(`Plan.pytest_args`), and the plugin reads it back into the same object (`Plan.from_options`). Framework-free:
nothing here imports torch, MLX or ONNX Runtime.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from rvc_bench import blas, machine, measure, variants
from rvc_bench.audio import MIN_SECONDS
from rvc_bench.names import BACKENDS

SUITES = ("mel", "rmvpe", "hubert", "synth", "pipeline")  # benchmark suites: each stage, then the whole conversion
EXTRA_SUITES = ("stream",)  # run only when asked for: the live mode's block grid (hours at full size on a CPU)
MODEL_SIZES = ("full", "tiny")
MAX_SECONDS = 3600.0  # longest benchmark length: an hour of audio is ~230 MB per float32 copy, many copies per stage
DEFAULT_LENGTHS = "5"  # seconds; with 7 timed rounds the full-size default run takes ~8-10 min on a 2-core CPU
TEST_LENGTHS = "1"  # the test suite's length (pytest without --benchmark-only)
DEVICE_HELP = {
    "torch": "mps, cuda or cpu",
    "mlx": "gpu or cpu",
    "onnx": "ONNX Runtime execution provider: coreml, cuda or cpu",
}
MLX_BLAS_HELP = (
    "BLAS preloaded into MLX's Linux CPU process: mkl (the mkl wheel), openblas (a system OpenBLAS), "
    "bundled (mlx[cpu]'s reference BLAS) or auto (default: mkl, else openblas, else bundled)"
)


class PlanError(ValueError):
    """An option, or a combination of options, that no run can take: one line."""


# ---------------------------------------------------------------------------------------------------------------
# Parsers of one option's text (argparse `type=`: they raise ArgumentTypeError; both argparse and pytest say which
# option it was)


def parse_lengths(text: str) -> str:
    """Seconds separated by commas, each in [MIN_SECONDS, MAX_SECONDS]; returned in canonical form."""
    try:
        values = [float(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"lengths must be seconds separated by commas, got {text!r}") from None
    if not values or any(not MIN_SECONDS <= v <= MAX_SECONDS for v in values):  # also refuses nan
        raise argparse.ArgumentTypeError(
            f"lengths must be between {MIN_SECONDS:g} s (the shortest audio the stages "
            f"take) and {MAX_SECONDS:g} s, got {text!r}"
        )
    return ",".join(f"{v:g}" for v in values)


def parse_counts(text: str) -> str:
    """--rounds / --warmup: one whole number >= 0, or one per length (checked against --lengths by Plan)."""
    try:
        measure.per_length(text, len(str(text).split(",")), 0, "the count")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return str(text)


def _parse_choices(text: str, kind: str, known) -> str:
    """A comma-separated list of `known` names (at least one), as "a,b"."""
    chosen = [s.strip() for s in str(text).split(",") if s.strip()]
    unknown = [s for s in chosen if s not in known]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown {kind} {unknown[0] if unknown else text!r}: choose from {', '.join(known)}"
        )
    return ",".join(chosen)


def parse_stages(text: str) -> str:
    return _parse_choices(text, "stage", SUITES + EXTRA_SUITES)


def parse_variants(text: str) -> str:
    try:
        return ",".join(variants.parse(text))
    except variants.VariantError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parse_backends(text: str) -> str:
    return _parse_choices(text, "backend", BACKENDS)


# ---------------------------------------------------------------------------------------------------------------
# The declarations: `add` is argparse's add_argument or a pytest option group's addoption (the same keywords)

AddOption = Callable[..., object]


def add_device_options(add: AddOption) -> None:
    for name, help_text in DEVICE_HELP.items():
        add(f"--{name}-device", default="auto", help=f"{help_text} (default: best available)")


def add_run_options(
    add: AddOption,
    *,
    backends: str | None,
    store: str | None,
    lengths: str | None = DEFAULT_LENGTHS,
    model_size: str | None = "full",
) -> None:
    """Every option a benchmark process takes. The defaults are the caller's: `run` measures every installed
    backend into reports/store, `ab` torch and MLX into a temporary store, the plugin decides by its mode (None)."""
    add(
        "--lengths",
        type=parse_lengths,
        default=lengths,
        help=f"audio lengths in seconds (default {lengths or f'{DEFAULT_LENGTHS} with --benchmark-only, else 1'}; "
        "the original grid is 5,60,300)",
    )
    add(
        "--rounds",
        type=parse_counts,
        default=str(measure.DEFAULT_ROUNDS),
        help=f"timed rounds (default {measure.DEFAULT_ROUNDS}); one per length of --lengths (e.g. 7,3,2) times long "
        "lengths fewer times; 0 at a length: its first call only",
    )
    add(
        "--warmup",
        type=parse_counts,
        default=str(measure.DEFAULT_WARMUP),
        help=f"warm-up rounds (default {measure.DEFAULT_WARMUP}); one, or one per length",
    )
    add(
        "--model-size",
        choices=MODEL_SIZES,
        default=model_size,
        help=f"model configs (default {model_size or 'full with --benchmark-only, else tiny'})",
    )
    add_device_options(add)
    add(
        "--backends",
        type=parse_backends,
        default=backends,
        help=f"comma-separated subset of {','.join(BACKENDS)} (default: {backends or 'every one installed here'}), "
        "each benchmarked in its own process",
    )
    add(
        "--variants",
        type=parse_variants,
        default="fp32",
        help="optimisation variants of the HuBERT, RMVPE, synthesizer and pipeline benchmarks, comma-separated, each "
        f"its own row (default fp32, the eager float32 twin): {', '.join(variants.VARIANTS)}",
    )
    add("--fresh-process", action="store_true", help="also measure each benchmark in a fresh process (RSS)")
    add("--weights-dir", default=None, help="folder with real upstream checkpoints (rmvpe.pt, hubert_base.pt)")
    add(
        "--machine-label",
        default=None,
        help=f"a name for this machine, part of its id in the store (default: ${machine.LABEL_ENV})",
    )
    add("--store", default=store, help=f"run store folder (default: {store or 'see the command'})")


def parent(*declare: Callable[[AddOption], None]) -> argparse.ArgumentParser:
    """An argparse parent parser holding the given declarations."""
    p = argparse.ArgumentParser(add_help=False)
    for d in declare:
        d(p.add_argument)
    return p


def add_stage_option(add: AddOption) -> None:
    add(
        "--stages",
        type=parse_stages,
        default=",".join(SUITES),
        help="comma-separated subset of " + ",".join(SUITES + EXTRA_SUITES) + " (default: all but stream)",
    )


def add_blas_option(add: AddOption) -> None:
    add("--mlx-blas", choices=blas.CHOICES, default="auto", help=MLX_BLAS_HELP)


def installed_backends() -> tuple[list[str], dict[str, str]]:
    """--backends left out: every backend whose framework is installed here, and why each other one is not."""
    installed = [b for b in BACKENDS if machine.available_devices(b)]
    return installed, {b: machine.available_reason(b, "cpu") for b in BACKENDS if b not in installed}


# ---------------------------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class Plan:
    lengths: tuple[float, ...]
    rounds: tuple[int, ...]  # per length
    warmup: tuple[int, ...]  # per length
    model_size: str
    backends: tuple[str, ...]
    devices: tuple[tuple[str, str], ...]  # (backend, its device option: "auto" = the best available)
    stages: tuple[str, ...] = SUITES
    mlx_blas: str = "auto"
    fresh_process: bool = False
    variants: tuple[str, ...] = (variants.FP32,)
    weights_dir: str | None = None
    machine_label: str = ""
    store: str | None = None

    @classmethod
    def from_options(
        cls,
        get: Callable[[str], object],
        *,
        backends: list[str] | None = None,
        lengths: str = DEFAULT_LENGTHS,
        model_size: str = "full",
        min_rounds: int = 0,
    ) -> Plan:
        """The plan from parsed options (`get(dest)`: getattr on argparse's namespace, or pytest's getoption);
        lengths/model_size: the values when the option was left unset (None). Raises PlanError."""

        def opt(name, default=None):
            value = get(name)
            return default if value is None else value

        length_text = parse_lengths(opt("lengths", lengths))
        values = tuple(float(x) for x in length_text.split(","))
        try:
            rounds, warmup = measure.rounds_and_warmup(opt("rounds"), opt("warmup"), len(values))
            label = machine.machine_label(opt("machine_label"))
        except ValueError as err:
            raise PlanError(str(err)) from None
        if min(rounds) < min_rounds:
            raise PlanError(f"--rounds must be at least {min_rounds} here, got {opt('rounds')}")
        chosen = backends or opt("backends", ",".join(BACKENDS)).split(",")
        return cls(
            lengths=values,
            rounds=tuple(rounds),
            warmup=tuple(warmup),
            model_size=opt("model_size", model_size),
            backends=tuple(chosen),
            devices=tuple((b, opt(f"{b}_device", "auto")) for b in BACKENDS),
            stages=tuple(opt("stages", ",".join(SUITES)).split(",")),
            mlx_blas=opt("mlx_blas", "auto"),
            fresh_process=bool(opt("fresh_process", False)),
            variants=variants.parse(opt("variants", variants.FP32)),
            weights_dir=opt("weights_dir"),
            machine_label=label,
            store=opt("store"),
        )

    def device(self, backend: str) -> str:
        return dict(self.devices)[backend]

    def replace(self, **changes) -> Plan:
        return dataclasses.replace(self, **changes)

    @property
    def lengths_text(self) -> str:
        return ",".join(f"{v:g}" for v in self.lengths)

    def rounds_for(self, seconds: float) -> tuple[int, int]:
        """(timed rounds, warm-up) at `seconds`: its own counts when it is one of the lengths, else the most given."""
        if seconds in self.lengths:
            i = self.lengths.index(seconds)
            return self.rounds[i], self.warmup[i]
        return max(self.rounds), max(self.warmup)

    def pytest_args(self, backend: str) -> list[str]:
        """The plugin's options for one backend's process: what `from_options` reads back into this plan."""
        args = [
            "--lengths",
            self.lengths_text,
            "--rounds",
            counts_text(self.rounds),
            "--warmup",
            counts_text(self.warmup),
            "--model-size",
            self.model_size,
        ]
        for name, device in self.devices:
            args += [f"--{name}-device", device]
        args += ["--backends", backend, "--machine-label", self.machine_label]
        args += ["--store", self.store] if self.store else []
        args += ["--fresh-process"] if self.fresh_process else []
        args += ["--variants", ",".join(self.variants)] if self.variants != (variants.FP32,) else []
        return args + (["--weights-dir", self.weights_dir] if self.weights_dir else [])

    def stored(self) -> dict:
        """The plan as the store keeps it (the run's _run.json, before any process starts)."""
        return {
            "backends": list(self.backends),
            "stages": list(self.stages),
            "lengths": list(self.lengths),
            "model_size": self.model_size,
            "rounds": measure.compact(list(self.rounds)),
            "warmup": measure.compact(list(self.warmup)),
            "fresh_process": self.fresh_process,
            "variants": list(self.variants),
        }

    def describe(self) -> str:
        return (
            f"stages {','.join(self.stages)}, lengths {self.lengths_text} s, {self.model_size} models, "
            f"{counts_text(self.rounds)} warm rounds + {counts_text(self.warmup)} warm-up"
        )


def counts_text(counts: tuple[int, ...]) -> str:
    """Per-length counts as the command line takes them: "7", or "7,3,2" when they differ."""
    c = measure.compact(list(counts))
    return ",".join(map(str, c)) if isinstance(c, list) else str(c)
