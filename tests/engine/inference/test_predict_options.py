"""``PredictOptions``/``MaskOptions``: one run's choices as a checked, frozen value."""
import dataclasses

import pytest

from engine.inference.options import MaskOptions, PredictOptions, with_keywords


def test_a_threshold_outside_zero_to_one_is_refused_when_the_options_are_made():
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="--threshold"):
            PredictOptions(threshold=bad)
    assert PredictOptions(threshold=0.0).threshold == 0.0 and PredictOptions(threshold=1.0).threshold == 1.0


def test_options_cannot_change_once_made():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PredictOptions().overlay = True
    with pytest.raises(dataclasses.FrozenInstanceError):
        MaskOptions().batch_size = 2


def test_mask_options_carry_the_output_choices_and_resolve_the_worker_count():
    options = PredictOptions(overlay=True, threshold=0.25, batch_size=3, progress=False)
    assert options.mask_options(num_workers=5) == MaskOptions(overlay=True, threshold=0.25, batch_size=3,
                                                               num_workers=5, progress=False)
    assert PredictOptions(num_workers=0).mask_options(num_workers=5).num_workers == 0


def test_keywords_replace_fields_and_unknown_keywords_are_refused():
    base = PredictOptions(overlay=True)
    assert with_keywords(base, {}) is base
    assert with_keywords(base, {"threshold": 0.5}) == PredictOptions(overlay=True, threshold=0.5)
    with pytest.raises(ValueError, match="--threshold"):
        with_keywords(base, {"threshold": 2.0})
    with pytest.raises(TypeError, match="treshold"):
        with_keywords(base, {"treshold": 0.5})
