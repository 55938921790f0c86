"""Print the figures the protocol tests measured (throughput, latency, fuzz inputs) in pytest's summary."""

from __future__ import annotations

from tests.protocol.helpers import FIGURES


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("protocol figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
