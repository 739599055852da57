"""The sample corpus's plan: which video is held out or flawed, how it is encoded, what each step shows and
says, and the narration synthesised for it. Everything is drawn from one seeded generator, in a fixed order.

Held-out videos show only (colour, shape, motion) combinations no training video shows, and are worded only
with colours, shapes, motion phrases, sentence templates and background words that the captions of clean
training videos already contain.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from mcn.errors import MCNError
from mcn.sample.captions import Word
from mcn.sample.config import TEMPLATES, SampleCorpusConfig
from mcn.sample.speech import SpeechSynthesizer, Utterance, mix_soundtrack
from mcn.sample.video import BACKGROUND_TINTS, BACKGROUNDS, CODEC_PROFILES, COLOURS, SHAPES, StepScene

MOTION_PHRASES = {
    "left": ("slides to the left", "moves to the left"),
    "right": ("slides to the right", "glides to the right"),
    "up": ("moves up", "rises up"),
    "down": ("moves down", "drops down"),
    "spin": ("spins around", "rotates"),
    "grow": ("grows bigger", "gets larger"),
    "shrink": ("shrinks", "gets smaller"),
    "bounce": ("bounces", "keeps bouncing"),
}
CORRUPT_KINDS = ("truncated", "zero_bytes", "not_a_video")
SPEECH_TAIL_SECONDS = 0.3  # silence kept after a sentence before its step may end


def vocabulary(templates: tuple[str, ...] = TEMPLATES) -> set[str]:
    """Every word a narration sentence can contain."""
    parts = [*templates, *COLOURS, *SHAPES, *BACKGROUNDS, *itertools.chain(*MOTION_PHRASES.values())]
    return {w for part in parts for w in part.split() if not w.startswith("{")}


@dataclass
class CorpusPlan:
    videos: list[dict]  # ground-truth entries, JSON-ready
    scenes: list[list[StepScene]]
    sentences: list[list[list[Word]]]  # per video, per sentence, its words timed on the video's clock
    soundtracks: list[np.ndarray | None]  # float mono at sample_rate; None = no audio track
    sample_rate: int
    heldout_combinations: list[list[str]]
    vocabulary: set[str]


def _spread(rng: np.random.Generator, options: tuple, weights: tuple[float, ...], n: int) -> list:
    """``n`` draws in proportion to ``weights`` (largest remainder, so small corpora still mix), shuffled."""
    share = np.asarray(weights, float) / sum(weights) * n
    counts = np.floor(share).astype(int)
    for i in np.argsort(-(share - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    picks = [option for option, count in zip(options, counts, strict=True) for _ in range(count)]
    return [picks[i] for i in rng.permutation(n)]


def _units(triple: tuple[str, str, str]) -> set[tuple]:
    return {("c", triple[0]), ("s", triple[1]), ("m", triple[2])}


class _StepChooser:
    """Draws what steps show and say. Clean training steps prefer wording units (colour, shape, motion, motion
    phrase, template, spoken background) not yet seen; held-out steps use only units seen in clean ones."""

    def __init__(
        self,
        rng: np.random.Generator,
        train_triples: list[tuple],
        heldout_triples: list[tuple],
        templates: tuple[str, ...] = TEMPLATES,
        backgrounds: tuple[str, ...] = BACKGROUNDS,
    ) -> None:
        self.rng, self.train_triples, self.heldout_triples = rng, train_triples, heldout_triples
        self.templates, self.backgrounds = templates, backgrounds
        self.seen: set[tuple] = set()

    def _pick(self, options: list, preferred: list | None = None):
        options = preferred or options
        return options[int(self.rng.integers(len(options)))]

    def choose(self, kind: str, used: set[tuple]) -> tuple[tuple[str, str, str], int, int, str]:
        """(triple, phrase index, template index, background) of a "clean", "other" or "heldout" step."""
        seen, heldout = self.seen, kind == "heldout"
        if heldout:
            triples = [t for t in self.heldout_triples if _units(t) <= seen]
            if not triples:
                raise MCNError("too few clean training videos to word any held-out step; use more videos")
        elif kind == "clean":
            fresh = [len(_units(t) - seen) for t in self.train_triples]
            most = max(fresh)
            triples = [t for t, f in zip(self.train_triples, fresh, strict=True) if f == most]
        else:
            triples = self.train_triples
        triple = self._pick(triples, [t for t in triples if t not in used])
        motion = triple[2]
        phrases, templates = list(range(len(MOTION_PHRASES[motion]))), list(range(len(self.templates)))
        # Held-out steps must use seen units (always possible); the others prefer unseen ones.
        phrase = self._pick(phrases, [i for i in phrases if (("p", motion, i) in seen) == heldout])
        template = self._pick(templates, [i for i in templates if (("t", i) in seen) == heldout])
        spoken_background = "{background}" in self.templates[template]
        backgrounds = list(self.backgrounds)
        if heldout and spoken_background:
            background = self._pick(backgrounds, [b for b in backgrounds if ("b", b) in seen])
        else:
            background = self._pick(backgrounds, [b for b in backgrounds if ("b", b) not in seen])
        if kind == "clean":
            seen |= _units(triple) | {("p", motion, phrase), ("t", template)}
            if spoken_background:
                seen.add(("b", background))
        return triple, phrase, template, background


def _assign_flags(config: SampleCorpusConfig, rng: np.random.Generator, heldout: set[int]) -> list[dict]:
    counts = config.flaws.counts(config.num_videos)
    flags = [
        dict(corrupt=None, broken_captions=False, no_captions=False, no_audio=False)
        for _ in range(config.num_videos)
    ]
    train = [i for i in rng.permutation(config.num_videos).tolist() if i not in heldout]
    corrupt, train = train[: counts["corrupt"]], train[counts["corrupt"] :]
    for n, i in enumerate(corrupt):
        flags[i]["corrupt"] = CORRUPT_KINDS[n % len(CORRUPT_KINDS)]
    for name in ("no_captions", "broken_captions"):
        for i in train[: counts[name]]:
            flags[i][name] = True
        train = train[counts[name] :]
    unflawed = sorted(set(train) | heldout)
    for i in rng.choice(unflawed, size=min(counts["no_audio"], len(unflawed) - 1), replace=False).tolist():
        flags[i]["no_audio"] = True
    return flags


def _narrate(
    steps: list[tuple],
    voice: str,
    wpm: int,
    fps: Fraction,
    config: SampleCorpusConfig,
    speech: SpeechSynthesizer,
    rng: np.random.Generator,
) -> tuple[list[dict], list[StepScene], list[list[Word]], list[tuple[float, Utterance]]]:
    """Time one video's steps around their synthesised sentences; the video ends on a frame boundary."""
    entries, scenes, sentences, placed, start = [], [], [], [], 0.0
    for n, ((colour, shape, motion), phrase, template, background) in enumerate(steps):
        motion_phrase = MOTION_PHRASES[motion][phrase]
        text = config.templates[template].format(
            colour=colour, shape=shape, motion=motion_phrase, background=background
        )
        utterance = speech(text, voice, wpm)
        offset = round(float(rng.uniform(0.3, 0.8)), 2)
        speech_end = offset + utterance.duration + SPEECH_TAIL_SECONDS
        end = start + np.ceil(max(float(rng.uniform(*config.media.step_seconds)), speech_end) * 10) / 10
        if n == len(steps) - 1:
            end = float(round(max(end, config.media.min_video_seconds) * fps) / fps)
        tint = BACKGROUND_TINTS[int(rng.integers(len(BACKGROUND_TINTS)))]
        scenes.append(StepScene(start, end, colour, shape, motion, background, tint))
        placed.append((start + offset, utterance))
        sentences.append([(start + offset + s, start + offset + e, w) for s, e, w in utterance.words])
        entries.append({
            "start": round(start, 3), "end": round(end, 3), "text": text, "name": f"{colour} {shape} {motion_phrase}",
            "colour": colour, "shape": shape, "motion": motion, "background": background,
            "speech_start": round(start + offset, 3), "speech_end": round(start + offset + utterance.duration, 3),
        })  # fmt: skip
        start = end + config.media.step_gap_seconds
    return entries, scenes, sentences, placed


