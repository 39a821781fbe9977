"""Words for people about an installed model file: what the editors show instead of its name.

A file that is a catalog entry's (the same folder and file name) takes the entry's label,
description and traits; an offline default takes those of the catalog entry of the same
network, or its own from defaults.py; any other file is labelled from its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from backend.models.catalog import Catalog
from backend.models.defaults import DEFAULT_MODELS, DEFAULT_WORDS, defaults_in


@dataclass(frozen=True)
class ModelWords:
    label: str
    description: str = ""
    traits: tuple[str, ...] = ()
    catalog_name: str = ""  # the catalog entry the file is (or is the network of)


def label_from_name(name: str) -> str:
    """A file's own name, made readable: underscores read as spaces (`4x_NMKD-Superscale`)."""
    return " ".join(name.replace("_", " ").split()) or name


class ModelLabels:
    """Looks up the words for each file of one listing (the defaults' index is read once)."""

    def __init__(self, catalog: Catalog | None, roots: list[Path]) -> None:
        self.catalog = catalog
        self._defaults = {_key(r.path): r for r in defaults_in(roots)}

    def words(self, name: str, folder: str, path: str | Path) -> ModelWords:
        path = Path(path)
        entry = self.catalog.by_file(folder, path.name) if self.catalog is not None else None
        record = self._defaults.get(_key(path))
        if entry is None and record is not None and record.catalog_name and self.catalog:
            entry = next((e for e in self.catalog if e.name == record.catalog_name), None)
        if entry is not None:
            return ModelWords(entry.display_label, entry.description, entry.traits, entry.name)
        if record is not None and record.name in DEFAULT_WORDS:
            label, traits = DEFAULT_WORDS[record.name]
            return ModelWords(label, DEFAULT_MODELS.get(record.name, ""), traits)
        return ModelWords(label_from_name(name))


def _key(path: Path) -> str:
    try:
        return str(path.resolve())
    except OSError:
        return str(path)
