"""Restora's backend: model registry, tiled inference, tasks, CLI and server."""

from backend.allocator import keep_heap_blocks, use_huge_pages

__version__ = "0.1.0"

# both before anything imports torch (backend/allocator.py says why)
use_huge_pages()
keep_heap_blocks()
