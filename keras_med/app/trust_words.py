"""The trust outputs in words a person can weigh: a score as a validation percentile, a set as a sentence.

What the page knows about the guard and the sets comes from the export's
`assets.extra/keras_med.json` (`read_trust_facts`); a model behind TF Serving's REST API has none
there, and the page then states the raw score.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from keras_med.evaluation.ood import score_percentile

NOT_ANSWERED_OOD = "Not answered: this image is unlike the images the model was trained on"


@dataclass
class TrustFacts:
    """What the export says about its guard and sets.

    Attributes:
        score_quantiles: The calibration images' out-of-distribution score quantiles (empty: unknown).
        pass_rate: The share of calibration images the guard passes, or None.
        calibrated_on: "validation images" or "images of this site" (after `keras-med calibrate`).
        coverage: The sets' target coverage, or None (no sets).
        measured_coverage: `{"coverage", "per_class": {name: coverage}}` on the test split, or None.
        resize: How the served graph brings an image to the model size ("resize" or "pad").
    """

    score_quantiles: list = field(default_factory=list)
    pass_rate: float | None = None
    calibrated_on: str = "validation images"
    coverage: float | None = None
    measured_coverage: dict | None = None
    resize: str = "resize"


def read_trust_facts(version_dir: str | Path | None) -> TrustFacts:
    """The facts of a SavedModel version folder (empty facts for None or an export without them)."""
    path = Path(version_dir) / "assets.extra" / "keras_med.json" if version_dir is not None else None
    if path is None or not path.is_file():
        return TrustFacts()
    metadata = json.loads(path.read_text(encoding="utf-8"))
    ood, sets = metadata.get("ood") or {}, metadata.get("conformal") or {}
    return TrustFacts(score_quantiles=ood.get("score_quantiles") or [],
                      pass_rate=ood.get("validation_pass_rate"),
                      calibrated_on="images of this site" if metadata.get("site_calibration") else "validation images",
                      coverage=sets.get("coverage"), measured_coverage=sets.get("measured"),
                      resize=metadata.get("resize", "resize"))


def _percent(share: float) -> str:
    """99.7% / 100% / 12%: one decimal only where it says something."""
    value = 100.0 * share
    return f"{value:.1f}%" if 0.0 < value < 100.0 and abs(value - round(value)) >= 0.05 else f"{value:.0f}%"


def score_words(facts: TrustFacts, score: float | None, in_distribution: bool) -> str:
    """The out-of-distribution score against the images the guard was calibrated on, as a sentence."""
    if score is None:
        return ""
    share = score_percentile(facts.score_quantiles, score)
    if share is None:
        return f"out-of-distribution score {score:.3g} (higher is more unusual)"
    guard = f" (the guard passes {_percent(facts.pass_rate)} of them)" if facts.pass_rate is not None else ""
    if share >= 1.0:
        return f"farther from the training images than every one of the {facts.calibrated_on} the guard was " \
               f"calibrated on{guard}"
    return f"farther from the training images than {_percent(share)} of the {facts.calibrated_on} the guard was " \
           f"calibrated on{guard}"


def set_words(facts: TrustFacts, members: list[str], label) -> str:
    """The conformal set as a sentence (HTML); `label` gives a class's readable name."""
    names = ", ".join(f'<span class="km-set-class">{html.escape(label(name))}</span>' for name in members)
    coverage = f"With {_percent(facts.coverage)} coverage" if facts.coverage else "Within the conformal set"
    if not members:
        return (f'{coverage}, <span class="km-set">no class</span> is plausible enough: the set is empty, which '
                "means the model rates every class below what its calibration images needed. The image is unlike "
                "what the sets were calibrated on, or hard; treat the answer as not given.")
    if len(members) == 1:
        return f'{coverage}, the diagnosis is <span class="km-set" data-size="1">{names}</span>.'
    return f'{coverage}, the diagnosis is one of: <span class="km-set" data-size="{len(members)}">{names}</span>.'


def coverage_words(facts: TrustFacts) -> str:
    """What the sets achieved on the test split, overall and per true class; "" when unknown."""
    measured = facts.measured_coverage
    if not measured or measured.get("coverage") is None:
        return ""
    per_class = ", ".join(f"{html.escape(name)} {_percent(value)}" for name, value in measured.get("per_class", {}).items()
                          if value is not None)
    return (f"On the test split these sets held the true class {_percent(measured['coverage'])} of the time"
            + (f"; per true class: {per_class}" if per_class else "") + ". A class well below the target is "
            "covered less often than the headline says.")
