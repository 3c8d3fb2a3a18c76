"""Benchmarking: propagation methods (models, optical flow, copy), their evaluation on labelled videos, machine info."""
