"""The sample corpus's config: what steps may show and say, how the videos are encoded, which flaws they carry;
and its presets (``default``, ``demo``, ``tiny``, ``tiny_plain``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from fractions import Fraction

from mcn.errors import MCNError
from mcn.sample.captions import CAPTION_WRITERS
from mcn.sample.video import BACKGROUNDS, CODEC_PROFILES, COLOURS, MOTIONS, SHAPES

# Narration sentences; each names {colour}, {shape} and {motion}, and may name the {background}.
TEMPLATES = (
    "now the {colour} {shape} {motion}",
    "next the {colour} {shape} {motion} on the {background} background",
    "watch as the {colour} {shape} {motion}",
    "here a {colour} {shape} {motion} on a {background} background",
    "then the {colour} {shape} {motion}",
    "in this step the {colour} {shape} {motion}",
)


def _check_weights(name: str, options: tuple, weights: tuple[float, ...]) -> None:
    if not options or len(options) != len(weights) or min(weights) < 0 or sum(weights) <= 0:
        raise MCNError(f"{name}: give at least one option and one non-negative weight per option")


@dataclass(frozen=True, kw_only=True)
class MediaConfig:
    """How long the videos are and how they are encoded (options are drawn in proportion to their weights)."""

    step_seconds: tuple[float, float] = (4.0, 7.0)
    steps_per_video: tuple[int, int] = (2, 4)
    # Pause between two steps, in which only the background shows (the shape has left); 0 = steps follow on.
    step_gap_seconds: float = 0.0
    min_video_seconds: float = 10.0
    resolutions: tuple[tuple[int, int], ...] = ((640, 360), (854, 480), (1280, 720), (360, 640), (480, 854))
    resolution_weights: tuple[float, ...] = (0.45, 0.2, 0.05, 0.2, 0.1)
    frame_rates: tuple[str, ...] = ("24", "25", "30", "30000/1001")
    frame_rate_weights: tuple[float, ...] = (0.3, 0.3, 0.2, 0.2)
    codec_profiles: tuple[str, ...] = ("mp4-h264", "webm-vp9", "webm-vp8", "mkv-h264", "mkv-vp9")
    codec_profile_weights: tuple[float, ...] = (0.4, 0.2, 0.15, 0.15, 0.1)

    def __post_init__(self) -> None:
        # Sizes read back from a saved config are lists: store them as tuples, so equal configs compare equal.
        object.__setattr__(self, "resolutions", tuple(tuple(size) for size in self.resolutions))
        if not 0.5 <= self.step_seconds[0] <= self.step_seconds[1]:
            raise MCNError(f"step_seconds {self.step_seconds}: give (low, high) with 0.5 <= low <= high")
        if not 0.0 <= self.step_gap_seconds <= 5.0:
            raise MCNError(f"step_gap_seconds {self.step_gap_seconds}: use a value in [0, 5]")
        if not 1 <= self.steps_per_video[0] <= self.steps_per_video[1]:
            raise MCNError(f"steps_per_video {self.steps_per_video}: give (low, high) with 1 <= low <= high")
        _check_weights("resolutions", self.resolutions, self.resolution_weights)
        _check_weights("frame_rates", self.frame_rates, self.frame_rate_weights)
        _check_weights("codec_profiles", self.codec_profiles, self.codec_profile_weights)
        if any(w % 2 or h % 2 or min(w, h) < 64 for w, h in self.resolutions):
            raise MCNError(f"resolutions {self.resolutions}: use even sizes of at least 64 (yuv420p)")
        if any(Fraction(rate) <= 0 for rate in self.frame_rates):
            raise MCNError(f"frame_rates {self.frame_rates}: use positive rates such as '25' or '30000/1001'")
        if unknown := set(self.codec_profiles) - set(CODEC_PROFILES):
            raise MCNError(f"unknown codec profiles {sorted(unknown)}; choose from {sorted(CODEC_PROFILES)}")


@dataclass(frozen=True, kw_only=True)
class NarrationConfig:
    """Voices, speaking rate, background sound and the caption formats written."""

    # Variants with "breath" (f2, f3, f5) read uninitialised memory in espeak-ng: not reproducible, so not used.
    voices: tuple[str, ...] = ("en-us", "en-us+m3", "en+m1", "en-gb-x-rp", "en-us+f4", "en-us+f1", "en+m6")
    words_per_minute: tuple[int, int] = (150, 185)
    noise_level: float = 0.03
    caption_formats: tuple[str, ...] = ("vtt", "srt", "csv", "json")
    caption_format_weights: tuple[float, ...] = (0.5, 0.2, 0.15, 0.15)

    def __post_init__(self) -> None:
        if not self.voices:
            raise MCNError("give at least one espeak-ng voice, e.g. 'en-us'")
        if not 80 <= self.words_per_minute[0] <= self.words_per_minute[1] <= 450:
            raise MCNError(f"words_per_minute {self.words_per_minute}: give (low, high) within 80..450")
        if not 0.0 <= self.noise_level <= 0.5:
            raise MCNError(f"noise_level {self.noise_level}: use a value in [0, 0.5]")
        _check_weights("caption_formats", self.caption_formats, self.caption_format_weights)
        if unknown := set(self.caption_formats) - set(CAPTION_WRITERS):
            raise MCNError(
                f"unknown caption formats {sorted(unknown)}; choose from {sorted(CAPTION_WRITERS)}"
            )


@dataclass(frozen=True, kw_only=True)
class FlawConfig:
    """Fractions of videos made deliberately awkward; each flaw hits at least one video when above zero.
    Corrupt files and broken or missing captions only hit training videos."""

    corrupt_fraction: float = 0.075
    no_audio_fraction: float = 0.05
    no_captions_fraction: float = 0.075
    broken_captions_fraction: float = 0.05

    def __post_init__(self) -> None:
        for name, value in self._fractions().items():
            if not 0.0 <= value <= 0.5:
                raise MCNError(f"{name}={value}: use a value in [0, 0.5]")

    def _fractions(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def counts(self, num_videos: int) -> dict[str, int]:
        """Videos per flaw: corrupt, no_audio, no_captions, broken_captions."""
        fractions = {name.removesuffix("_fraction"): value for name, value in self._fractions().items()}
        return {name: max(1, round(f * num_videos)) if f > 0 else 0 for name, f in fractions.items()}


@dataclass(frozen=True, kw_only=True)
class SampleCorpusConfig:
    num_videos: int = 40
    seed: int = 0
    heldout_video_fraction: float = 0.25
    heldout_combination_fraction: float = 0.25  # of all (colour, shape, motion) triples
    num_glove_words: int = 20000
    # What steps may show: a smaller palette gives each colour, shape and motion more training examples.
    colours: tuple[str, ...] = tuple(COLOURS)
    shapes: tuple[str, ...] = SHAPES
    motions: tuple[str, ...] = MOTIONS
    # Background patterns drawn behind the shape (each step draws one, and a muted tint).
    backgrounds: tuple[str, ...] = BACKGROUNDS
    templates: tuple[str, ...] = TEMPLATES
    media: MediaConfig = field(default_factory=MediaConfig)
    narration: NarrationConfig = field(default_factory=NarrationConfig)
    flaws: FlawConfig = field(default_factory=FlawConfig)

    def __post_init__(self) -> None:
        if self.num_videos < 4:
            raise MCNError(f"--videos must be at least 4 (got {self.num_videos}): train and held-out videos")
        if self.seed < 0:
            raise MCNError(f"--seed must be a non-negative integer (got {self.seed})")
        for name in ("heldout_video_fraction", "heldout_combination_fraction"):
            if not 0.05 <= getattr(self, name) <= 0.5:
                raise MCNError(f"{name}={getattr(self, name)}: use a value in [0.05, 0.5]")
        for name, known in (
            ("colours", COLOURS),
            ("shapes", SHAPES),
            ("motions", MOTIONS),
            ("backgrounds", BACKGROUNDS),
        ):
            chosen = tuple(getattr(self, name))
            object.__setattr__(self, name, chosen)
            if not chosen or len(set(chosen)) != len(chosen) or not set(chosen) <= set(known):
                raise MCNError(f"{name} {chosen}: give distinct names from {tuple(known)}")
        object.__setattr__(self, "templates", tuple(self.templates))
        fields = ("{colour}", "{shape}", "{motion}")
        if not self.templates or not all(all(f in t for f in fields) for t in self.templates):
            raise MCNError(f"templates {self.templates}: each must contain {', '.join(fields)}")
        if len(self.colours) * len(self.shapes) * len(self.motions) < 8:
            raise MCNError(
                "colours x shapes x motions must give at least 8 combinations, so that some can be held out"
            )
        if self.num_glove_words < 0:
            raise MCNError("num_glove_words must be >= 0 (the corpus vocabulary is always written)")
        if self._num_clean_train(self.num_videos) < 1:
            enough = next((n for n in range(self.num_videos, 10_000) if self._num_clean_train(n) >= 1), None)
            fix = "use fewer flaws" if enough is None else f"use --videos {enough} or more (or fewer flaws)"
            raise MCNError(
                f"{self.num_videos} videos leave no clean training video once held-out and deliberately broken "
                f"ones are set aside; {fix}"
            )

    def _num_clean_train(self, num_videos: int) -> int:
        counts = self.flaws.counts(num_videos)
        return (
            num_videos
            - self.num_heldout(num_videos)
            - counts["corrupt"]
            - counts["no_captions"]
            - counts["broken_captions"]
        )

    def num_heldout(self, num_videos: int | None = None) -> int:
        """Held-out videos in a corpus of ``num_videos`` (default: this config's)."""
        return max(
            1, round(self.heldout_video_fraction * (self.num_videos if num_videos is None else num_videos))
        )


def default() -> SampleCorpusConfig:
    """Steps of 4-7 s, 2-4 per video (about 16 s on average), 360p-720p."""
    return SampleCorpusConfig()


def demo() -> SampleCorpusConfig:
    """The demo's corpus: 2-3 steps of 3.5-5 s (10-15 s per video), so that extracting it with the full-size
    ResNet-152 and ResNeXt-101 on 2 CPU cores takes minutes, not an hour."""
    return replace(default(), media=replace(default().media, step_seconds=(3.5, 5.0), steps_per_video=(2, 3)))


def tiny() -> SampleCorpusConfig:
    """Short, small videos for tests: steps of ~2 s at 144p-180p, fast speech, a small word table, and a
    palette of 4 colours x 3 shapes x 4 motions, so that a few dozen training clips show each of them often."""
    media = MediaConfig(
        step_seconds=(1.5, 2.0),
        steps_per_video=(2, 3),
        min_video_seconds=3.0,
        resolutions=((320, 180), (256, 144), (180, 320)),
        resolution_weights=(0.4, 0.3, 0.3),
    )
    narration = NarrationConfig(words_per_minute=(260, 320))
    return SampleCorpusConfig(
        num_glove_words=2000,
        media=media,
        narration=narration,
        colours=("red", "green", "blue", "yellow"),
        shapes=("circle", "square", "triangle"),
        motions=("left", "right", "spin", "grow"),
    )


def tiny_plain() -> SampleCorpusConfig:
    """:func:`tiny` made for learning from features of networks without trained weights (the end-to-end
    test's corpus): plain backgrounds (such networks see stripes, checks and dots more than the shape in front
    of them), one landscape size in H.264 (shape features change with the frame's layout and blur with low
    bit rates), and a 1 s pause between steps, so that the whole seconds a step's features are pooled over
    (the evaluation takes feature rows ``int(start) .. int(end)``) show its own shape or the empty background,
    never the neighbouring step's. Corrupt files, missing audio and broken captions stay."""
    config = tiny()
    media = replace(
        config.media,
        step_gap_seconds=1.0,
        resolutions=((320, 180),),
        resolution_weights=(1.0,),
        codec_profiles=("mp4-h264", "mkv-h264"),
        codec_profile_weights=(0.7, 0.3),
    )
    return replace(config, backgrounds=("plain",), media=media)


PRESETS = {"default": default, "demo": demo, "tiny": tiny, "tiny_plain": tiny_plain}
