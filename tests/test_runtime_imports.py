"""The runtime package never imports torch: every edge_inspect module is imported in a fresh interpreter."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import edge_inspect


def _all_modules() -> list[str]:
    root = Path(edge_inspect.__file__).parent
    names = ["edge_inspect"]
    for info in pkgutil.walk_packages([str(root)], prefix="edge_inspect."):
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return names


def test_every_module_imports_without_torch():
    modules = _all_modules()
    assert len(modules) > 10, modules  # the walk really found the package
    code = (
        "import importlib, sys\n"
        f"mods = {modules!r}\n"
        "for m in mods:\n"
        "    importlib.import_module(m)\n"
        "bad = sorted(k for k in sys.modules if k == 'torch' or k.startswith('torch.'))\n"
        "print('TORCH' if bad else 'CLEAN', len(mods))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith("CLEAN"), out.stdout


def test_cli_help_does_not_import_torch():
    code = "import sys\nfrom edge_inspect.cli import build_parser\nbuild_parser()\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
