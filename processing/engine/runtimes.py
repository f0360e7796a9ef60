"""Where the exported networks run: ONNX Runtime or OpenVINO on the CPU, no torch.

A runner is a callable from named input arrays to a list of output arrays; the networks
(networks.py, retinaface.py) put their own pre- and post-processing around one. The two
runtimes compute the same graph; which one runs is the ENGINE_BACKEND setting, and
``RUNTIMES`` is the one list of the choices.

Precision (ENGINE_PRECISION, ``plan``): OpenVINO computes in f32 or bf16; ONNX Runtime's CPU
provider has no bf16 convolutions, so it computes in f32 whatever is asked. ``auto`` takes
bf16 only where the runtime says the CPU runs bf16 natively *and* its bf16 convolution
kernel is the AMX one: with AVX-512 BF16 alone (no AMX) bf16 convolutions were measured
slower than f32 here (BENCHMARKS.md), so ``auto`` gives f32 there, as everywhere else. A job
that asks for f32 (``computing("f32")``) gets f32 networks, compiled on first use when the
engine's own precision is bf16.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

log = logging.getLogger(__name__)

# ONNX Runtime graph optimisation per network, chosen by measurement (BENCHMARKS.md):
# "all" adds blocked-layout (NCHWc) convolutions, which took the same CPU time here but
# keep a second, reordered copy of every convolution's weights (+140 MB for the detector,
# +140 MB for GFPGAN) and add reorder buffers around ParseNet's 512x512x128 activations.
OPTIMIZATION = "extended"


class RuntimeUnavailable(RuntimeError):
    pass


def _ort():
    try:
        import onnxruntime
    except ImportError as error:  # pragma: no cover - requirements pin it
        raise RuntimeUnavailable("onnxruntime is not installed; install requirements.txt") from error
    return onnxruntime


# -- sessions ------------------------------------------------------------------------

_allocator_lock = threading.Lock()
_shared_allocator = False


def _register_shared_allocator(ort) -> None:
    """One arena for every session in the process. The networks run one after another,
    so the process needs the largest one's scratch memory, not the sum of all three."""
    global _shared_allocator
    with _allocator_lock:
        if _shared_allocator:
            return
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        # max_mem 0 (no limit), extend by what is requested (not by powers of two), defaults otherwise.
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
        _shared_allocator = True


def session(path: Path, threads: int = 0, optimization: str = OPTIMIZATION):
    ort = _ort()
    _register_shared_allocator(ort)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per physical core
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    # Memory patterns pre-plan one block per input shape: faster for a fixed shape, but
    # the planned block for ParseNet was ~2.5 GB. The shared arena reuses freed chunks.
    options.enable_mem_pattern = False
    options.add_session_config_entry("session.use_env_allocators", "1")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class _OrtRunner:
    precision = "f32"  # the CPU provider has no bf16 convolutions: always f32, whatever is asked

    def __init__(self, path: Path, threads: int, precision: str = "f32"):
        self.session = session(path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        # Hand the arena's free chunks back after every call: the three networks run one
        # after another, and without this each one's scratch stays resident for the life
        # of the worker while the next one (and the paste-back) grows the process further.
        self.run_options = _ort().RunOptions()
        self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def __call__(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feed, self.run_options)


_ov_lock = threading.Lock()
_ov_core = None


def _openvino():
    global _ov_core
    with _ov_lock:
        if _ov_core is None:
            try:
                import openvino
            except ImportError as error:  # pragma: no cover - requirements pin it
                raise RuntimeUnavailable("openvino is not installed; install requirements.txt or set ENGINE_BACKEND=onnxruntime") from error
            _ov_core = openvino.Core()
        return _ov_core


class _OpenVinoRunner:
    """OpenVINO's CPU plugin on the same ONNX file. Inference precision is always pinned:
    on CPUs with bf16 support the plugin would otherwise choose bf16 by itself. Scratch
    memory is released after each call, since the three networks never run at the same time."""

    def __init__(self, path: Path, threads: int, precision: str = "f32"):
        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = _openvino().compile_model(str(path), "CPU", config)
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
        # What the plugin really compiled (it keeps f32 where the CPU has no bf16), not what was asked.
        self.precision = execution_precision(self.compiled)
        self._lock = threading.Lock()

    def __call__(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            request = self.compiled.create_infer_request()
            results = request.infer(feed)
            outputs = [np.array(results[port], copy=True) for port in self.compiled.outputs]
            del request, results
            self.compiled.release_memory()
        return outputs


# "openvino" (the default) was 20-30% faster than ONNX Runtime on all three networks on 2
# cores; it keeps GFPGAN's weights twice (about +350 MB resident), which still leaves a
# worker under 2 GB on a 12-megapixel photo. "onnxruntime" is the lean choice (about
# 450 MB less at peak) for a tighter memory limit.
RUNTIMES = {"openvino": _OpenVinoRunner, "onnxruntime": _OrtRunner}


def _kind(runtime: str):
    try:
        return RUNTIMES[runtime]
    except KeyError:
        raise ValueError(f"unknown engine backend {runtime!r}; expected one of {', '.join(RUNTIMES)}") from None


# -- precision -------------------------------------------------------------------------

PRECISIONS = ("auto", "f32", "bf16")  # ENGINE_PRECISION
F32, BF16 = "f32", "bf16"


def execution_precision(compiled) -> str:
    """The precision an OpenVINO compiled model computes its convolutions and matrix
    products in, read from its runtime (execution) graph: "bf16", "f32", or both joined."""
    found = set()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) in ("Convolution", "FullyConnected", "MatMul", "Deconvolution"):
            found.add(info["runtimePrecision"].astype(str))
    return "+".join(sorted(found)) or "f32"


@dataclass(frozen=True)
class Plan:
    """What the engine will compute in, and why: the setting, the runtime's answer about the
    CPU, and the precision ``auto`` (and a job's ``auto``) resolves to."""

    setting: str
    native_bf16: bool  # the runtime lists BF16 among the CPU's optimisation capabilities
    bf16_kernel: str  # the kernel OpenVINO picks for a bf16 convolution here ("" without native bf16)
    precision: str  # f32 | bf16

    @property
    def bf16_amx(self) -> bool:
        return "amx" in self.bf16_kernel

    def describe(self) -> str:
        if not self.native_bf16:
            why = "the CPU has no native bf16"
        elif not self.bf16_amx:
            why = f"native bf16 without AMX (kernel {self.bf16_kernel}, slower than f32)"
        else:
            why = f"native bf16 on AMX ({self.bf16_kernel})"
        return f"ENGINE_PRECISION={self.setting}: {self.precision}; {why}"


def _bf16_kernel() -> str:
    """The convolution kernel OpenVINO compiles for bf16 on this CPU (its primitive type, e.g.
    brgconv_avx512_amx_bf16 or brgconv_avx512_bf16): a 32-channel 3x3 convolution, compiled only."""
    import openvino
    import openvino.opset13 as ops

    x = ops.parameter([1, 32, 16, 16], np.float32)
    conv = ops.convolution(x, ops.constant(np.ones((32, 32, 3, 3), np.float32)), [1, 1], [1, 1], [1, 1], [1, 1])
    compiled = _openvino().compile_model(openvino.Model([conv], [x]), "CPU", {"INFERENCE_PRECISION_HINT": BF16})
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) == "Convolution":
            return info["primitiveType"].astype(str)
    return ""


