"""Evaluation: metrics in human units beside a constant baseline, and per-face lines."""
