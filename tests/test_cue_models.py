"""The cue world's bundled models (issue 24): they load by name, their card is what the code
measures now, and they meet the reliance thresholds fixed before they were measured — the cue model
follows the cue, the control does not."""

import json
import re

import pytest
import torch

import nibcore
from nibcore.downloads import file_digest
from nibcore.models import BUNDLED, bundled_file
from nibcore.world import cue_card, cues


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    return {name: nibcore.load_model(name, device="cpu") for name in cue_card.MODELS}


def test_the_models_load_by_name_with_their_recorded_weights(models):
    for name, model in models.items():
        assert model.name == name
        config = json.loads(bundled_file(f"{BUNDLED[name]}.json").read_text())
        assert config["world"] == cue_card.MODELS[name]
        assert config["sha256"] == file_digest(bundled_file(f"{BUNDLED[name]}.safetensors"))


#: a decimal number as the card prints it (not inside a sha256: those are words of hex digits)
NUMBER = re.compile(r"(?<![0-9a-f])-?\d+\.\d+(?![0-9a-f])")


def test_the_card_is_the_measurement(models):
    """The committed card is what the code measures now: the same text, every printed number
    within one unit of its last digit (another numeric path can round the other way)."""
    card = bundled_file("CUE_CLIP_CARD.md").read_text()
    fresh = cue_card.render(models)
    hint = "regenerate: python -m nibcore.world.cue_card --out data/CUE_CLIP_CARD.md"
    assert NUMBER.split(card) == NUMBER.split(fresh), hint
    for old, new in zip(NUMBER.findall(card), NUMBER.findall(fresh)):
        unit = 10.0 ** -len(old.split(".")[1])
        assert abs(float(old) - float(new)) <= unit * 1.000001, (old, new, hint)


def test_the_cue_model_follows_the_cue_and_the_control_does_not(models):
    cue = cues.reliance(models["cue"], n=cue_card.CARD_N)
    control = cues.reliance(models["cue-control"], n=cue_card.CARD_N)
    assert cues.thresholds_met(cue, control)
    assert cue["drop_cue"].low > control["drop_cue"].high  # painting the cue out costs more
