"""benchmarks/device_check.py: the tiny CPU version runs, says so, and judges ONNX parity."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import device_check


@pytest.mark.slow
def test_tiny_device_check_runs_on_the_cpu_and_says_so(tmp_path):
    out = tmp_path / "device_check.json"
    result = device_check.main(["--tiny", "--out", str(out)])
    assert json.loads(out.read_text()) == result  # one JSON line, as printed
    assert result["mode"].startswith("cpu-tiny") and "no CUDA device" in result["mode"]
    assert result["ok"] is True
    assert result["onnx_provider"] == "CPUExecutionProvider"
    assert result["onnx_parity_max_abs_diff"] <= device_check.PARITY_TARGET
    for precision in ("fp32", "bf16"):
        assert len(result[precision]["epoch_s"]) == device_check.TINY["epochs"]
        assert result[precision]["images_per_s"] > 0 and result[precision]["finite"]
    assert result["eager_over_onnx"] > 0


def test_synthetic_images_are_in_range_and_driven_by_u():
    images, u = device_check.synthetic(300, 16)
    assert images.shape == (300, 1, 16, 16) and u.shape == (300, 3)
    assert images.min() >= 0.0 and images.max() <= 1.0
    # u0 drives z0, whose bump brightens a region: some pixel correlates with u0
    flat = torch.as_tensor(images.reshape(300, -1))
    u0 = torch.as_tensor(u[:, 0])
    corr = torch.corrcoef(torch.cat([u0[None], flat.T]))[0, 1:]
    assert corr.abs().max() > 0.3
