"""Tests of evograd.cupy_bridge that need no GPU: what a user without CuPy or without a device sees.

The bridge itself (zero-copy views, CupyEvaluator on real candidates) is tested in test_cuda.py,
where a GPU and CuPy are present.
"""

import sys
import types

import pytest
import torch

from evograd import CupyEvaluator, cupy_bridge


def fake_cupy(device_count):
    """A stand-in ``cupy`` module whose runtime reports ``device_count`` GPUs, or raises it."""

    def count():
        if isinstance(device_count, Exception):
            raise device_count
        return device_count

    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=count)))


def test_without_cupy_the_error_names_the_gpu_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # what an uninstalled module looks like to import
    with pytest.raises(ImportError, match=r"pip install 'evograd-torch\[gpu\]'"):
        CupyEvaluator(lambda x: x.sum(1))
    with pytest.raises(ImportError, match="gpu"):
        cupy_bridge.to_cupy(torch.zeros(2))


def test_without_a_driver_the_error_names_the_gpu_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(RuntimeError("cudaErrorNoDevice")))
    with pytest.raises(RuntimeError, match=r"no usable CUDA device \(cudaErrorNoDevice\).*evograd-torch\[gpu\]"):
        cupy_bridge.require_cupy()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message torch gives without a CUDA device")
def test_without_a_device_torch_sees_the_error_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(1))
    with pytest.raises(RuntimeError, match=r"torch sees 0, CuPy 1.*evograd-torch\[gpu\]"):
        CupyEvaluator(lambda x: x.sum(1))
