"""The words a finished job adds to "Added '...'": the seed, how far it moved, the
reference images used and the task's own note."""

from __future__ import annotations

from plugin.common.result_words import result_notes


def test_seed_and_fidelity_in_words() -> None:
    notes = result_notes({"seed": 1234, "fidelity": {"psnr_db": 31.234, "ssim": 0.9512,
                                                     "changed_share": 0.1234}})
    assert notes == ["Seed 1234.", "Moved from the input: PSNR 31.2 dB, SSIM 0.951, 12.3% of "
                     "pixels changed."]


def test_identical_and_nothing_to_say() -> None:
    assert result_notes({"fidelity": {"psnr_db": 99.0, "ssim": 1.0, "changed_share": 0.0}}) \
        == ["Identical to the input."]
    assert result_notes({"faces": 2}) == [] and result_notes({"seed": True}) == []


def test_skipped_stages_in_words() -> None:
    notes = result_notes({"notes": {"faces": "no model installed (it looks in "
                                             "facerestore_models/)", "upscale": "turned off"}})
    assert notes == ["Skipped: faces (no model installed), upscale (turned off)."]


def test_references_used_and_the_tasks_own_note() -> None:
    assert result_notes({"seed": 7, "references": 2}) == ["Seed 7.", "2 reference images used."]
    assert result_notes({"references": 1}) == ["1 reference image used."]
    unused = "InstructPix2Pix takes one picture: the reference images were not used."
    assert result_notes({"references": 0, "note": unused}) == [unused]
    assert result_notes({"references": True, "note": "  "}) == []


def test_the_backends_speed_note_names_the_fast_model() -> None:
    # what backend.speed_advice.SpeedNote.to_dict sends after a long automatic upscale
    note = {"model": "realesrgan-x4plus", "seconds": 312.4, "faster_model": "ClearReality4x",
            "faster_seconds": 8.2, "message": "..."}
    assert result_notes({"speed_note": note}) == [
        "Faster: ClearReality4x, about 8 s here against about 5 min; choose it in the model list."]
    assert result_notes({"speed_note": {**note, "seconds": "soon"}}) == []
    assert result_notes({"speed_note": {"model": "x"}}) == []
