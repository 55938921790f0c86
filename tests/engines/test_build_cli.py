"""``edge-inspect build`` on a machine without TensorRT / CUDA: non-zero exit and one clear line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_inspect.backends.trt_probe import probe_environment


def _build(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edge_inspect", "build", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.mark.skipif(probe_environment().ok, reason="this machine has TensorRT and a CUDA device")
def test_build_without_tensorrt_exits_nonzero_with_one_line(tiny_model_dir):
    env = probe_environment()
    proc = _build("--model", str(tiny_model_dir))
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("edge-inspect build: error:")
    for missing in env.missing:
        assert missing in lines[0]
    assert proc.returncode == (3 if env.missing_packages else 1)
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_bad_option_combination_is_a_config_error_before_probing(tiny_model_dir):
    proc = _build("--model", str(tiny_model_dir), "--precision", "fp32", "--dla-core", "0")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "DLA runs FP16 or INT8 only" in lines[0]


def test_missing_model_folder_is_reported(tmp_path):
    proc = _build("--model", str(tmp_path / "absent"))
    assert proc.returncode != 0
    assert "model folder not found" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_build_help_lists_the_options():
    proc = _build("--help")
    assert proc.returncode == 0
    for opt in ("--precision", "--dla-core", "--workspace-mb", "--force", "--verify-images", "--max-batch"):
        assert opt in proc.stdout
