"""Benchmark protocols as named, explicit objects: what a benchmark definition carries besides its clips or videos.

Retrieval (:class:`RetrievalSettings`): the audio length of a clip, the caption length, the task whose number the
paper reports, and two named ranking protocols (:class:`RankingProtocol`), both always reported:

- ``reference``: what the public MCN code computes for that benchmark (its ``metrics.compute_metrics`` over the
  matrix its evaluation loop builds), number for number except for ties (see :mod:`mcn.eval.retrieval`);
- ``strict``: every annotated clip counts; a clip missing from the store is a miss at rank N (0-based, N = the
  annotated clips), for R@k and for the median and mean ranks.

A ranking protocol has three rules:

- ``gallery``: which benchmark clips found in the store form the (queries × gallery) matrix: ``present`` (all of
  them; a clip whose video has no audio gets a zero audio embedding) or ``with_audio`` (only clips whose video
  has audio, as the released MSR-VTT features: 968 of 1,000);
- ``denominator``: what R@k divides by: ``rows`` (the matrix's rows) or ``annotated`` (every clip of the
  definition, e.g. MSR-VTT's 1,000);
- ``median``: which ranks the median (and mean) rank is taken over: ``rows`` (the matrix's rows only) or
  ``annotated`` (the rows plus one rank N per annotated clip that is not a row).

Localisation (:class:`LocalizationSettings`): the per-second audio window and length, the step-name length, how
scores become decoding costs, which recall the paper reports, and which list of videos the definition holds.

The named settings of the four benchmarks (:data:`RETRIEVAL`, :data:`LOCALIZATION`) are what ``mcn eval prepare``
writes into a definition; the job reads them back from the definition, never from a file name.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcn.errors import MCNError

GALLERY_RULES = ("present", "with_audio")
COUNT_RULES = ("rows", "annotated")
PROTOCOLS = ("reference", "strict")
RETRIEVAL_TASKS = ("text_to_video_audio", "text_to_video")  # T·(V+A)ᵀ and T·Vᵀ
SCORE_NORMALISATIONS = ("none", "log_softmax")
LOCALIZATION_RECALLS = ("recall_task_macro", "recall_task_micro", "recall_video_macro")
MIN_AUDIO_FRAMES = 16  # the audio network downsamples 16x


@dataclass(frozen=True, kw_only=True)
class RankingProtocol:
    """Which clips form the matrix and what R@k and the median rank are taken over (module docstring)."""

    gallery: str
    denominator: str
    median: str

    def __post_init__(self) -> None:
        if self.gallery not in GALLERY_RULES:
            raise MCNError(f"protocol gallery rule {self.gallery!r} is unknown; use one of {GALLERY_RULES}")
        for name in ("denominator", "median"):
            if getattr(self, name) not in COUNT_RULES:
                raise MCNError(
                    f"protocol {name} rule {getattr(self, name)!r} is unknown; use one of {COUNT_RULES}"
                )


STRICT = RankingProtocol(gallery="present", denominator="annotated", median="annotated")
ROWS = RankingProtocol(gallery="present", denominator="rows", median="rows")  # the public metric's default


@dataclass(frozen=True, kw_only=True)
class RetrievalSettings:
    """A retrieval benchmark's settings; ``source`` says where in the public code each one comes from."""

    audio_frames: int  # log-mel frames per clip, padded or truncated
    max_words: int = 20
    primary_task: str  # the task the published numbers use
    reference: RankingProtocol
    strict: RankingProtocol = STRICT
    source: str = ""

    def __post_init__(self) -> None:
        if self.audio_frames < MIN_AUDIO_FRAMES:
            raise MCNError(f"settings.audio_frames must be >= {MIN_AUDIO_FRAMES}, got {self.audio_frames}")
        if self.max_words < 1:
            raise MCNError(f"settings.max_words must be >= 1, got {self.max_words}")
        if self.primary_task not in RETRIEVAL_TASKS:
            raise MCNError(
                f"settings.primary_task must be one of {RETRIEVAL_TASKS}, got {self.primary_task!r}"
            )

    def protocol(self, name: str) -> RankingProtocol:
        if name not in PROTOCOLS:
            raise MCNError(f"unknown protocol {name!r}; use one of {', '.join(PROTOCOLS)}")
        return getattr(self, name)


