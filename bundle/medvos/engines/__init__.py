"""Ignite/MONAI engines, metrics and handlers for few-shot video training and evaluation."""
