"""Precision: what ENGINE_PRECISION resolves to on this CPU, bf16 against f32 on the real
pipeline (stand-in weights: a bound on the difference, never a claim about quality), a job
asking for f32 on a bf16 engine, what a job record and /api/info report; and the fp16-stored
model store: against the fp32-stored one, and computed in f32 by ONNX Runtime.

Both precisions run on the store the service ships (fp16 weights); the session's ``engine``
(fp32 weights, f32) is the reference for the store's own difference.

The bf16 tests run only where OpenVINO reports native bf16; elsewhere each says so in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from processing.engine.pipeline import Engine, RestoreOptions
from processing.engine.runtimes import execution_precision, plan, runner
from processing.engine.store import PARSER, ModelStore
from tests.conftest import astronaut_bgr, encoded
from tests.engine.conftest import psnr

# bf16 against f32 on the stand-in weights, the astronaut restored with the defaults
# (detected face, ParseNet mask, upscale 2). Measured on an Intel Xeon with AVX-512 BF16 (no
# AMX), OpenVINO 2026.4.1: the whole 1024x1024 result 57.0 dB, the restored 512 face
# (GFPGAN's output alone) 47.2 dB. The floors leave about 5 dB for other CPUs' kernels.
BF16_WHOLE_IMAGE_PSNR_FLOOR = 52.0
BF16_FACE_PSNR_FLOOR = 42.0


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        pytest.skip("no /proc/cpuinfo: the CPU's flags cannot be read independently here")
    return set(next(line for line in text.splitlines() if line.startswith("flags")).split(":", 1)[1].split())


def test_auto_takes_bf16_only_where_bf16_runs_on_amx():
    """OpenVINO's answer against the kernel's own CPU flags (Linux arch/x86/include/asm/
    cpufeatures.h: "avx512_bf16", "amx_bf16"): native bf16 is either; ``auto`` picks bf16
    only with AMX, where bf16 convolutions outrun f32 (with AVX-512 BF16 alone they do not:
    BENCHMARKS.md). ONNX Runtime computes in f32 whatever is asked."""
    flags = _cpu_flags()
    auto = plan("openvino", "auto")
    assert auto.native_bf16 == bool(flags & {"avx512_bf16", "amx_bf16"})
    assert auto.precision == ("bf16" if "amx_bf16" in flags else "f32"), auto.describe()
    assert plan("openvino", "f32").precision == "f32"
    assert plan("openvino", "bf16").precision == ("bf16" if auto.native_bf16 else "f32")
    assert plan("onnxruntime", "bf16").precision == "f32"
    with pytest.raises(ValueError, match="unknown engine precision"):
        plan("openvino", "fp16")


@pytest.fixture(scope="session")
def bf16_engine(standin_models) -> Engine:
    """The one bf16 engine of the session (GFPGAN 1.4), where the CPU runs bf16 natively."""
    if not plan("openvino", "bf16").native_bf16:
        pytest.skip("this CPU has no native bf16 (OpenVINO's OPTIMIZATION_CAPABILITIES lists no BF16): bf16 untested here")
    return Engine.open(standin_models, threads=2, allow_standin=True, precision="bf16")


@pytest.fixture(scope="module")
def shipped_f32(standin_models) -> Engine:
    """f32 on the store the service ships (fp16 weights)."""
    return Engine.open(standin_models, threads=2, allow_standin=True, precision="f32")


@pytest.fixture(scope="module")
def f32_astronaut(shipped_f32):
    """The astronaut restored with the defaults, in f32 on the shipped store."""
    return shipped_f32.restore(astronaut_bgr(), RestoreOptions())


def _networks(engine: Engine) -> dict:
    return {"restorer": engine._restorer("1.4").run, "parser": engine.parser.run, "detector": engine.retinaface.net.run}


def test_bf16_really_runs_and_stays_close_to_f32(bf16_engine, f32_astronaut, capsys):
    """Every network of the bf16 engine computes its convolutions in bf16 (read from the
    runtime's execution graph, not from the setting), the result says bf16, and the whole
    restore stays within the measured floor of the f32 engine's."""
    for name, run in _networks(bf16_engine).items():
        assert execution_precision(run.compiled().compiled) == "bf16", name
    assert bf16_engine.precision_for("auto") == "bf16"

    fast, exact = bf16_engine.restore(astronaut_bgr(), RestoreOptions()), f32_astronaut
    assert (fast.precision, exact.precision) == ("bf16", "f32")
    assert len(fast.faces) == len(exact.faces) == 1
    whole, face = psnr(fast.image, exact.image), psnr(fast.faces[0].after, exact.faces[0].after)
    with capsys.disabled():
        print(f"\n    bf16 against f32 (stand-ins): whole astronaut restore {whole:.1f} dB, restored face {face:.1f} dB")
    assert BF16_WHOLE_IMAGE_PSNR_FLOOR <= whole < float("inf")
    assert BF16_FACE_PSNR_FLOOR <= face


def test_a_job_asking_f32_gets_the_f32_pixels_on_a_bf16_engine(bf16_engine, f32_astronaut):
    """precision=f32 compiles the f32 networks on first use and computes exactly what an f32
    engine computes; the engine's own precision is untouched afterwards."""
    asked = bf16_engine.restore(astronaut_bgr(), RestoreOptions(precision="f32"))
    assert asked.precision == "f32"
    assert np.array_equal(asked.image, f32_astronaut.image)
    assert bf16_engine.precision_for("auto") == "bf16"
    assert execution_precision(bf16_engine._restorer("1.4").run.compiled().compiled) == "bf16"


def test_a_job_record_says_which_precision_ran(bf16_engine, client, storage, settings):
    """Through the API and the worker: a default job runs bf16 on the bf16 engine, one asking
    precision=f32 runs f32, and each record says so; /api/info says what auto means here."""
    from processing.worker import JobHandler
    from tests.integration.test_batches_and_options import deliver_one
    from tests.integration.test_pipeline import submit

    handler = JobHandler(settings, storage, lambda: bf16_engine, worker_id="precision")
    face = astronaut_bgr()[40:340, 150:450]
    ran = {}
    for asked in ("auto", "f32"):
        response = submit(client, encoded(face), aligned=True, precision=asked)
        assert response.status_code == 202, response.text
        job_id = deliver_one(storage, handler)
        job = client.get(f"/api/jobs/{job_id}").json()
        assert job["status"] == "succeeded", job
        ran[asked] = job["precision"]
    assert ran == {"auto": "bf16", "f32": "f32"}
    refused = submit(client, encoded(face), precision="fp16")
    assert refused.status_code == 422 and refused.json()["error"]["fields"][0]["field"] == "precision"

    info = client.get("/api/info").json()["precision"]
    expected = plan(settings.engine_backend, settings.engine_precision)
    assert info == {"engine": expected.precision, "setting": "auto", "native_bf16": expected.native_bf16,
                    "bf16_kernel": expected.bf16_kernel}
    assert info["engine"] in ("f32", "bf16") and info["native_bf16"] is True


def test_onnxruntime_computes_the_fp16_store_in_f32(standin_models, tmp_path):
    """The store's fp16 weights reach ONNX Runtime's kernels as f32: in the graph it actually
    runs (its optimised model), every initializer is f32 and no Cast is left; and its runner
    reports f32 even when bf16 is asked."""
    import onnx
    import onnxruntime as ort

    path = ModelStore(standin_models).path(PARSER)
    stored = onnx.load(path, load_external_data=False)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in stored.graph.initializer)
    del stored

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # runtimes.OPTIMIZATION
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    options.intra_op_num_threads = 1
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimised = onnx.load(tmp_path / "optimised.onnx")
    assert {onnx.TensorProto.DataType.Name(i.data_type) for i in optimised.graph.initializer} <= {"FLOAT", "INT64"}
    assert not [node for node in optimised.graph.node if node.op_type == "Cast"]

    from processing.engine.runtimes import Runtime

    assert runner(path, 1, Runtime("onnxruntime", "bf16")).compiled().precision == "f32"
    assert json.loads((standin_models / "models.json").read_text())["weights"] == "fp16"


