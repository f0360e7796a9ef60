"""Where the exported networks run: ONNX Runtime or OpenVINO on the CPU, no torch.

A runner is a callable from named input arrays to a list of output arrays; the networks
(networks.py, retinaface.py) put their own pre- and post-processing around one. The two
runtimes compute the same graph; which one runs is the ENGINE_BACKEND setting, and
``RUNTIMES`` is the one list of the choices.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

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
    def __init__(self, path: Path, threads: int):
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
    """OpenVINO's CPU plugin on the same ONNX file. Inference precision is pinned to f32:
    on CPUs with bf16 support the plugin would otherwise default to bf16. Scratch memory
    is released after each call, since the three networks never run at the same time."""

    def __init__(self, path: Path, threads: int):
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = _openvino().compile_model(str(path), "CPU", config)
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
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


def runner(path: Path, threads: int, runtime: str):
    try:
        kind = RUNTIMES[runtime]
    except KeyError:
        raise ValueError(f"unknown engine backend {runtime!r}; expected one of {', '.join(RUNTIMES)}") from None
    return kind(path, threads)
