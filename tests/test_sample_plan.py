"""The sample corpus's plan: seeded, limited to the palette, held-out combinations balanced and never trained on."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mcn.errors import MCNError
from mcn.sample.config import FlawConfig, tiny
from mcn.sample.plan import MOTION_PHRASES, balanced_combinations, plan_corpus, vocabulary
from mcn.sample.speech import SpeechSynthesizer

CONFIG = replace(tiny(), num_videos=10, seed=1, flaws=FlawConfig(corrupt_fraction=0.3, no_audio_fraction=0.1))


@pytest.fixture(scope="module")
def speech() -> SpeechSynthesizer:
    return SpeechSynthesizer()


def _texts(plan) -> list[str]:
    return [s["text"] for v in plan.videos for s in v["steps"]]


def test_same_seed_gives_same_plan_and_another_seed_does_not():
    # Fresh synthesizers: the same sentences in the same order give the same samples whatever ran before.
    plan, again = plan_corpus(CONFIG, SpeechSynthesizer()), plan_corpus(CONFIG, SpeechSynthesizer())
    assert plan.videos == again.videos and plan.heldout_combinations == again.heldout_combinations
    assert all(
        (a is None and b is None) or np.array_equal(a, b)
        for a, b in zip(plan.soundtracks, again.soundtracks, strict=True)
    )
    other = plan_corpus(replace(CONFIG, seed=2), SpeechSynthesizer())
    assert _texts(other) != _texts(plan)


def test_flaws_and_heldout_videos_are_assigned_as_configured(speech):
    plan = plan_corpus(CONFIG, speech)
    flags = [v["flags"] for v in plan.videos]
    assert sorted(f["corrupt"] for f in flags if f["corrupt"]) == ["not_a_video", "truncated", "zero_bytes"]
    assert sum(f["no_captions"] for f in flags) == sum(f["broken_captions"] for f in flags) == 1
    assert sum(f["no_audio"] for f in flags) == 1
    heldout = [v for v in plan.videos if v["split"] == "heldout"]
    assert len(heldout) == 2 and not any(f for v in heldout for k, f in v["flags"].items() if k != "no_audio")
    assert [t is None for t in plan.soundtracks] == [f["no_audio"] for f in flags]
    truncated = next(v for v in plan.videos if v["flags"]["corrupt"] == "truncated")
    assert truncated["codec_profile"] == "mp4-h264"  # an MP4 cut short loses its index


def test_heldout_steps_use_unseen_combinations_worded_as_clean_training_steps(speech):
    plan = plan_corpus(replace(CONFIG, num_videos=16), speech)
    heldout = {tuple(c) for c in plan.heldout_combinations}
    flawed = ("corrupt", "no_captions", "broken_captions")  # a video without audio still has its captions
    clean = [v for v in plan.videos if v["split"] == "train" and not any(v["flags"][f] for f in flawed)]
    triples = {split: {(s["colour"], s["shape"], s["motion"]) for v in plan.videos if v["split"] == split
                       for s in v["steps"]} for split in ("train", "heldout")}  # fmt: skip
    assert triples["heldout"] and triples["heldout"] <= heldout and not triples["train"] & heldout
    clean_words = {w for v in clean for s in v["steps"] for w in s["text"].split()}
    heldout_words = {
        w for v in plan.videos if v["split"] == "heldout" for s in v["steps"] for w in s["text"].split()
    }
    assert heldout_words <= clean_words and clean_words <= plan.vocabulary == vocabulary()


def test_steps_are_timed_around_their_speech(speech):
    plan = plan_corpus(CONFIG, speech)
    for video, sentences in zip(plan.videos, plan.sentences, strict=True):
        steps = video["steps"]
        assert steps[0]["start"] == 0.0 and steps[-1]["end"] == video["duration"]
        assert all(b["start"] == pytest.approx(a["end"]) for a, b in zip(steps, steps[1:]))
        assert video["duration"] >= CONFIG.media.min_video_seconds
        for step, words in zip(steps, sentences, strict=True):
            assert step["start"] < step["speech_start"] < step["speech_end"] < step["end"]
            assert [w for _, _, w in words] == step["text"].split()
            assert words[0][0] >= step["speech_start"] - 1e-3  # the ground truth is rounded to ms
            assert words[-1][1] == pytest.approx(step["speech_end"], abs=1e-3)
            assert step["name"].startswith(f"{step['colour']} {step['shape']} ")
            assert step["name"].split(" ", 2)[2] in MOTION_PHRASES[step["motion"]]


def test_palette_and_templates_limit_what_steps_show_and_say(speech):
    config = replace(
        tiny(),
        num_videos=12,
        seed=3,
        colours=("red", "blue"),
        shapes=("circle", "star"),
        motions=("left", "grow"),
        backgrounds=("plain", "dotted"),
        templates=("now the {colour} {shape} {motion}",),
    )
    plan = plan_corpus(config, speech)
    steps = [s for v in plan.videos for s in v["steps"]]
    assert {s["colour"] for s in steps} == {"red", "blue"} and {s["shape"] for s in steps} == {
        "circle",
        "star",
    }
    assert {s["motion"] for s in steps} == {"left", "grow"}
    assert all(s["text"].startswith(f"now the {s['colour']} {s['shape']} ") for s in steps)
    assert len(plan.heldout_combinations) == 2  # a quarter of the 8 combinations
    assert {s["background"] for s in steps} == {"plain", "dotted"}
    plain = plan_corpus(replace(config, backgrounds=("plain",)), speech)
    assert {s["background"] for v in plain.videos for s in v["steps"]} == {"plain"}


def test_heldout_combinations_ask_about_every_value_about_equally(speech):
    triples = [(c, s, m) for c in "rgby" for s in "csq" for m in "LRSG"]
    for seed in range(5):
        chosen = balanced_combinations(np.random.default_rng(seed), triples, 12)
        assert len(set(chosen)) == 12 and set(chosen) <= set(triples)
        for k, values in enumerate(("rgby", "csq", "LRSG")):
            counts = [sum(t[k] == v for t in chosen) for v in values]
            assert max(counts) == 12 // len(values) == min(counts), (seed, k, counts)
    assert balanced_combinations(np.random.default_rng(0), triples, 12) == balanced_combinations(
        np.random.default_rng(0), triples, 12
    )
    # Caps that cannot all be met still give as many distinct combinations as asked for.
    lopsided = [("r", s, m) for s in "csq" for m in "LRSG"] + [("g", "c", "L")]
    chosen = balanced_combinations(np.random.default_rng(0), lopsided, 8)
    assert len(set(chosen)) == 8 and set(chosen) <= set(lopsided)
    plan = plan_corpus(replace(tiny(), num_videos=40, seed=2), speech)
    shapes = [t[1] for t in plan.heldout_combinations]
    assert len(plan.heldout_combinations) == 12 and all(shapes.count(s) == 4 for s in set(shapes))


def test_steps_can_be_separated_by_a_pause(speech):
    config = replace(tiny(), num_videos=12, seed=1, media=replace(tiny().media, step_gap_seconds=1.0))
    plan = plan_corpus(config, speech)
    for video in plan.videos:
        steps = video["steps"]
        assert all(b["start"] == pytest.approx(a["end"] + 1.0) for a, b in zip(steps, steps[1:]))
        assert all(s["start"] < s["speech_start"] < s["speech_end"] < s["end"] for s in steps)


def test_too_few_clean_videos_to_word_a_heldout_step_is_a_user_error(speech):
    # One clean training video of one step: no held-out combination is made of what it said.
    flaws = FlawConfig(corrupt_fraction=0.5, no_audio_fraction=0.0, no_captions_fraction=0.0,
                       broken_captions_fraction=0.0)  # fmt: skip
    config = replace(tiny(), num_videos=4, flaws=flaws, media=replace(tiny().media, steps_per_video=(1, 1)))
    with pytest.raises(MCNError, match="too few clean training videos to word any held-out step"):
        plan_corpus(config, speech)
