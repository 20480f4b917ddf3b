"""Synthetic CT generators with exact ground truth."""
