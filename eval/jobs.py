"""The evaluation batch jobs: several checkpoints × several benchmarks in one run, on CPU or GPU.

Each job embeds the benchmark's clips (or per-second frames and step names) with each checkpoint, scores them
in chunks, and writes to ``OUT``:

- ``metrics.json``: one flat dict, keys ``<checkpoint>/<benchmark>/<task>/<metric>``, e.g.
  ``step-001000/youcook2/text_to_video_audio/R@1`` (also ``OUT/<checkpoint>/<benchmark>/metrics.json`` with the
  keys below ``<benchmark>/``);
- ``config.json``: the resolved :class:`EvalConfig`;
- ``report.html``: a self-contained report (:mod:`mcn.eval.report`).

Retrieval tasks: ``text_to_video_audio`` (T·(V+A)ᵀ over the clips whose video has audio; clips missing from the
store or without audio count as misses out of ``num_total``, e.g. MSR-VTT's 1,000), ``text_to_video_audio_present``
(the same matrix, divided by the clips present) and ``text_to_video`` (T·Vᵀ over every clip in the store,
missing ones counted as misses).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mcn.configs import config_to_dict, save_config, write_json_atomic
from mcn.errors import MCNError
from mcn.eval import benchmarks, embed, localization, report, retrieval
from mcn.store import StoreReader, VideoRecord

RETRIEVAL_PRESETS: dict[str, dict] = {
    "youcook2": {"audio_frames": 5120},
    "msrvtt": {"audio_frames": 3072, "num_total": 1000},
}
DEFAULT_AUDIO_FRAMES = 2000  # generic benchmarks (e.g. the sample corpus' ~10-20 s clips)
RECORD_FIELDS = ("source_path", "duration", "has_audio", "feat_2d", "feat_3d", "logmel")


@dataclass
class RetrievalSettings:
    # None: the benchmark's preset (YouCook2 5,120, MSR-VTT 3,072, else 2,000)
    audio_frames: int | None = None
    num_total: int | None = None  # None: the preset (MSR-VTT 1,000), else the number of benchmark clips
    max_words: int = embed.CAPTION_MAX_WORDS
    num_examples: int = 4  # sample queries shown in the report
    top_k_shown: int = 5
    curve_max_k: int = 50

    def __post_init__(self) -> None:
        if self.audio_frames is not None and self.audio_frames < 16:
            raise ValueError("retrieval.audio_frames must be >= 16 (the audio network downsamples 16x)")
        if self.max_words < 1 or self.top_k_shown < 1 or self.curve_max_k < 1 or self.num_examples < 0:
            raise ValueError(
                "retrieval.max_words, top_k_shown and curve_max_k must be >= 1, num_examples >= 0"
            )


@dataclass
class LocalizationSettings:
    window_s: float = embed.LOCALIZATION_WINDOW_S
    audio_frames: int = embed.LOCALIZATION_AUDIO_FRAMES
    max_words: int = embed.STEP_MAX_WORDS
    # None: the benchmark's ("none" CrossTask, "log_softmax" Mining YouTube)
    score_normalisation: str | None = None

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.audio_frames < 16 or self.max_words < 1:
            raise ValueError("localization.window_s must be > 0, audio_frames >= 16, max_words >= 1")
        if self.score_normalisation not in (None, "none", "log_softmax"):
            raise ValueError("localization.score_normalisation must be 'none' or 'log_softmax'")


@dataclass
class EvalConfig:
    kind: str  # "retrieval" or "localization"
    checkpoints: list[str]
    benchmarks: list[str]
    store: str
    out: str
    device: str = "cpu"
    batch_size: int = 64
    chunk_size: int = retrieval.DEFAULT_CHUNK
    word_vectors: str | None = None  # None: the store manifest's "word_vectors" path, when it exists
    thumbnails: bool = True
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    localization: LocalizationSettings = field(default_factory=LocalizationSettings)

    def __post_init__(self) -> None:
        if self.kind not in ("retrieval", "localization"):
            raise ValueError(f"kind must be 'retrieval' or 'localization', got {self.kind!r}")
        if not self.checkpoints or not self.benchmarks:
            raise ValueError("give at least one --checkpoint and one --benchmark")
        if self.batch_size < 1 or self.chunk_size < 1:
            raise ValueError("batch_size and chunk_size must be >= 1")


def checkpoint_names(paths: list[str]) -> list[str]:
    """Short, distinct names for the checkpoints (folder or file name; parent added when names collide)."""
    names = [Path(p).name.removesuffix(".pth") or str(p) for p in paths]
    if len(set(names)) < len(names):
        names = [f"{Path(p).parent.name}_{n}" for p, n in zip(paths, names)]
    if len(set(names)) < len(names):
        names = [f"{i}_{n}" for i, n in enumerate(names)]
    return names


def text_vectorizer(reader: StoreReader, word_vectors: str | None) -> embed.TextVectorizer:
    """Store words first; then the given word2vec file, else the one the store manifest records
    (``vocabulary.word_vectors``, as the extraction job writes it, or ``word_vectors.path``)."""
    manifest = reader.manifest
    recorded = (manifest.get("vocabulary") or {}).get("word_vectors") or (
        manifest.get("word_vectors") or {}
    ).get("path")
    path = word_vectors or recorded
    fallback = None
    if path and Path(path).is_file():
        from mcn.extract.text import load_word_vectors

        fallback = load_word_vectors(path)
    elif word_vectors:
        raise MCNError(f"word vectors file {word_vectors} does not exist")
    return embed.TextVectorizer(reader.words, fallback)


def _read(reader: StoreReader, video_id: str) -> VideoRecord | None:
    return reader.read(video_id, RECORD_FIELDS) if video_id in reader else None


# ---- retrieval --------------------------------------------------------------------------------------------


def retrieval_settings_for(name: str, settings: RetrievalSettings) -> tuple[int, int | None]:
    preset = next((v for k, v in RETRIEVAL_PRESETS.items() if name.lower().startswith(k)), {})
    audio_frames = settings.audio_frames or preset.get("audio_frames", DEFAULT_AUDIO_FRAMES)
    return audio_frames, settings.num_total or preset.get("num_total")


def evaluate_retrieval(
    model,
    bench: benchmarks.RetrievalBenchmark,
    reader: StoreReader,
    vectorizer: embed.TextVectorizer,
    config: EvalConfig,
    name: str,
) -> report.Section:
    """Embed the clips present in the store, rank, and summarise one checkpoint on one benchmark."""
    settings = config.retrieval
    audio_frames, num_total = retrieval_settings_for(bench.name, settings)
    num_total = num_total or len(bench.clips)
    order = sorted(range(len(bench.clips)), key=lambda i: bench.clips[i].video_id)
    present, spans, has_audio, sources = [], [], [], []

    def items():
        current_id, current = None, None
        for index in order:
            clip = bench.clips[index]
            if clip.video_id != current_id:
                current_id, current = clip.video_id, _read(reader, clip.video_id)
            if current is None:
                continue
            start, end = benchmarks.whole_video_span(clip.start, clip.end, current.duration)
            present.append(index)
            spans.append((start, end))
            has_audio.append(bool(current.has_audio) and current.logmel.shape[1] > 0)
            sources.append(current.source_path)
            yield {
                **embed.clip_inputs(current, start, end, audio_frames),
                "text": vectorizer(clip.text, settings.max_words),
            }

    emb = embed.embed_stream(model, items(), config.batch_size, config.device)
    if not present:
        raise MCNError(
            f"no clip of benchmark {bench.name} is in store {reader.root}: run `mcn eval prepare` first"
        )
    audio_mask = np.asarray(has_audio)
    gallery_va = emb["video"][audio_mask] + emb["audio"][audio_mask]
    tasks = {
        "text_to_video_audio": (emb["text"][audio_mask], gallery_va, num_total),
        "text_to_video_audio_present": (emb["text"][audio_mask], gallery_va, None),
        "text_to_video": (emb["text"], emb["video"], num_total),
    }
    metrics, curves = {}, {}
    for task, (queries, gallery, total) in tasks.items():
        if len(queries) == 0:
            continue
        ranks = retrieval.ranks_from_embeddings(
            queries, gallery, chunk_size=config.chunk_size, device=config.device
        )
        metrics.update({f"{task}/{k}": v for k, v in retrieval.metrics_from_ranks(ranks, total).items()})
        metrics[f"{task}/gallery_size"] = len(gallery)
        metrics[f"{task}/chance_R@10"] = retrieval.chance_recall(10, len(gallery))
        if task != "text_to_video_audio_present":
            curves[task] = retrieval.recall_curve(ranks, settings.curve_max_k, total)
    metrics.update(
        {
            "num_clips": len(bench.clips),
            "num_clips_in_store": len(present),
            "num_clips_with_audio": int(audio_mask.sum()),
        }
    )
    examples = _examples(bench, emb, present, spans, sources, settings, config.chunk_size)
    notes = [
        f"audio padded/truncated to {audio_frames} frames; R@k divided by {num_total} (missing clips are misses); "
        f"{vectorizer.num_unknown} of {vectorizer.num_tokens} query words unknown"
    ]
    return report.Section(name, bench.name, "retrieval", metrics, curves, examples, notes=notes)


def _examples(
    bench, emb, present, spans, sources, settings: RetrievalSettings, chunk_size: int
) -> list[report.QueryExample]:
    """Top retrieved clips (text against video only, every present clip) for a few evenly spaced queries."""
    if settings.num_examples == 0:
        return []
    rows = np.unique(np.linspace(0, len(present) - 1, settings.num_examples).astype(int))
    top, scores = retrieval.top_k_from_embeddings(
        emb["text"][rows], emb["video"], settings.top_k_shown, chunk_size
    )
    examples = []
    for row, hits, values in zip(rows, top, scores):
        clip = bench.clips[present[row]]
        retrieved = [
            report.RetrievedClip(
                bench.clips[present[h]].video_id, *spans[h], float(v), bool(h == row), sources[h]
            )
            for h, v in zip(hits, values)
        ]
        examples.append(report.QueryExample(clip.text, clip.video_id, *spans[row], retrieved))
    return examples


# ---- localisation -----------------------------------------------------------------------------------------


def evaluate_localization(
    model,
    bench: benchmarks.LocalizationBenchmark,
    reader: StoreReader,
    vectorizer: embed.TextVectorizer,
    config: EvalConfig,
    name: str,
) -> report.Section:
    """Per-second embeddings, step scores, ordered DP and recall for one checkpoint on one benchmark."""
    settings = config.localization
    normalise = settings.score_normalisation or bench.score_normalisation
    results: dict[str, list[localization.VideoRecall]] = {"video_audio": [], "video": []}
    missing = too_short = 0
    for video in bench.videos:
        record = _read(reader, video.video_id)
        if record is None:
            missing += 1
            continue
        seconds = embed.num_seconds(record)
        if seconds < len(video.steps):
            too_short += 1
            continue
        frames = embed.embed_stream(
            model,
            embed.per_second_inputs(record, settings.window_s, settings.audio_frames),
            config.batch_size,
            config.device,
        )
        steps = embed.embed_stream(
            model,
            ({"text": vectorizer(text, settings.max_words)} for text in video.steps),
            config.batch_size,
            config.device,
        )["text"]
        truth_TK = localization.ground_truth_matrix(video.intervals, seconds)
        for scoring, frames_TD in (
            ("video_audio", frames["video"] + frames["audio"]),
            ("video", frames["video"]),
        ):
            cost_TK = localization.scores_to_cost(embed.step_scores(frames_TD, steps), normalise)
            predicted = localization.ordered_step_dp(cost_TK)
            results[scoring].append(
                localization.video_recall(video.video_id, video.task, predicted, truth_TK)
            )
    metrics: dict = {}
    for scoring, videos in results.items():
        if videos:
            metrics.update({f"{scoring}/{k}": v for k, v in localization.recall_summary(videos).items()})
    if not metrics:
        raise MCNError(
            f"no video of benchmark {bench.name} is in store {reader.root}: run `mcn eval prepare` first"
        )
    metrics.update(
        {"num_videos": len(bench.videos), "num_videos_missing": missing, "num_videos_too_short": too_short}
    )
    bars = {k.split("/")[2]: v for k, v in metrics.items() if k.startswith("video_audio/task/")}
    notes = [
        f"scores normalised with {normalise!r}; decoder: ordered DP, one second per step, background cost 0"
    ]
    return report.Section(name, bench.name, "localization", metrics, bars=bars, notes=notes)


# ---- the job ----------------------------------------------------------------------------------------------


def load_checkpoint(path: str, device: str):
    from mcn.train.checkpoint import load_model

    model, _ = load_model(path, device=device)
    return model.to(device).eval()


def run_eval(config: EvalConfig) -> dict:
    """Run every checkpoint on every benchmark; write metrics, config and report; return the flat metrics."""
    reader = StoreReader(config.store)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.json")
    loaded = [benchmarks.load_benchmark(path) for path in config.benchmarks]
    expected = (
        benchmarks.RetrievalBenchmark if config.kind == "retrieval" else benchmarks.LocalizationBenchmark
    )
    for path, bench in zip(config.benchmarks, loaded):
        if not isinstance(bench, expected):
            raise MCNError(f"{path} is not a {config.kind} benchmark (retrieval: .csv, localization: .json)")
    vectorizer = text_vectorizer(reader, config.word_vectors)
    evaluate = evaluate_retrieval if config.kind == "retrieval" else evaluate_localization
    sections, flat = [], {}
    for checkpoint, name in zip(config.checkpoints, checkpoint_names(config.checkpoints)):
        model = load_checkpoint(checkpoint, config.device)
        for bench in loaded:
            section = evaluate(model, bench, reader, vectorizer, config, name)
            sections.append(section)
            write_json_atomic(out / name / bench.name / "metrics.json", section.metrics)
            flat.update({f"{name}/{bench.name}/{k}": v for k, v in section.metrics.items()})
            print_summary(section)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    write_json_atomic(out / "metrics.json", flat)
    page = report.render_report(
        f"mcn {config.kind} evaluation", sections, config_to_dict(config), config.thumbnails
    )
    tmp = out / ".report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out / "report.html")
    return flat


def print_summary(section: report.Section) -> None:
    """A short table on stdout, with the chance level."""
    print(f"\n{section.checkpoint} on {section.benchmark}")
    if section.kind == "retrieval":
        print(f"  {'task':<30}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'MedR':>8}{'N':>7}{'chance R@10':>13}")
        for task in ("text_to_video_audio", "text_to_video_audio_present", "text_to_video"):
            m = section.metrics
            if f"{task}/R@1" in m:
                print(
                    f"  {task:<30}{100 * m[f'{task}/R@1']:>8.2f}{100 * m[f'{task}/R@5']:>8.2f}{100 * m[f'{task}/R@10']:>8.2f}"
                    f"{m[f'{task}/MedR']:>8.1f}{m[f'{task}/gallery_size']:>7}{100 * m[f'{task}/chance_R@10']:>13.2f}"
                )
    else:
        for scoring in ("video_audio", "video"):
            m = section.metrics
            if f"{scoring}/recall_task_macro" in m:
                print(
                    f"  {scoring:<12} recall task-macro {100 * m[f'{scoring}/recall_task_macro']:.2f}  "
                    f"task-micro {100 * m[f'{scoring}/recall_task_micro']:.2f}  "
                    f"video-macro {100 * m[f'{scoring}/recall_video_macro']:.2f}  ({m[f'{scoring}/num_videos']} videos)"
                )