def balanced_combinations(
    rng: np.random.Generator, triples: list[tuple[str, str, str]], count: int
) -> list[tuple[str, str, str]]:
    """``count`` of ``triples`` drawn at random such that each colour, each shape and each motion appears in
    at most ``ceil(count / number of its values)`` of them: the held-out benchmark then asks about every value
    about equally often, and its difficulty does not swing with the seed (a plain random draw can give a
    held-out set that is two thirds squares)."""
    values = [sorted({t[k] for t in triples}) for k in range(3)]
    caps = [-(-count // len(v)) for v in values]
    best: list[tuple[str, str, str]] = []
    for _ in range(100):
        used = [dict.fromkeys(v, 0) for v in values]
        chosen = []
        for i in rng.permutation(len(triples)).tolist():
            triple = triples[i]
            if all(used[k][triple[k]] < caps[k] for k in range(3)):
                chosen.append(triple)
                for k in range(3):
                    used[k][triple[k]] += 1
                if len(chosen) == count:
                    return chosen
        best = max(best, chosen, key=len)
    rest = [t for t in triples if t not in best]  # caps that cannot all be met: fill up at random
    return best + [rest[i] for i in rng.permutation(len(rest))[: count - len(best)].tolist()]


def plan_corpus(config: SampleCorpusConfig, speech: SpeechSynthesizer) -> CorpusPlan:
    """Draw the whole corpus from ``config.seed`` and synthesise its narration."""
    rng = np.random.default_rng(config.seed)
    num_videos, media, narration = config.num_videos, config.media, config.narration
    heldout = set(rng.choice(num_videos, size=config.num_heldout(), replace=False).tolist())
    flags = _assign_flags(config, rng, heldout)
    profiles = _spread(rng, media.codec_profiles, media.codec_profile_weights, num_videos)
    sizes = _spread(rng, media.resolutions, media.resolution_weights, num_videos)
    rates = _spread(rng, media.frame_rates, media.frame_rate_weights, num_videos)
    caption_formats = _spread(rng, narration.caption_formats, narration.caption_format_weights, num_videos)
    triples = list(itertools.product(config.colours, config.shapes, config.motions))
    num_heldout_triples = max(1, round(config.heldout_combination_fraction * len(triples)))
    heldout_triples = sorted(balanced_combinations(rng, triples, num_heldout_triples))
    chooser = _StepChooser(
        rng,
        sorted(set(triples) - set(heldout_triples)),
        heldout_triples,
        config.templates,
        config.backgrounds,
    )
    kinds = [
        "heldout"
        if i in heldout
        else "other"
        if f["corrupt"] or f["broken_captions"] or f["no_captions"]
        else "clean"
        for i, f in enumerate(flags)
    ]

    # Clean training videos are drawn first so that the held-out ones can be worded from what they said.
    drawn: dict[int, tuple] = {}
    for i in sorted(range(num_videos), key=lambda i: ("clean", "other", "heldout").index(kinds[i])):
        used: set[tuple] = set()
        steps = []
        for _ in range(int(rng.integers(media.steps_per_video[0], media.steps_per_video[1], endpoint=True))):
            steps.append(chooser.choose(kinds[i], used))
            used.add(steps[-1][0])
        voice = narration.voices[int(rng.integers(len(narration.voices)))]
        drawn[i] = (steps, voice, int(rng.integers(*narration.words_per_minute, endpoint=True)))

    plan = CorpusPlan(
        [], [], [], [], speech.sample_rate, [list(t) for t in heldout_triples], vocabulary(config.templates)
    )
    for i in range(num_videos):
        steps, voice, wpm = drawn[i]
        fps = Fraction(rates[i])
        entries, scenes, sentences, placed = _narrate(steps, voice, wpm, fps, config, speech, rng)
        duration = scenes[-1].end
        has_audio = not flags[i]["no_audio"]
        track = (
            mix_soundtrack(placed, duration, speech.sample_rate, narration.noise_level, rng)
            if has_audio
            else None
        )
        profile = (
            "mp4-h264" if flags[i]["corrupt"] == "truncated" else profiles[i]
        )  # MP4 loses its index when cut
        codec = CODEC_PROFILES[profile]
        caption_format = None if flags[i]["no_captions"] else caption_formats[i]
        split, stem = ("heldout" if i in heldout else "train"), f"vid{i:04d}"
        plan.videos.append({
            "id": stem, "file": f"{split}/{stem}.{codec.container}", "split": split, "container": codec.container,
            "video_codec": codec.video_codec, "audio_codec": codec.audio_codec if has_audio else None,
            "codec_profile": profile,
            "fps": round(float(fps), 3), "fps_fraction": str(fps), "width": sizes[i][0], "height": sizes[i][1],
            "num_frames": round(duration * fps), "duration": round(duration, 3), "has_audio": has_audio,
            "voice": voice, "words_per_minute": wpm, "caption_format": caption_format,
            "caption_file": None if caption_format is None else f"{split}/{stem}.{caption_format}",
            "steps": entries, "flags": flags[i],
        })  # fmt: skip
        plan.scenes.append(scenes)
        plan.sentences.append(sentences)
        plan.soundtracks.append(track)
    return plan
