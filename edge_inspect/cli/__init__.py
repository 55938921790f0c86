"""``edge-inspect`` command line: one console script, one module per subcommand.

Each subcommand module defines ``register(subparsers)`` which adds its parser and sets
``func=handler``; a handler returns an exit code. Library errors (EdgeInspectError) become one line
on stderr and their exit code here, never a traceback. So does an OSError that escapes a handler (stdout
on a full disk, a closed pipe such as ``| head``): one line, exit code 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from .. import __version__
from ..errors import EdgeInspectError

# Subcommand modules, in help order. A module missing here (work in progress) is skipped.
SUBCOMMANDS = [
    "synth",  # make a synthetic MVTec-format category
    "train",  # train RSTPM (needs the [train] extra)
    "export",  # export ONNX graphs + manifest (needs [train])
    "calibrate",  # new thresholds from good parts on site, without retraining
    "quantize",  # INT8 (Q/DQ) model folder from a float one
    "eval",  # evaluate a model folder on an MVTec-format category
    "predict",  # score a folder or glob of images: overlays, predictions.jsonl/csv
    "run",  # the line: camera -> model -> verdicts over ZeroMQ
    "archive",  # list / show / export the defect archive kept by run --archive
    "bench",  # model-only vs pipeline throughput
    "listen",  # reference PLC-gateway subscriber
    "keys",  # CURVE key pairs
    "build",  # TensorRT engines (on the device)
    "check",  # camera / environment checks
    "info",  # show a model folder's manifest summary
]

log = logging.getLogger("edge_inspect")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-inspect", description="Line inspection at the edge (RSTPM).")
    parser.add_argument("--version", action="version", version=f"edge-inspect {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}_cmd")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}_cmd":
                continue
            raise
        module.register(sub)
    return parser


def setup_logging(verbosity: int, level: str | None = None) -> None:
    lvl = level or ("DEBUG" if verbosity >= 2 else "INFO" if verbosity == 1 else "WARNING")
    logging.basicConfig(level=lvl, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(args.verbose, getattr(args, "log_level", None))
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a full or closed stdout shows here, not as "Exception ignored" at exit
        return code
    except EdgeInspectError as exc:
        discard_broken_stdout()
        _print_err(f"edge-inspect {args.command}: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        discard_broken_stdout()
        _print_err(f"edge-inspect {args.command}: interrupted")
        return 130
    except OSError as exc:  # e.g. stdout on a full disk (ENOSPC) or a closed pipe (BrokenPipeError)
        discard_broken_stdout(broken=isinstance(exc, BrokenPipeError))
        what = exc.strerror or str(exc)
        if exc.filename:
            what += f": {exc.filename}"
        _print_err(f"edge-inspect {args.command}: error: {what}")
        return 1


def discard_broken_stdout(broken: bool = False) -> None:
    """Point stdout at /dev/null when it is ``broken`` (closed pipe, full disk) or cannot be flushed, so
    the interpreter's final flush of what is still buffered cannot fail again ("Exception ignored ...
    BrokenPipeError", exit code 120): Python's documented advice for EPIPE, right for ENOSPC too. A
    working stdout (the OSError came from elsewhere) is left alone.
    """
    if not broken:
        try:
            sys.stdout.flush()
            return
        except (OSError, ValueError):  # ValueError: stdout already closed
            pass
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):  # closed, replaced, or without a descriptor
        pass


def _print_err(line: str) -> None:
    """One line on stderr; stderr may be gone too, and then there is nobody to tell."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
