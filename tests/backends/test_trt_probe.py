"""The environment probe's reasons: each missing piece (tensorrt, pycuda, a CUDA device) named in one line.

The real modules are replaced in ``sys.modules`` (``None`` makes an import fail), so every branch runs
on any machine; the probe's process cache is restored afterwards by monkeypatch.
"""

from __future__ import annotations

import sys
import types

import pytest

from edge_inspect.backends import trt_probe
from edge_inspect.errors import DependencyError, EngineError


@pytest.fixture
def probe(monkeypatch):
    monkeypatch.setattr(trt_probe, "_probe_cache", None)

    def run(**modules):
        for name, module in modules.items():
            monkeypatch.setitem(sys.modules, name.replace("__", "."), module)
        return trt_probe.probe_environment(refresh=True)

    return run


def _pycuda(count=1, init_error=None):
    driver = types.ModuleType("pycuda.driver")

    def init():
        if init_error:
            raise init_error

    class Device:
        def __init__(self, index):
            pass

        @staticmethod
        def count():
            return count

        def name(self):
            return "Orin"

        def compute_capability(self):
            return 8, 7

    driver.init, driver.Device = init, Device
    pkg = types.ModuleType("pycuda")
    pkg.driver, pkg.VERSION_TEXT = driver, "2024.1"
    return {"pycuda": pkg, "pycuda__driver": driver}


def _tensorrt(version="10.3.0"):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    return trt


def test_nothing_installed(probe):
    env = probe(tensorrt=None, pycuda=None, pycuda__driver=None, cuda=None)
    assert not env.ok and env.missing_packages
    assert len(env.missing) == 3
    assert "'tensorrt' is not importable" in env.missing[0] and "JetPack 6" in env.missing[0]
    assert "'pycuda' is not importable" in env.missing[1] and "edge-inspect[jetson]" in env.missing[1]
    assert env.missing[2] == "no CUDA device found"
    assert "\n" not in env.reason and env.reason == "; ".join(env.missing)
    with pytest.raises(DependencyError, match=r"^edge-inspect build needs TensorRT, pycuda and a CUDA dev"):
        env.raise_if_missing("edge-inspect build")


def test_everything_there(probe):
    env = probe(tensorrt=_tensorrt(), **_pycuda())
    assert env.ok and env.missing == () and not env.missing_packages
    assert (env.tensorrt_version, env.pycuda_version, env.gpu_name, env.compute_capability) == (
        "10.3.0", "2024.1", "Orin", "8.7")
    assert env.reason == "TensorRT 10.3.0 on GPU 'Orin' (compute capability 8.7)"
    env.raise_if_missing("anything")  # no error


def test_packages_there_but_no_device_is_an_engine_error_not_a_dependency_error(probe):
    env = probe(tensorrt=_tensorrt(), **_pycuda(count=0))
    assert env.missing == ("no CUDA device found (cuda.Device.count() == 0)",) and not env.missing_packages
    with pytest.raises(EngineError, match="no CUDA device found"):
        env.raise_if_missing("the TensorRT backend")
    failing = RuntimeError("cuInit failed: no CUDA-capable device\nmore")
    env = probe(tensorrt=_tensorrt(), **_pycuda(init_error=failing))
    assert env.missing == ("no CUDA device or driver (cuInit failed: no CUDA-capable device)",)


def test_pycuda_missing_still_names_the_gpu_through_cuda_python(probe):
    runtime = types.ModuleType("cuda.bindings.runtime")
    props = types.SimpleNamespace(name=b"NVIDIA H100\x00\x00", major=9, minor=0)
    runtime.cudaGetDeviceCount = lambda: (0, 1)
    runtime.cudaGetDeviceProperties = lambda index: (0, props)
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = runtime
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings
    env = probe(tensorrt=_tensorrt(), pycuda=None, pycuda__driver=None, cuda=cuda, cuda__bindings=bindings,
                cuda__bindings__runtime=runtime)
    assert env.missing_packages and len(env.missing) == 1 and "'pycuda' is not importable" in env.missing[0]
    assert (env.gpu_name, env.compute_capability) == ("NVIDIA H100", "9.0")


def test_the_probe_runs_once_per_process_unless_refreshed(probe, monkeypatch):
    first = probe(tensorrt=None, pycuda=None, pycuda__driver=None, cuda=None)
    monkeypatch.setitem(sys.modules, "tensorrt", _tensorrt())
    for name, module in _pycuda().items():
        monkeypatch.setitem(sys.modules, name.replace("__", "."), module)
    assert trt_probe.probe_environment() is first  # cached: the modules are not looked at again
    assert trt_probe.probe_environment(refresh=True).ok
