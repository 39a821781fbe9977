"""The model catalog: well-known model files, where to download them, and their SHA-256.

The catalog is `catalog.json`, shipped beside this module. Every hash and size in it was copied
from a public source named in the entry's `sha256_source`; an entry whose hash could not be
found has `"sha256": null` and is downloaded only with an explicit `--allow-unverified`.
`RESTORA_CATALOG` points Restora at another catalog file (a mirror's own list, or tests).

Besides the required fields an entry may say how the editors show it: a friendly `label`, its
`traits` (what it is good at and how fast it is, words from `TRAITS`) and `recommended` (the
one to offer first for its task; at most one per task).

Standard library only, so `restora models catalog` answers without loading torch.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from backend import paths
from backend.errors import InvalidParameterError, ModelNotFoundError, RestoraError

CATALOG_ENV = "RESTORA_CATALOG"
CATALOG_VERSION = 1

#: What a catalog model is for; `restora models catalog --task` filters by these.
TASKS = (
    "upscale",
    "face-restore",
    "colorize",
    "inpaint",
    "denoise",
    "refine",
    "instruct-edit",
    "face-detect",
    "hypir",
)
#: Face detectors get their own folder (added to paths.MODEL_FOLDERS by the faces work).
FACE_DETECTION_FOLDER = "facedetection"

FIELDS = (
    "name",
    "task",
    "family",
    "file",
    "size",
    "sha256",
    "sha256_source",
    "licence",
    "non_commercial",
    "restricted_use",
    "url",
    "folder",
    "description",
)
#: fields an entry may leave out, in the order they follow the required ones
OPTIONAL_FIELDS = ("label", "traits", "recommended")
#: what a trait says about a model; the editors turn these into words and presets pick by them
TRAITS = (
    "photo",  # made for real photographs
    "illustration",  # anime, drawings, line art
    "faces",  # restores or finds faces
    "old-photo",  # made for damaged or faded prints
    "fast",  # among the quickest of its task
    "slow",  # among the slowest of its task
    "best",  # the strongest all-round result of its kind
    "detail",  # keeps or adds fine texture
    "gentle",  # changes little, for good sources
)
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._+-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_FORBIDDEN_IN_FILE_NAMES = ("/", "\\", ":", "\0")


class CatalogError(RestoraError):
    """The catalog file is missing or malformed."""

    code = "catalog_invalid"
    http_status = 500


class UnsafePathError(InvalidParameterError):
    """A file name that could write outside its models folder."""

    code = "unsafe_path"


def known_folders() -> frozenset[str]:
    return frozenset(paths.MODEL_FOLDERS) | {FACE_DETECTION_FOLDER}


def check_file_name(name: str) -> str:
    """Return `name` if it is a plain file name; raise UnsafePathError otherwise.

    A catalog file name must land inside its models folder: no separators, no drive letters,
    no '..', nothing absolute, nothing hidden.
    """
    if not isinstance(name, str) or not name or name.strip() != name:
        raise UnsafePathError(f"Model file name {name!r} is empty or padded.", "Fix the catalog.")
    if any(c in name for c in _FORBIDDEN_IN_FILE_NAMES) or name.startswith("."):
        raise UnsafePathError(
            f"Model file name {name!r} is not a plain file name.",
            "A catalog file name may not contain path separators, ':' or start with '.'.",
        )
    if Path(name).is_absolute() or Path(name).name != name:
        raise UnsafePathError(f"Model file name {name!r} is a path.", "Use a plain file name.")
    return name


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    task: str
    family: str
    file: str
    size: int | None
    sha256: str | None
    sha256_source: str
    licence: str
    non_commercial: bool
    restricted_use: bool
    url: str
    folder: str
    description: str
    label: str = ""
    traits: tuple[str, ...] = ()
    recommended: bool = False

    @property
    def display_label(self) -> str:
        """The friendly name, or the catalog name where the entry gives none."""
        return self.label or self.name

    @property
    def verified(self) -> bool:
        """True when the catalog pins the file's SHA-256."""
        return self.sha256 is not None

    @property
    def needs_consent(self) -> bool:
        """Non-commercial or use-restricted licences are shown and confirmed before download."""
        return self.non_commercial or self.restricted_use

    @property
    def relative_path(self) -> str:
        return f"{self.folder}/{self.file}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["traits"] = list(self.traits)
        return data