@functools.lru_cache(maxsize=None)
def plan(runtime: str, setting: str = "auto") -> Plan:
    """Which precision the networks run in on ``runtime`` for ENGINE_PRECISION ``setting``,
    asked of the runtime once per process."""
    if setting not in PRECISIONS:
        raise ValueError(f"unknown engine precision {setting!r}; expected one of {', '.join(PRECISIONS)}")
    _kind(runtime)
    if runtime != "openvino":
        return Plan(setting, False, "", F32)
    native = "BF16" in _openvino().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    kernel = _bf16_kernel() if native else ""
    chosen = Plan(setting, native, kernel, F32)
    if setting == BF16 or (setting == "auto" and chosen.bf16_amx):
        chosen = Plan(setting, native, kernel, BF16 if native else F32)
    return chosen


# The job being computed: what it asked for ("f32", or None for the engine's own precision)
# and what its networks ran in. Set around a whole restore or detection, so the detector,
# restorer, parser and upsampler, wherever they are called from, compute as the job asked and
# report what they ran.
@dataclass
class Computed:
    asked: str | None
    ran: set[str] = field(default_factory=set)

    @property
    def precision(self) -> str:
        """What the networks ran in, as their compiled models report it; "" if none ran."""
        return "+".join(sorted(self.ran))


_job: contextvars.ContextVar[Computed | None] = contextvars.ContextVar("job_precision", default=None)


@contextmanager
def computing(precision: str) -> Iterator[Computed]:
    """Within this block the networks compute in f32 if ``precision`` is "f32" ("auto": the
    engine's own precision); the record yielded collects what they ran in. A nested block
    asking the same (a restore's detection) adds to the outer record."""
    asked = F32 if precision == F32 else None
    current = _job.get()
    if current is not None and current.asked == asked:
        yield current
        return
    record = Computed(asked)
    token = _job.set(record)
    try:
        yield record
    finally:
        _job.reset(token)


class _Runner:
    """One network on a runtime at the engine's precision, and at f32 for a job that asks
    for it: compiled when first asked (most jobs never do), then kept. Each call adds what its
    compiled model runs in (as the runtime reports it) to the job's record."""

    def __init__(self, path: Path, threads: int, runtime: str, precision: str):
        self._make: Callable[[str], object] = lambda p: _kind(runtime)(path, threads, p)
        self.default = precision
        self._runners = {precision: self._make(precision)}
        self._lock = threading.Lock()
        self.input_names = self._runners[precision].input_names

    def compiled(self, precision: str | None = None):
        precision = precision or self.default
        with self._lock:
            if precision not in self._runners:
                log.info("compiling a network in %s for a job that asked for it", precision)
                self._runners[precision] = self._make(precision)
            return self._runners[precision]

    def ran(self, asked: str | None) -> str | None:
        """The precision this network computes in for ``asked`` (None: the engine's own),
        if it has been compiled for it."""
        runner = self._runners.get(asked or self.default)
        return runner.precision if runner is not None else None

    def __call__(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        job = _job.get()
        compiled = self.compiled(job.asked if job is not None else None)
        outputs = compiled(feed)
        if job is not None:
            job.ran.add(compiled.precision)
        return outputs


@dataclass(frozen=True)
class Runtime:
    """Where and in what precision (f32 | bf16, already resolved by ``plan``) the networks run."""

    name: str = "openvino"
    precision: str = F32


def runner(path: Path, threads: int, runtime: "str | Runtime"):
    if isinstance(runtime, str):
        runtime = Runtime(runtime)
    _kind(runtime.name)
    return _Runner(path, threads, runtime.name, runtime.precision)
