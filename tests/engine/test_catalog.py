"""The checked-in model catalog: its schema, its sources, and how it is looked up."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from backend import paths
from backend.errors import InvalidParameterError, ModelNotFoundError
from backend.models.catalog import (
    CATALOG_ENV,
    FACE_DETECTION_FOLDER,
    FIELDS,
    OPTIONAL_FIELDS,
    TASKS,
    TRAITS,
    CatalogError,
    check_file_name,
    default_catalog_path,
    load_catalog,
    parse_catalog,
)

REPO = Path(__file__).resolve().parents[2]
RAW = json.loads(default_catalog_path().read_text(encoding="utf-8"))
MODELS = RAW["models"]
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def test_catalog_ships_with_the_package() -> None:
    assert default_catalog_path() == REPO / "backend" / "models" / "catalog.json"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(
        r'^\[tool\.setuptools\.package-data\]\n(#.*\n)*"backend\.models" = \["catalog\.json"\]',
        pyproject,
        re.M,
    )


def test_every_entry_has_every_field_well_formed() -> None:
    assert RAW["version"] == 1 and len(MODELS) >= 20
    folders = set(paths.MODEL_FOLDERS) | {FACE_DETECTION_FOLDER}
    for m in MODELS:
        where = m.get("name")
        assert list(m) == [*FIELDS, *OPTIONAL_FIELDS], where
        assert re.fullmatch(r"[a-z0-9][a-z0-9._+-]*", m["name"]), where
        assert m["task"] in TASKS, where
        assert m["folder"] in folders, where
        assert check_file_name(m["file"]) == m["file"], where
        assert m["sha256"] is None or HEX64.match(m["sha256"]), where
        assert m["size"] is None or (type(m["size"]) is int and m["size"] > 0), where
        assert isinstance(m["non_commercial"], bool) and isinstance(m["restricted_use"], bool)
        for text in ("family", "licence", "sha256_source", "description", "url"):
            assert isinstance(m[text], str) and m[text].strip() == m[text] != "", (where, text)
            assert "\n" not in m[text], (where, text)
        assert re.fullmatch(r"[A-Za-z0-9.+-]+", m["licence"]), (where, "SPDX-like licence id")
        assert m["url"].startswith("https://"), where
        if m["sha256"] is None:
            assert "--allow-unverified" in m["description"], where


def test_names_and_files_are_unique() -> None:
    names = [m["name"] for m in MODELS]
    assert len(names) == len(set(names))
    files = [(m["folder"], m["file"]) for m in MODELS]
    assert len(files) == len(set(files))


def test_every_task_is_covered_and_most_hashes_are_pinned() -> None:
    catalog = load_catalog()
    for task in TASKS:
        assert catalog.by_task(task), task
    verified = [e for e in catalog if e.verified]
    assert len(verified) >= 0.8 * len(catalog)
    for e in verified:
        assert e.size is not None, e.name  # every pinned hash came with its size


def test_well_known_models_and_their_licences() -> None:
    catalog = load_catalog()
    expect = {
        "realesrgan-x4plus": ("upscale", "upscale_models", "BSD-3-Clause", False),
        "realesrgan-x4plus-anime-6b": ("upscale", "upscale_models", "BSD-3-Clause", False),
        "realesr-general-x4v3": ("upscale", "upscale_models", "BSD-3-Clause", False),
        "swinir-m-x4-realsr": ("upscale", "upscale_models", "Apache-2.0", False),
        "hat-x4-imagenet": ("upscale", "upscale_models", "Apache-2.0", False),
        "4x-ultrasharp": ("upscale", "upscale_models", "CC-BY-NC-SA-4.0", True),
        "gfpgan-v1.4": ("face-restore", "facerestore_models", "Apache-2.0", False),
        "codeformer": ("face-restore", "facerestore_models", "NTU-S-Lab-1.0", True),
        "restoreformer-plusplus": ("face-restore", "facerestore_models", "Apache-2.0", False),
        "ddcolor-modelscope": ("colorize", "colorization", "Apache-2.0", False),
        "big-lama": ("inpaint", "inpaint", "Apache-2.0", False),
        "scunet-color-real-psnr": ("denoise", "upscale_models", "Apache-2.0", False),
        "sdxl-base-1.0": ("refine", "checkpoints", "CreativeML-OpenRAIL++-M", False),
        "qwen-image-edit-2509-q4km": ("instruct-edit", "diffusion_models", "Apache-2.0", False),
        "instruct-pix2pix": ("instruct-edit", "checkpoints", "CreativeML-OpenRAIL-M", False),
        "yunet-2023mar": ("face-detect", FACE_DETECTION_FOLDER, "MIT", False),
        "retinaface-resnet50": ("face-detect", FACE_DETECTION_FOLDER, "MIT", False),
    }
    for name, (task, folder, licence, non_commercial) in expect.items():
        e = catalog.get(name)
        assert (e.task, e.folder, e.licence, e.non_commercial) == (
            task,
            folder,
            licence,
            non_commercial,
        ), name
    assert catalog.get("sd15").needs_consent and catalog.get("codeformer").needs_consent
    assert not catalog.get("gfpgan-v1.4").needs_consent
    # hashes copied from the sources named in sha256_source (OpenModelDB, opencv_zoo LFS)
    assert catalog.get("realesrgan-x4plus").sha256.startswith("4fa0d38905f75ac0")
    assert catalog.get("yunet-2023mar").size == 232589


def test_every_entry_reads_well_in_an_editor() -> None:
    """A friendly label and traits from the known words; one recommended entry at most per
    task, and each one the editors may offer without a flag (pinned hash)."""
    catalog = load_catalog()
    for e in catalog:
        assert e.label and e.label != e.name, e.name
        assert set(e.traits) <= set(TRAITS), e.name
    for task in TASKS:
        recommended = [e for e in catalog.by_task(task) if e.recommended]
        assert len(recommended) <= 1, task
        assert all(e.verified for e in recommended), task
    assert catalog.recommended("upscale").name == "realesrgan-x4plus"
    assert catalog.recommended("face-restore").name == "gfpgan-v1.4"
    assert {"photo", "best"} <= set(catalog.get("realesrgan-x4plus").traits)
    assert "illustration" in catalog.get("realesrgan-x4plus-anime-6b").traits
    assert "fast" in catalog.get("realesr-general-x4v3").traits
    assert all("faces" in e.traits for e in catalog.by_task("face-restore"))
    assert catalog.get("realesrgan-x4plus").to_dict()["traits"] == ["photo", "best"]


def test_presentation_fields_are_optional() -> None:
    doc = bad(lambda ms: [m.pop(f) for m in ms for f in OPTIONAL_FIELDS])
    entry = parse_catalog(doc, "test catalog").get("realesrgan-x4plus")
    assert (entry.label, entry.traits, entry.recommended) == ("", (), False)
    assert entry.display_label == "realesrgan-x4plus"


def test_lookup_suggests_close_names() -> None:
    catalog = load_catalog()
    with pytest.raises(ModelNotFoundError) as err:
        catalog.get("gfpgan")
    assert "gfpgan-v1.4" in err.value.hint
    with pytest.raises(ModelNotFoundError) as err:
        catalog.get("realesrgan-x4")
    assert "realesrgan-x4plus" in err.value.hint
    assert catalog.get("CodeFormer").name == "codeformer"
    with pytest.raises(InvalidParameterError):
        catalog.by_task("paint")


def bad(change) -> dict:
    doc = copy.deepcopy(RAW)
    change(doc["models"])
    return doc


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda ms: ms.append(copy.deepcopy(ms[0])), "used twice"),
        (lambda ms: ms[0].update(sha256=ms[0]["sha256"].upper()), "64 lowercase hex"),
        (lambda ms: ms[0].update(sha256="abc"), "64 lowercase hex"),
        (lambda ms: ms[0].update(folder="somewhere"), "not a models folder"),
        (lambda ms: ms[0].update(file="../../.bashrc"), "not a plain file name"),
        (lambda ms: ms[0].update(file="/etc/passwd"), "not a plain file name"),
        (lambda ms: ms[0].update(licence=""), "licence must be"),
        (lambda ms: ms[0].update(task="paint"), "task"),
        (lambda ms: ms[0].update(size=-1), "size must be"),
        (lambda ms: ms[0].update(url="http://example.com/x.pth"), "https"),
        (lambda ms: ms[0].update(extra=1), "unknown fields extra"),
        (lambda ms: ms[0].pop("sha256_source"), "missing sha256_source"),
        (lambda ms: ms[0].update(sha256=None), "--allow-unverified"),
        (lambda ms: ms[0].update(non_commercial="no"), "non_commercial must be"),
        (lambda ms: ms[0].update(traits=["speedy"]), "unknown traits speedy"),
        (lambda ms: ms[0].update(traits="photo"), "traits must be a list"),
        (lambda ms: ms[0].update(traits=["fast", "fast"]), "listed twice"),
        (lambda ms: ms[0].update(label=" padded"), "label must be"),
        (lambda ms: ms[0].update(recommended="yes"), "recommended must be"),
        (lambda ms: ms[1].update(recommended=True), "more than one recommended"),
    ],
)
def test_parse_rejects_a_bad_entry(change, complaint: str) -> None:
    with pytest.raises(CatalogError) as err:
        parse_catalog(bad(change), "test catalog")
    assert complaint in err.value.message


def test_catalog_file_can_be_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = tmp_path / "mine.json"
    own.write_text(json.dumps({"version": 1, "models": MODELS[:2]}))
    monkeypatch.setenv(CATALOG_ENV, str(own))
    assert load_catalog().names == [MODELS[0]["name"], MODELS[1]["name"]]
    own.write_text("{not json")
    with pytest.raises(CatalogError):
        load_catalog()
    monkeypatch.setenv(CATALOG_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(CatalogError):
        load_catalog()


def test_installed_files_are_named_in_the_catalogs_words(tmp_path: Path) -> None:
    from backend.models.labels import ModelLabels, label_from_name

    folder = tmp_path / "upscale_models"
    folder.mkdir()
    (folder / "RealESRGAN_x4plus.pth").write_bytes(b"weights")
    labels = ModelLabels(load_catalog(), [tmp_path])
    words = labels.words("RealESRGAN_x4plus", "upscale_models", folder / "RealESRGAN_x4plus.pth")
    assert (words.label, words.traits, words.catalog_name) == (
        "Real-ESRGAN x4plus",
        ("photo", "best"),
        "realesrgan-x4plus",
    )
    assert "photos" in words.description
    # the same file name in another folder is not that entry
    other = labels.words("RealESRGAN_x4plus", "checkpoints", tmp_path / "RealESRGAN_x4plus.pth")
    assert other.label == "RealESRGAN x4plus" and other.traits == ()
    assert label_from_name("4x_NMKD-Superscale-SP_178000_G") == "4x NMKD-Superscale-SP 178000 G"
    assert ModelLabels(None, [tmp_path]).words("m", "upscale_models", folder / "m.pth").label == "m"


def test_the_offline_defaults_are_named_like_their_networks(real_models: Path) -> None:
    from backend.models.labels import ModelLabels

    labels = ModelLabels(load_catalog(), [real_models])
    folder = real_models / "upscale_models"
    x4plus = labels.words(
        "realesrgan-x4plus", "upscale_models", folder / "realesrgan-x4plus.safetensors"
    )
    assert (x4plus.label, x4plus.catalog_name) == ("Real-ESRGAN x4plus", "realesrgan-x4plus")
    assert "photo" in x4plus.traits
    anime = labels.words(
        "realesrgan-x4plus-anime", "upscale_models", folder / "realesrgan-x4plus-anime.safetensors"
    )
    assert "illustration" in anime.traits
    video = labels.words(
        "realesr-animevideov3-x2", "upscale_models", folder / "realesr-animevideov3-x2.safetensors"
    )
    assert video.label == "Real-ESRGAN AnimeVideo v3 x2" and "fast" in video.traits
    assert video.catalog_name == ""  # no catalog entry is this network
