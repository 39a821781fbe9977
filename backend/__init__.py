"""Restora's backend: model registry, tiled inference, tasks, CLI and server."""

__version__ = "0.1.0"
