"""``edge-inspect`` main(): an OSError escaping a subcommand (stdout on a full disk, a closed pipe) is one
line on stderr and exit code 1, never a traceback or Python's "Exception ignored" shutdown message."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_inspect import cli

REPO = Path(__file__).resolve().parents[2]
EDGE = [sys.executable, "-m", "edge_inspect"]


def _one_clean_line(stderr: str) -> str:
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_stdout_on_full_disk_is_one_line_and_exit_1(tiny_model_dir):
    with open("/dev/full", "w") as full:
        out = subprocess.run([*EDGE, "info", "--model", str(tiny_model_dir)], stdout=full, stderr=subprocess.PIPE,
                             text=True, timeout=60, cwd=REPO)
    assert out.returncode == 1
    assert _one_clean_line(out.stderr) == "edge-inspect info: error: No space left on device"


def test_stdout_closed_pipe_is_one_line_and_exit_1(tiny_model_dir):
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `edge-inspect info | head -0`, with the reader gone before the first write
    try:
        out = subprocess.run([*EDGE, "info", "--model", str(tiny_model_dir)], stdout=write_end,
                             stderr=subprocess.PIPE, text=True, timeout=60, cwd=REPO)
    finally:
        os.close(write_end)
    assert out.returncode == 1
    assert _one_clean_line(out.stderr) == "edge-inspect info: error: Broken pipe"


def test_oserror_from_a_handler_names_the_file_and_leaves_stdout_alone(monkeypatch, capsys):
    def handler(args):
        print("partial result")
        raise FileNotFoundError(2, "No such file or directory", "/nowhere/x.bin")

    def register(sub):
        sub.add_parser("boom").set_defaults(func=handler)

    real = cli.build_parser

    def build_parser() -> argparse.ArgumentParser:
        parser = real()
        register(next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)))
        return parser

    monkeypatch.setattr(cli, "build_parser", build_parser)
    assert cli.main(["boom"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "partial result\n"  # a working stdout is not redirected
    assert _one_clean_line(captured.err) == "edge-inspect boom: error: No such file or directory: /nowhere/x.bin"