@dataclass(frozen=True, kw_only=True)
class LocalizationSettings:
    """A localisation benchmark's settings (per-second recipe of the reference's CrossTask loader)."""

    audio_frames: int = 1024  # per second: the 8 s window's log-mel, padded or truncated
    window_s: float = 8.0
    max_words: int = 30
    score_normalisation: str  # "none": cost = -score; "log_softmax": cost = -log_softmax over the steps
    primary_recall: str  # the recall the published numbers use
    video_list: str = ""  # which videos the definition holds (a file name, or how they were chosen)
    source: str = ""

    def __post_init__(self) -> None:
        if self.audio_frames < MIN_AUDIO_FRAMES or self.window_s <= 0 or self.max_words < 1:
            raise MCNError(
                f"settings.audio_frames must be >= {MIN_AUDIO_FRAMES}, window_s > 0 and max_words >= 1"
            )
        if self.score_normalisation not in SCORE_NORMALISATIONS:
            raise MCNError(
                f"settings.score_normalisation must be one of {SCORE_NORMALISATIONS}, "
                f"got {self.score_normalisation!r}"
            )
        if self.primary_recall not in LOCALIZATION_RECALLS:
            raise MCNError(
                f"settings.primary_recall must be one of {LOCALIZATION_RECALLS}, got {self.primary_recall!r}"
            )


# ---- the named benchmarks ----------------------------------------------------------------------------------


def youcook2() -> RetrievalSettings:
    """YouCook2 validation clips: T·(V+A) over the clips present, R@k and the median over the rows present."""
    return RetrievalSettings(
        audio_frames=5120,
        primary_task="text_to_video_audio",
        reference=ROWS,
        source="audio frames: args.py youcook_num_frames_multiplier=5 x 1024 (youcook_dataloader.py); "
        "similarity: train_tri_kmeans.py Eval_retrieval, text x (video + audio); R@k and median: "
        "metrics.py compute_metrics divides by x.shape[0] and takes np.median over the rows",
    )


def msrvtt() -> RetrievalSettings:
    """MSR-VTT 1k-A: T·V over the 968 clips with audio, R@k divided by the 1,000 test clips, median over 968."""
    return RetrievalSettings(
        audio_frames=3072,
        primary_task="text_to_video",
        reference=RankingProtocol(gallery="with_audio", denominator="annotated", median="rows"),
        source="audio frames: args.py msrvtt_num_frames_multiplier=3 x 1024 (msrvtt_dataloader.py); "
        "rows: the released test features hold the 968 clips with audio; similarity: local_eval.py text x "
        "video (train_tri_kmeans.py: text x (video + audio)); R@k: metrics.py compute_metrics with "
        "eval_msrvtt divides by 1000, np.median over the rows",
    )


def generic_retrieval(audio_frames: int) -> RetrievalSettings:
    """Any other clip list: the YouCook2 rules (rows present) with the given audio length."""
    return RetrievalSettings(
        audio_frames=audio_frames,
        primary_task="text_to_video_audio",
        reference=ROWS,
        source="generic: the clips present, as metrics.py compute_metrics without eval_msrvtt",
    )


def crosstask(video_list: str = "every primary-task annotation") -> LocalizationSettings:
    """CrossTask primary tasks: cost = -score, recall averaged over a task's videos, then over tasks."""
    return LocalizationSettings(
        score_normalisation="none",
        primary_recall="recall_task_macro",
        video_list=video_list,
        source="eval_cross.py align_eval (dp with exactly_one, C = -scores) over cvpr19_test.csv "
        "(howto100m_crosstask_eval, not public); cvpr19_dataloader.py: 8 s audio window, 1,024 frames",
    )


def mining_youtube(video_list: str = "every test annotation") -> LocalizationSettings:
    """Mining YouTube test videos: cost = -log_softmax(score over steps), recall averaged over all videos."""
    return LocalizationSettings(
        score_normalisation="log_softmax",
        primary_recall="recall_video_macro",
        video_list=video_list,
        source="eval_cross.py with --mining (Mining_DataLoader over mining.csv)",
    )


def generic_localization(score_normalisation: str, video_list: str = "") -> LocalizationSettings:
    """Any other localisation benchmark: the per-second recipe, recall averaged over all videos."""
    return LocalizationSettings(
        score_normalisation=score_normalisation, primary_recall="recall_video_macro", video_list=video_list
    )


RETRIEVAL = {"youcook2": youcook2, "msrvtt": msrvtt}
LOCALIZATION = {"crosstask": crosstask, "mining_youtube": mining_youtube}
# Clips the official split annotates: the "annotated" count when only a matrix is given (`mcn eval score`).
ANNOTATED_CLIPS = {"youcook2": 3492, "msrvtt": 1000}
