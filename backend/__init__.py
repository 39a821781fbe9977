"""Restora's backend: model registry, tiled inference, tasks, CLI and server."""

from backend.allocator import use_huge_pages

__version__ = "0.1.0"

use_huge_pages()  # before anything imports torch (backend/allocator.py says why)
