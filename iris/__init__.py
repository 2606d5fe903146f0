"""Iris-style messaging over a Pastry overlay."""

__version__ = "0.1.0"