# The fp16-stored store against the fp32-stored one, both computed in f32, on the stand-in
# weights. Measured on an Intel Xeon (OpenVINO 2026.4.1): the whole astronaut restore
# 75.6 dB, its restored face 65.4 dB; Real-ESRGAN x2 on a 101x75 photo 67.6 dB. Floors: the
# measurement less about 5 dB.
FP16_STORE_WHOLE_PSNR_FLOOR = 70.0
FP16_STORE_FACE_PSNR_FLOOR = 60.0
FP16_STORE_ESRGAN_PSNR_FLOOR = 62.0


def test_the_fp16_store_stays_close_to_the_fp32_one(f32_astronaut, engine, standin_models, capsys):
    """What storing the weights in fp16 changes, computed in f32 on both sides: the whole
    restore (GFPGAN, ParseNet's mask) and the background upsampler, each within its floor."""
    import cv2

    from processing.engine.networks import OnnxBackend
    from processing.engine.upsampler import TiledUpsampler

    exact = engine.restore(astronaut_bgr(), RestoreOptions())
    whole, face = psnr(f32_astronaut.image, exact.image), psnr(f32_astronaut.faces[0].after, exact.faces[0].after)
    photo = cv2.resize(astronaut_bgr(), (101, 75), interpolation=cv2.INTER_AREA)
    shipped = TiledUpsampler(OnnxBackend(ModelStore(standin_models), 2).background(), tile=48, pad=6).upscale(photo)
    reference = TiledUpsampler(engine.backend.background(), tile=48, pad=6).upscale(photo)
    esrgan = psnr(shipped, reference)
    with capsys.disabled():
        print(f"\n    fp16-stored against fp32-stored (stand-ins, f32): whole restore {whole:.1f} dB, "
              f"restored face {face:.1f} dB, Real-ESRGAN {esrgan:.1f} dB")
    assert FP16_STORE_WHOLE_PSNR_FLOOR <= whole < float("inf")
    assert FP16_STORE_FACE_PSNR_FLOOR <= face
    assert FP16_STORE_ESRGAN_PSNR_FLOOR <= esrgan < float("inf")
