"""The GPU step image (`make image-gpu`, tested by `make image-gpu-test`): TensorFlow built
with CUDA, its CUDA and cuDNN libraries from PyPI loadable inside the image, and, on a
host without a GPU (this one), a pipeline step that runs on the CPU fallback."""

from __future__ import annotations

import json

import pytest

from tests.helpers import small_params, write_params
from tests.image.conftest import engine_run

pytestmark = pytest.mark.image

BUILD_AND_LIBRARIES = """
import ctypes, glob, json, os, sysconfig
import tensorflow as tf
info = tf.sysconfig.get_build_info()
site = sysconfig.get_paths()["purelib"]
# dependency order, each loaded globally so that the next finds it (as TensorFlow does)
wanted = ["cuda_runtime/lib/libcudart.so.*", "nvjitlink/lib/libnvJitLink.so.*",
          "cublas/lib/libcublasLt.so.*", "cublas/lib/libcublas.so.*",
          "cufft/lib/libcufft.so.*", "curand/lib/libcurand.so.*",
          "cusparse/lib/libcusparse.so.*", "cusolver/lib/libcusolver.so.*",
          "nccl/lib/libnccl.so.*", "cudnn/lib/libcudnn.so.*"]
loaded = {}
for pattern in wanted:
    [path] = sorted(glob.glob(os.path.join(site, "nvidia", pattern)))[:1]
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    loaded[pattern.split("/")[0]] = os.path.basename(path)
print(json.dumps({
    "is_cuda_build": info.get("is_cuda_build"), "cuda_version": info.get("cuda_version"),
    "cudnn_version": info.get("cudnn_version"), "gpus": len(tf.config.list_physical_devices("GPU")),
    "loaded": loaded,
}))
"""

CPU_FALLBACK_STEP = """
set -e
cd /work
skinlesion data synth --out synth --n 120
skinlesion split --data-dir synth --out split.csv
skinlesion oversample --manifest split.csv --out train.csv
skinlesion train --model cnn --manifest train.csv --data-dir synth --out cnn.keras \
    --report-dir report --params one-epoch.yaml
"""


def test_tensorflow_is_a_cuda_build_and_the_cuda_libraries_load(image):
    done = engine_run(image, "python", "-c", BUILD_AND_LIBRARIES)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(found, indent=2))  # the note quotes it (pytest -s)
    assert found["is_cuda_build"] is True
    assert found["cuda_version"] and found["cudnn_version"]
    assert found["gpus"] == 0  # no driver on this host: the CPU fallback
    assert set(found["loaded"]) >= {"cuda_runtime", "cublas", "cudnn", "nccl"}


def test_a_training_step_runs_on_the_cpu_fallback(image, params, tmp_path):
    work = tmp_path / "work"
    work.mkdir(mode=0o777)
    work.chmod(0o777)  # the image's user (uid 10001) writes here
    write_params(small_params(params, cnn={"epochs": 1}), work / "one-epoch.yaml")
    done = engine_run(image, "sh", "-c", CPU_FALLBACK_STEP, mounts={str(work): "/work"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads((work / "report" / "metrics.json").read_text())
    assert report["epochs_run"] == 1 and (work / "cnn.keras").is_file()
