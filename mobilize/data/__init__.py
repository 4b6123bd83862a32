"""Readers of standard data formats and the embedded synthetic generators."""
