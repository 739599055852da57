"""The sample corpus config: frozen, keyword-only, validated with messages that say how to fix; its presets."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest

from mcn.configs import config_from_dict, config_to_dict
from mcn.errors import MCNError
from mcn.sample.config import (
    PRESETS,
    FlawConfig,
    MediaConfig,
    NarrationConfig,
    SampleCorpusConfig,
    tiny,
)


def test_config_validation_says_how_to_fix():
    with pytest.raises(MCNError, match="at least 4"):
        SampleCorpusConfig(num_videos=3)
    with pytest.raises(MCNError, match="--videos 5 or more"):
        SampleCorpusConfig(num_videos=4)
    with pytest.raises(MCNError, match="no clean training video.*--videos 9 or more"):
        replace(tiny(), num_videos=4, flaws=FlawConfig(corrupt_fraction=0.5))
    with pytest.raises(MCNError, match="even"):
        replace(tiny().media, resolutions=((321, 180),), resolution_weights=(1.0,))
    with pytest.raises(MCNError, match="colours .*distinct names"):
        replace(tiny(), colours=("red", "mauve"))
    with pytest.raises(MCNError, match="at least 8 combinations"):
        replace(tiny(), colours=("red",), shapes=("circle",), motions=("left", "right"))
    with pytest.raises(MCNError, match="must contain"):
        replace(tiny(), templates=("the {colour} {shape}",))
    with pytest.raises(MCNError, match="backgrounds .*distinct names"):
        replace(tiny(), backgrounds=("plain", "plain"))
    with pytest.raises(MCNError, match="step_gap_seconds"):
        replace(tiny().media, step_gap_seconds=-1.0)
    with pytest.raises(MCNError, match="unknown codec profiles"):
        MediaConfig(codec_profiles=("avi-mpeg4",), codec_profile_weights=(1.0,))
    with pytest.raises(MCNError, match="one non-negative weight per option"):
        MediaConfig(frame_rates=("25", "30"), frame_rate_weights=(1.0,))
    with pytest.raises(MCNError, match="unknown caption formats"):
        NarrationConfig(caption_formats=("ass",), caption_format_weights=(1.0,))
    with pytest.raises(MCNError, match=r"no_audio_fraction=0.9: use a value in \[0, 0.5\]"):
        FlawConfig(no_audio_fraction=0.9)


def test_configs_are_frozen_and_keyword_only():
    config = tiny()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_videos = 8  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.media.step_seconds = (1.0, 2.0)  # type: ignore[misc]
    with pytest.raises(TypeError):
        FlawConfig(0.1)  # type: ignore[misc]
    # Lists given for the palette are stored as tuples, so the config stays hashable and compares equal.
    listed = replace(tiny(), colours=["red", "blue"])
    assert listed.colours == ("red", "blue") and listed == replace(tiny(), colours=("red", "blue"))
    assert hash(listed) == hash(replace(tiny(), colours=("red", "blue")))


def test_flaw_counts_hit_at_least_one_video_each():
    counts = FlawConfig(corrupt_fraction=0.3, no_audio_fraction=0.1, no_captions_fraction=0.0).counts(10)
    assert counts == {"corrupt": 3, "no_audio": 1, "no_captions": 0, "broken_captions": 1}
    assert FlawConfig().counts(4) == {"corrupt": 1, "no_audio": 1, "no_captions": 1, "broken_captions": 1}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_survive_the_saved_config_round_trip(name):
    config = PRESETS[name]()
    assert config_from_dict(SampleCorpusConfig, config_to_dict(config)) == config


def test_presets():
    assert PRESETS["tiny_plain"]().backgrounds == ("plain",)
    media = PRESETS["tiny_plain"]().media
    assert media.step_gap_seconds == 1.0 and media.resolutions == ((320, 180),)
    assert PRESETS["demo"]().media.step_seconds == (3.5, 5.0) and PRESETS["default"]().num_videos == 40
    assert PRESETS["tiny"]().num_heldout() == 10 and PRESETS["tiny"]().num_heldout(8) == 2
