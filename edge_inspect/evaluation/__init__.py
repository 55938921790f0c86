"""Evaluation: metrics, calibrated thresholds, reports with pictures."""
