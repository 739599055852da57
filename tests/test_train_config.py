"""The training config: frozen keyword-only sections, validation as MCNError, presets, overrides, store sizes."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mcn.configs import apply_overrides, config_from_dict, config_to_dict
from mcn.errors import MCNError
from mcn.train import config as presets
from mcn.train.config import DataConfig, KMeansConfig, OptimConfig, TrainConfig, resolve_for_store


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_every_preset_is_valid_and_survives_a_json_round_trip(name):
    config = presets.PRESETS[name]()
    again = config_from_dict(TrainConfig, json.loads(json.dumps(config_to_dict(config))))
    assert again == config


def test_sections_are_frozen_and_keyword_only():
    config = presets.tiny()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.logging.progress = True
    with pytest.raises(TypeError):
        DataConfig("store")


def test_betas_are_normalised_to_a_tuple():
    assert OptimConfig(betas=[0.5, 0.9]).betas == (0.5, 0.9)
    assert apply_overrides(presets.tiny(), {"optim.betas": "0.8,0.99"}).optim.betas == (0.8, 0.99)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"data.batch_videos": "0"}, "data.batch_videos"),
        ({"data.num_workers": "-1"}, "data.num_workers"),
        ({"data.num_clips": "0"}, "data.num_clips"),
        ({"data.min_time": "-1"}, "data.min_time"),
        ({"optim.lr": "0"}, "optim.lr"),
        ({"optim.betas": "0.9,1.0"}, "optim.betas"),
        ({"schedule.epochs": "0"}, "schedule.epochs"),
        ({"kmeans.fit_every": "0"}, "kmeans.fit_every"),
        ({"kmeans.weight": "-1"}, "kmeans.weight"),
        ({"precision.dtype": "fp8"}, "precision.dtype"),
        ({"checkpoint.keep_last": "0"}, "checkpoint.keep_last"),
        ({"logging.every_steps": "0"}, "logging.every_steps"),
        ({"device": "gpu"}, "cuda:N"),
        ({"device": "cuda:x"}, "cuda:N"),
        ({"data.num_clips": "1"}, "num_clips >= 2"),
        ({"kmeans.num_clusters": "17"}, "exceeds the 16 clips"),  # tiny: 4 videos x 4 clips
        ({"model.audio_kernel": "4"}, "model.audio_kernel"),
    ],
)
def test_invalid_settings_are_one_line_user_errors(overrides, needle):
    with pytest.raises(MCNError, match=needle) as error:
        apply_overrides(presets.tiny(), overrides)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:3"])
def test_devices_accepted(device):
    assert apply_overrides(presets.tiny(), {"device": device}).device == device


def test_kmeans_settings_are_not_checked_when_it_is_off():
    config = apply_overrides(presets.tiny(), {"kmeans.enabled": "false", "kmeans.num_clusters": "99"})
    assert config.kmeans == KMeansConfig(
        enabled=False, num_clusters=99, queue_steps=2, fit_every=2, max_iter=10
    )


def test_presets_differ_where_their_docstrings_say():
    reference, demo, sample = presets.reference(), presets.demo_cpu(), presets.sample_tiny()
    assert (reference.data.batch_videos, reference.data.num_clips, reference.kmeans.num_clusters) == (
        128,
        32,
        256,
    )
    assert (reference.optim.lr, reference.schedule.warmup_steps, reference.precision.dtype) == (
        1e-4,
        5000,
        "fp16",
    )
    assert reference.device == "auto" and demo.device == "cpu"
    assert (sample.data.min_time, sample.optim.lr, sample.optim.weight_decay) == (1.5, 3e-4, 0.1)
    assert sample.model.video_batchnorm and not demo.model.video_batchnorm
    assert (
        dataclasses.replace(
            sample, data=demo.data, model=demo.model, optim=demo.optim, schedule=demo.schedule
        )
        == demo
    )


def test_clip_options_follow_the_data_section():
    options = DataConfig(
        num_clips=3, min_time=2.0, max_frames=50, max_words=5, clamp_audio_start=False
    ).clip_options()
    assert (options.num_clips, options.min_time, options.max_frames, options.max_words) == (3, 2.0, 50, 5)
    assert options.clamp_audio_start is False


def test_model_input_sizes_come_from_the_store():
    config = presets.tiny()
    resolved, notes = resolve_for_store(config, word_dim=50, video_dim=4096)
    assert resolved.model.word_dim == 50 and resolved.model.video_dim == 4096
    assert notes == ["model.word_dim 8 -> 50 (the store's word vectors)"]
    assert resolve_for_store(resolved, 50, 4096) == (resolved, [])
    assert config.model.word_dim == 8  # the original is untouched
