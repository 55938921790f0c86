"""Data: MVTec AD folder loader and the synthetic production-line generator (numpy/opencv only)."""