class Catalog:
    """The validated catalog entries, looked up by name or listed by task."""

    def __init__(self, entries: list[CatalogEntry], source: str = "") -> None:
        self.entries = tuple(entries)
        self.source = source
        self._by_name = {e.name: e for e in self.entries}

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def get(self, name: str) -> CatalogEntry:
        """The entry called `name`; an unknown name raises with the closest names as hint."""
        entry = self._by_name.get(name) or self._by_name.get(name.lower())
        if entry is not None:
            return entry
        close = difflib.get_close_matches(name.lower(), self.names, n=4, cutoff=0.5)
        close += [n for n in self.names if name.lower() in n and n not in close][: 4 - len(close)]
        hint = (
            f"Did you mean: {', '.join(close)}?"
            if close
            else "Run `restora models catalog` to list the models."
        )
        raise ModelNotFoundError(f"No model named '{name}' in the catalog.", hint)

    def by_task(self, task: str) -> list[CatalogEntry]:
        if task not in TASKS:
            raise InvalidParameterError(
                f"Unknown task '{task}'.", f"Choose one of: {', '.join(TASKS)}."
            )
        return [e for e in self.entries if e.task == task]

    def recommended(self, task: str) -> CatalogEntry | None:
        """The entry to offer first for `task`, if the catalog names one."""
        return next((e for e in self.entries if e.task == task and e.recommended), None)

    def by_file(self, folder: str, file: str) -> CatalogEntry | None:
        for e in self.entries:
            if e.folder == folder and e.file == file:
                return e
        return None


