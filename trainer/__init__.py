"""RSTPM training and export (needs torch: install the [train] extra)."""
