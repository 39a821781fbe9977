"""Whether a checkpoint predicts noise (epsilon) or velocity (v), decided from the file itself.

SD 2.x comes in both kinds with the same architecture: the 768 px releases (2.0-v, 2.1) and
their fine-tunes predict v, the 512 px "base" ones noise. SDXL and SD 1.x are epsilon models,
except fine-tunes that say otherwise. Sampling a v-model as epsilon gives grey mush, and the
reverse burnt colours, so the answer matters; it is taken, in this order, from:

1. what the file declares: a `v_pred` key (ComfyUI writes an empty one when it saves a
   v-model; SDXL v-prediction fine-tunes ship it), Stability's ModelSpec metadata
   (`modelspec.prediction_type` "v" / "epsilon", or an architecture ending in "-v", as in
   "stable-diffusion-v2-768-v");
2. for SD 2.x, the trained resolution the metadata gives: 768 means v, 512 epsilon;
3. for SD 2.x, the weights: the norm biases of the last up-block's first transformer block
   spread wider in the v-models (standard deviation above 0.09, the split measured on the
   released 2.0/2.1 weights and relied on by ComfyUI);
4. otherwise epsilon.

The file's name is never used: a name says what someone typed, not what the weights learnt.
The `prediction` parameter overrides all of this for a file that decides wrongly.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from backend.diffusion import families
from backend.tasks.spec import param

PREDICTIONS = ("auto", "epsilon", "v_prediction")
#: the standard deviation of the last up-block's norm1 bias above which SD 2.x predicts v
V_BIAS_STD = 0.09
_LAST_NORM = re.compile(
    re.escape(families.UNET) + r"output_blocks\.(\d+)\.1\.transformer_blocks\.0\.norm1\.bias$"
)


@dataclass(frozen=True)
class Decision:
    prediction: str  # "epsilon" or "v_prediction"
    why: str


def decide(path: str | Path, family: str) -> Decision:
    """The prediction type of the single-file checkpoint at `path` (see the module's rules)."""
    header = families.read_header(path)
    meta = families.read_metadata(path)
    declared = _declared(header, meta)
    if declared is not None:
        return declared
    if family != "SD2.1":
        return Decision("epsilon", f"{family} predicts noise unless the file says otherwise")
    trained = families.trained_size(path)
    if trained in (512, 768):
        kind = "v_prediction" if trained == 768 else "epsilon"
        return Decision(kind, f"an SD 2.x model trained at {trained} px (its metadata)")
    spread = _last_norm_spread(path, header)
    if spread is not None:
        kind = "v_prediction" if spread > V_BIAS_STD else "epsilon"
        side = "above" if spread > V_BIAS_STD else "at or below"
        return Decision(kind, f"its last up-block norm bias spreads {spread:.3f}, {side} "
                        f"{V_BIAS_STD} (the 768-v releases spread wider)")  # fmt: skip
    return Decision("epsilon", "nothing in the file says v-prediction")


def _declared(header: dict, meta: dict[str, str]) -> Decision | None:
    if "v_pred" in header:
        return Decision("v_prediction", "the file has a v_pred key")
    kind = meta.get("modelspec.prediction_type", "").strip().lower()
    if kind in ("v", "v_prediction", "v-prediction"):
        return Decision("v_prediction", "its ModelSpec metadata says v")
    if kind in ("epsilon", "eps"):
        return Decision("epsilon", "its ModelSpec metadata says epsilon")
    arch = meta.get("modelspec.architecture", "").strip().lower()
    if arch.endswith("-v") or "-v/" in arch:
        return Decision("v_prediction", f"its ModelSpec architecture is {arch}")
    return None


def _last_norm_spread(path: str | Path, header: dict) -> float | None:
    found = [(int(m.group(1)), k) for k in header if (m := _LAST_NORM.match(k))]
    if not found:
        return None
    _, key = max(found)
    try:
        values = families.read_tensor(path, key)
    except (OSError, ValueError, KeyError, struct.error):
        return None
    return float(values.std())


@dataclass
class PredictionParams:
    """The user's override, for a file whose prediction type is decided wrongly."""

    prediction: str = param(
        "auto",
        "Prediction type",
        help="What the model predicts. Auto reads it from the file (a v_pred key, ModelSpec "
        "metadata, SD 2.x's trained size or weights); set it when a v-model comes out grey "
        "or an epsilon model burnt.",
        choices=PREDICTIONS,
        choice_labels=("from the file", "epsilon (noise)", "v-prediction"),
        advanced=True,
    )