def _check_entry(raw: Any, index: int, folders: frozenset[str]) -> list[str]:
    """Every problem with one raw entry, as readable sentences."""
    where = f"entry {index}"
    if not isinstance(raw, dict):
        return [f"{where} is not an object"]
    where = f"entry {index} ({raw.get('name', '?')})"
    problems = []
    missing = [f for f in FIELDS if f not in raw]
    extra = sorted(set(raw) - set(FIELDS) - set(OPTIONAL_FIELDS))
    if missing:
        problems.append(f"{where}: missing {', '.join(missing)}")
    if extra:
        problems.append(f"{where}: unknown fields {', '.join(extra)}")
    if missing:
        return problems

    def text(field: str) -> bool:
        value = raw[field]
        ok = isinstance(value, str) and value.strip() == value and bool(value)
        if not ok:
            problems.append(f"{where}: {field} must be a non-empty string without padding")
        elif "\n" in value:
            problems.append(f"{where}: {field} must be one line")
        return ok

    for field in ("name", "family", "file", "sha256_source", "licence", "url", "description"):
        text(field)
    if isinstance(raw["name"], str) and not _NAME_RE.match(raw["name"]):
        problems.append(f"{where}: name must be lowercase letters, digits, '.', '_', '+', '-'")
    if raw["task"] not in TASKS:
        problems.append(f"{where}: task {raw['task']!r} is not one of {', '.join(TASKS)}")
    if raw["folder"] not in folders:
        problems.append(f"{where}: folder {raw['folder']!r} is not a models folder")
    try:
        check_file_name(raw["file"])
    except UnsafePathError as exc:
        problems.append(f"{where}: {exc.message}")
    size = raw["size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        problems.append(f"{where}: size must be a positive number of bytes or null")
    sha = raw["sha256"]
    if sha is not None and (not isinstance(sha, str) or not _SHA256_RE.match(sha)):
        problems.append(f"{where}: sha256 must be 64 lowercase hex digits or null")
    for flag in ("non_commercial", "restricted_use"):
        if not isinstance(raw[flag], bool):
            problems.append(f"{where}: {flag} must be true or false")
    if isinstance(raw["url"], str) and not raw["url"].startswith("https://"):
        problems.append(f"{where}: url must be https://")
    if sha is None and "--allow-unverified" not in str(raw["description"]):
        problems.append(f"{where}: an unverified entry must say it needs --allow-unverified")
    if raw.get("label", "") != "":  # "" (as to_dict writes it) means none
        text("label")
    traits = raw.get("traits", [])
    if not isinstance(traits, list) or not all(isinstance(t, str) for t in traits):
        problems.append(f"{where}: traits must be a list of words")
    else:
        unknown = [t for t in traits if t not in TRAITS]
        if unknown:
            problems.append(
                f"{where}: unknown traits {', '.join(unknown)} (known: {', '.join(TRAITS)})"
            )
        if len(set(traits)) != len(traits):
            problems.append(f"{where}: a trait is listed twice")
    if not isinstance(raw.get("recommended", False), bool):
        problems.append(f"{where}: recommended must be true or false")
    return problems


def _entry(raw: dict[str, Any]) -> CatalogEntry:
    return CatalogEntry(
        **{f: raw[f] for f in FIELDS},
        label=raw.get("label", ""),
        traits=tuple(raw.get("traits", ())),
        recommended=raw.get("recommended", False),
    )


def parse_catalog(data: Any, source: str = "") -> Catalog:
    """Validate a decoded catalog document; raise CatalogError naming every problem."""
    if not isinstance(data, dict) or data.get("version") != CATALOG_VERSION:
        raise CatalogError(
            f"{source or 'The catalog'} is not a version {CATALOG_VERSION} model catalog.",
            'Expected {"version": 1, "models": [...]}.',
        )
    raw_entries = data.get("models")
    if not isinstance(raw_entries, list):
        raise CatalogError(f"{source or 'The catalog'} has no 'models' list.", "Fix the catalog.")
    folders = known_folders()
    problems: list[str] = []
    for i, raw in enumerate(raw_entries):
        problems += _check_entry(raw, i, folders)
    names = [r.get("name") for r in raw_entries if isinstance(r, dict)]
    problems += [
        f"name {n!r} is used twice" for n in sorted({n for n in names if names.count(n) > 1})
    ]
    targets = [(r.get("folder"), r.get("file")) for r in raw_entries if isinstance(r, dict)]
    problems += [
        f"file {f}/{n} is used twice"
        for f, n in sorted({t for t in targets if targets.count(t) > 1})
    ]
    # the editors offer the recommended entry first: two would leave the choice to chance
    recommended = [
        r.get("task") for r in raw_entries if isinstance(r, dict) and r.get("recommended") is True
    ]
    problems += [
        f"task {t!r} has more than one recommended entry"
        for t in sorted({t for t in recommended if recommended.count(t) > 1}, key=str)
    ]
    if problems:
        shown = "; ".join(problems[:8]) + (
            f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        )
        raise CatalogError(
            f"{source or 'The catalog'} is invalid: {shown}.", "Fix the catalog file."
        )
    entries = [_entry(raw) for raw in raw_entries]
    return Catalog(entries, source)


def default_catalog_path() -> Path:
    return Path(__file__).with_name("catalog.json")


def catalog_path(override: str | os.PathLike[str] | None = None) -> Path:
    """The catalog file: an explicit path, else RESTORA_CATALOG, else the shipped catalog."""
    chosen = override or os.environ.get(CATALOG_ENV)
    return Path(chosen).expanduser() if chosen else default_catalog_path()


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Load and validate the catalog (see catalog_path for which file)."""
    resolved = catalog_path(path)
    stat = _stat(resolved)
    return _load_cached(str(resolved), stat)


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError as exc:
        raise CatalogError(
            f"Cannot read the model catalog {path} ({exc.strerror}).",
            f"Check {CATALOG_ENV} or reinstall Restora.",
        ) from None
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=8)
def _load_cached(path: str, _stat_key: tuple[int, int]) -> Catalog:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogError(
            f"Cannot read the model catalog {path} ({exc}).", f"Check {CATALOG_ENV}."
        ) from None
    return parse_catalog(data, path)
