"""The scratch-and-dust finder on real photographs: it finds drawn scratches, hairs and dust
(precision and recall, tests/defect_samples.py, computed from the masks) and stays nearly
silent on the clean photographs; the sensitivity control and the options do what they say."""

from __future__ import annotations

import statistics
from dataclasses import replace

import numpy as np
import pytest

from backend import defects
from tests.defect_samples import draw_defects_with_cover, score

PHOTOS = ("astronaut", "camera", "coffee")
SEEDS = range(6)


def _planes(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 3 else image[..., None]


def _photo(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


@pytest.mark.parametrize("name", PHOTOS)
def test_finds_drawn_damage_on_a_real_photograph_and_leaves_the_clean_one_alone(
    name: str,
) -> None:
    photo = _photo(name)
    clean = defects.propose(_planes(photo))
    assert clean.shape == photo.shape[:2] and clean.dtype == bool
    assert clean.mean() < 0.005, f"{clean.mean():.2%} of the clean {name} marked"
    scores = []
    for seed in SEEDS:
        damaged, truth, drawn = draw_defects_with_cover(photo, seed)
        scores.append(score(defects.propose(_planes(damaged)), truth, drawn))
    precision = statistics.median(s.precision for s in scores)
    recall = statistics.median(s.recall for s in scores)
    assert precision > 0.8 and recall > 0.8, (name, [(s.precision, s.recall) for s in scores])


def test_sensitivity_trades_what_is_found_for_what_is_mistaken() -> None:
    photo = _photo("camera")
    damaged, truth, drawn = draw_defects_with_cover(photo, 0)
    found = {}
    for sensitivity in (0.0, 0.5, 1.0):
        settings = defects.DefectSettings(sensitivity=sensitivity)
        found[sensitivity] = score(defects.propose(_planes(damaged), settings), truth, drawn)
    assert found[0.0].recall < found[0.5].recall < found[1.0].recall
    assert found[0.0].flagged < found[0.5].flagged < found[1.0].flagged


def test_scratches_and_dust_can_each_be_turned_off() -> None:
    damaged, _, _ = draw_defects_with_cover(_photo("astronaut"), 1)
    pixels = _planes(damaged)
    both = defects.propose(pixels)
    lines = defects.propose(pixels, defects.DefectSettings(specks=False))
    dust = defects.propose(pixels, defects.DefectSettings(scratches=False))
    assert lines.any() and dust.any()
    assert np.array_equal(both, lines | dust)
    assert lines.sum() > 2 * dust.sum()  # scratches and hairs are most of the damage drawn
    nothing = defects.DefectSettings(scratches=False, specks=False)
    assert not defects.propose(pixels, nothing).any()


def test_grow_widens_the_mask_and_a_longer_shortest_scratch_keeps_fewer() -> None:
    damaged, _, _ = draw_defects_with_cover(_photo("camera"), 2)
    pixels = _planes(damaged)
    settings = defects.DefectSettings(specks=False)
    tight = defects.propose(pixels, replace(settings, grow=0))
    grown = defects.propose(pixels, replace(settings, grow=3))
    assert not (tight & ~grown).any() and grown.sum() > 1.5 * tight.sum()
    longer = defects.propose(pixels, replace(settings, min_length=151))
    assert longer.sum() < defects.propose(pixels, settings).sum()


def test_16_bit_and_colour_inputs_give_the_8_bit_gray_answer() -> None:
    damaged, _, _ = draw_defects_with_cover(_photo("camera")[:200, :200], 4)
    gray = defects.propose(damaged[..., None])
    as16 = defects.propose(damaged[..., None].astype(np.uint16) * 257)
    rgba = np.dstack([damaged, damaged, damaged, np.full_like(damaged, 255)])
    assert gray.any()
    assert np.array_equal(gray, as16) and np.array_equal(gray, defects.propose(rgba))


def test_a_flat_or_tiny_image_has_no_defects() -> None:
    assert not defects.propose(np.full((64, 64, 1), 128, np.uint8)).any()
    assert not defects.propose(np.zeros((3, 5, 3), np.uint8)).any()
