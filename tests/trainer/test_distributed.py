"""Multi-process training through torchrun + DistributedDataParallel (gloo on CPU) runs and writes one model."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from edge_inspect.data.synth import make_synthetic_category  # noqa: E402


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun not installed")
    make_synthetic_category(tmp_path / "data", "widget", n_train=12, n_test_good=2, n_test_per_defect=1, size=96,
                            seed=3)
    cmd = [str(torchrun if torchrun.exists() else "torchrun"), "--nproc-per-node", "2", "-m", "edge_inspect", "train",
           "--data", str(tmp_path / "data"), "--category", "widget", "--out", str(tmp_path / "run"), "--quiet",
           "--image-size", "64", "--epochs1", "2", "--epochs2", "2", "--batch-size", "4", "--set", "batch_size2=4",
           "--set", "pool_factor=1.0", "--set", "student2_widths=[32,16,16]", "--set", "disc_base=8",
           "--set", "disc_depth=2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    assert [h["stage"] for h in ckpt["state"]["history"]] == [1, 1, 2, 2]
