"""The evaluation batch jobs: several checkpoints × several benchmark definitions in one run, on CPU or GPU.

Each job embeds the benchmark's clips (or per-second frames and step names) with each checkpoint, scores them
in chunks under the settings the definition carries, and writes to ``OUT``:

- ``metrics.json``: one flat dict with stable keys ``<checkpoint>/<benchmark>/<key>`` (also
  ``OUT/<checkpoint>/<benchmark>/metrics.json`` with the keys below ``<benchmark>/``). Retrieval keys are
  ``<protocol>/<task>/<metric>`` for protocol ``reference`` and ``strict`` and task ``text_to_video_audio``
  (T·(V+A)ᵀ) and ``text_to_video`` (T·Vᵀ), metric ``R@1``, ``R@5``, ``R@10``, ``MedR``, ``MeanR``,
  ``num_queries``, ``num_gallery``, ``num_counted``, ``num_missing``, ``chance_R@k``, ``chance_MedR``; and
  ``num_clips``, ``num_clips_in_store``, ``num_clips_missing``, ``num_clips_with_audio``, ``audio_frames``,
  ``num_query_words``, ``num_query_words_unknown``. Localisation keys are ``<scoring>/<recall>`` for scoring
  ``video_audio`` and ``video`` (see :func:`mcn.eval.localization.recall_summary`) and the video counts;
- ``config.json``: the resolved :class:`mcn.eval.config.EvalConfig`; ``settings.json``: each benchmark's
  definition path and the settings used (overrides applied);
- ``report.html``: a self-contained report (:mod:`mcn.eval.report`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mcn import storage
from mcn.configs import config_to_dict, save_config, write_json_atomic
from mcn.errors import MCNError
from mcn.eval import benchmarks, embed, localization, protocols, report, retrieval
from mcn.eval.config import EvalConfig, TextConfig
from mcn.store import StoreReader, VideoRecord

logger = logging.getLogger(__name__)

RECORD_FIELDS = ("source_path", "duration", "has_audio", "feat_2d", "feat_3d", "logmel")


def checkpoint_names(paths: Iterable[str]) -> list[str]:
    """Short, distinct names for the checkpoints (folder or file name; parent added when names collide)."""
    paths = list(paths)
    names = [Path(p).name.removesuffix(".pth") or str(p) for p in paths]
    if len(set(names)) < len(names):
        names = [f"{Path(p).parent.name}_{n}" for p, n in zip(paths, names)]
    if len(set(names)) < len(names):
        names = [f"{i}_{n}" for i, n in enumerate(names)]
    return names


def recorded_word_vectors(reader: StoreReader) -> str | None:
    """The word2vec file the store manifest records (``vocabulary.word_vectors`` or ``word_vectors.path``)."""
    manifest = reader.manifest
    return (manifest.get("vocabulary") or {}).get("word_vectors") or (manifest.get("word_vectors") or {}).get(
        "path"
    )


def query_vectorizer(reader: StoreReader, text: TextConfig, texts: list[str]) -> embed.TextVectorizer:
    """The store's words, then ``text.word_vectors`` (else the file the store records, when it exists).

    A word of ``texts`` outside the store's table is an error when no word2vec file is available to look it
    up in (unless ``text.allow_missing_words``): it would silently vanish from its query.
    """
    recorded = recorded_word_vectors(reader)
    if text.word_vectors and not Path(text.word_vectors).is_file():
        raise MCNError(f"word vectors file {text.word_vectors} does not exist")
    path = text.word_vectors or recorded
    fallback = None
    if path and Path(path).is_file():
        from mcn.extract.text import load_word_vectors

        fallback = load_word_vectors(path)
    vectorizer = embed.TextVectorizer(reader.words, fallback)
    _, unknown = vectorizer.unknown_words(texts)
    if unknown and fallback is None and not text.allow_missing_words:
        shown = ", ".join(repr(w) for w, _ in unknown.most_common(5))
        wanted = (
            f"{recorded} (recorded by the store, now missing)" if recorded else "the store's word2vec file"
        )
        raise MCNError(
            f"{len(unknown)} query words ({shown}{', ...' if len(unknown) > 5 else ''}) are not in the store's "
            f"word table and no word2vec file is available: pass --word-vectors with {wanted}, e.g. "
            "GoogleNews-vectors-negative300.bin, or --allow-missing-words to drop them"
        )
    if unknown:
        logger.info("%d distinct query words have no vector and are dropped", len(unknown))
    return vectorizer


def word_counts(vectorizer: embed.TextVectorizer, texts: Iterable[str]) -> dict:
    num_tokens, unknown = vectorizer.unknown_words(texts)
    return {"num_query_words": num_tokens, "num_query_words_unknown": int(sum(unknown.values()))}


def _read(reader: StoreReader, video_id: str) -> VideoRecord | None:
    return reader.read(video_id, RECORD_FIELDS) if video_id in reader else None


def load_checkpoint(path: str, device: torch.device):
    from mcn.train.checkpoint import load_model

    model, _ = load_model(path, device=device)
    return model.to(device).eval()


# ---- retrieval --------------------------------------------------------------------------------------------


@dataclass
class ClipEmbeddings:
    """The embedded clips found in the store, in benchmark order: ``indices`` into ``bench.clips``."""

    indices: list[int]
    spans: list[tuple[float, float]]
    sources: list[str]
    has_audio: np.ndarray  # (N,) bool
    text: np.ndarray  # (N, D)
    video: np.ndarray
    audio: np.ndarray  # zeros for clips without audio

    def rows(self, gallery: str) -> np.ndarray:
        """Row indices of the gallery rule's clips."""
        return np.flatnonzero(self.has_audio) if gallery == "with_audio" else np.arange(len(self.indices))

    def gallery(self, task: str) -> np.ndarray:
        return self.video + self.audio if task == "text_to_video_audio" else self.video


def embed_clips(
    model,
    bench: benchmarks.RetrievalBenchmark,
    reader: StoreReader,
    vectorizer: embed.TextVectorizer,
    config: EvalConfig,
    audio_frames: int,
    device: torch.device,
) -> ClipEmbeddings:
    """Embed every clip of the benchmark that the store holds (each video read once)."""
    order = sorted(range(len(bench.clips)), key=lambda i: bench.clips[i].video_id)
    found: list[tuple[int, tuple[float, float], str, bool]] = []

    def items():
        current_id, current = None, None
        for index in order:
            clip = bench.clips[index]
            if clip.video_id != current_id:
                current_id, current = clip.video_id, _read(reader, clip.video_id)
            if current is None:
                continue
            span = benchmarks.whole_video_span(clip.start, clip.end, current.duration)
            with_audio = bool(current.has_audio) and current.logmel.shape[1] > 0
            found.append((index, span, current.source_path, with_audio))
            yield {
                **embed.clip_inputs(current, *span, audio_frames, config.audio.logmel_padding),
                "text": vectorizer(clip.text, bench.settings.max_words),
            }

    stream = tqdm(
        items(), total=len(order), desc=bench.name, disable=not config.runtime.progress, leave=False
    )
    emb = embed.embed_stream(model, stream, config.runtime.batch_size, device)
    if not found:
        raise MCNError(
            f"no clip of benchmark {bench.name} is in store {reader.root}: run `mcn eval prepare` first"
        )
    back = np.argsort([index for index, *_ in found], kind="stable")  # benchmark order
    has_audio = np.asarray([found[i][3] for i in back])
    return ClipEmbeddings(
        indices=[found[i][0] for i in back],
        spans=[found[i][1] for i in back],
        sources=[found[i][2] for i in back],
        has_audio=has_audio,
        text=emb["text"][back],
        video=emb["video"][back],
        audio=np.where(has_audio[:, None], emb["audio"][back], 0.0).astype(np.float32),
    )


def evaluate_retrieval(
    model,
    bench: benchmarks.RetrievalBenchmark,
    reader: StoreReader,
    vectorizer: embed.TextVectorizer,
    config: EvalConfig,
    name: str,
    device: torch.device,
) -> report.Section:
    """Both protocols × both tasks of one checkpoint on one benchmark."""
    settings = bench.settings
    audio_frames = config.overrides.audio_frames or settings.audio_frames
    num_annotated = config.overrides.num_total or len(bench.clips)
    emb = embed_clips(model, bench, reader, vectorizer, config, audio_frames, device)
    metrics: dict = {
        "num_clips": len(bench.clips),
        "num_clips_in_store": len(emb.indices),
        "num_clips_missing": len(bench.clips) - len(emb.indices),
        "num_clips_with_audio": int(emb.has_audio.sum()),
        "audio_frames": audio_frames,
        **word_counts(vectorizer, (clip.text for clip in bench.clips)),
    }
    ranks_of: dict[tuple[str, str], np.ndarray] = {}
    curves = {}
    for protocol_name in protocols.PROTOCOLS:
        protocol = settings.protocol(protocol_name)
        rows = emb.rows(protocol.gallery)
        if len(rows) == 0:
            raise MCNError(
                f"{bench.name}: no clip in store {reader.root} passes the {protocol_name} protocol's gallery "
                f"rule {protocol.gallery!r} (no video has audio?)"
            )
        for task in protocols.RETRIEVAL_TASKS:
            key = (protocol.gallery, task)
            if key not in ranks_of:
                ranks_of[key] = retrieval.ranks_from_embeddings(
                    emb.text[rows], emb.gallery(task)[rows], config.runtime.chunk_size, device
                )
            values = retrieval.protocol_metrics(ranks_of[key], protocol, len(rows), num_annotated)
            metrics.update({f"{protocol_name}/{task}/{k}": v for k, v in values.items()})
            curves[f"{protocol_name} {task}"] = retrieval.recall_curve(
                ranks_of[key], config.report.curve_max_k, values["num_counted"]
            )
    reference = settings.reference
    examples = _examples(
        bench,
        emb,
        emb.rows(reference.gallery),
        settings.primary_task,
        ranks_of[(reference.gallery, settings.primary_task)],
        config,
    )
    notes = [
        f"{bench.source or bench.name}; audio padded/truncated to {audio_frames} frames "
        f"({config.audio.logmel_padding} padding), captions to {settings.max_words} words; primary task "
        f"{settings.primary_task}",
        *(
            f"{name_}: gallery {p.gallery}, R@k over {p.denominator}, median over {p.median}"
            for name_, p in (("reference", settings.reference), ("strict", settings.strict))
        ),
        f"{metrics['num_clips_missing']} of {len(bench.clips)} clips missing from the store; "
        f"{metrics['num_query_words_unknown']} of {metrics['num_query_words']} query words without a vector",
        *_override_notes(config, settings.audio_frames, len(bench.clips)),
    ]
    return report.Section(
        name, bench.name, "retrieval", metrics, curves, examples, notes=notes, primary=settings.primary_task
    )


def _override_notes(config: EvalConfig, audio_frames: int, num_clips: int | None = None) -> list[str]:
    """A line per override that replaced one of the definition's settings."""
    notes = []
    if config.overrides.audio_frames and config.overrides.audio_frames != audio_frames:
        notes.append(f"audio frames overridden: {config.overrides.audio_frames} instead of {audio_frames}")
    if num_clips is not None and config.overrides.num_total and config.overrides.num_total != num_clips:
        notes.append(f"annotated clips overridden: {config.overrides.num_total} instead of {num_clips}")
    return notes


def _examples(
    bench, emb: ClipEmbeddings, rows: np.ndarray, task: str, ranks: np.ndarray, config: EvalConfig
) -> list[report.QueryExample]:
    """Top retrieved clips for a few evenly spaced queries (the reference gallery, the primary task)."""
    if config.report.num_examples == 0:
        return []
    picked = np.unique(np.linspace(0, len(rows) - 1, config.report.num_examples).astype(int))
    top, scores = retrieval.top_k_from_embeddings(
        emb.text[rows[picked]], emb.gallery(task)[rows], config.report.top_k_shown, config.runtime.chunk_size
    )
    examples = []
    for query, hits, values in zip(picked, top, scores):
        row = rows[query]
        clip = bench.clips[emb.indices[row]]
        retrieved = [
            report.RetrievedClip(
                bench.clips[emb.indices[rows[h]]].video_id,
                *emb.spans[rows[h]],
                float(v),
                bool(h == query),
                emb.sources[rows[h]],
            )
            for h, v in zip(hits, values)
        ]
        examples.append(
            report.QueryExample(clip.text, clip.video_id, *emb.spans[row], retrieved, int(ranks[query]) + 1)
        )
    return examples


# ---- localisation -----------------------------------------------------------------------------------------


def evaluate_localization(
    model,
    bench: benchmarks.LocalizationBenchmark,
    reader: StoreReader,
    vectorizer: embed.TextVectorizer,
    config: EvalConfig,
    name: str,
    device: torch.device,
) -> report.Section:
    """Per-second embeddings, step scores, ordered DP and recall for one checkpoint on one benchmark."""
    settings = bench.settings
    audio_frames = config.overrides.audio_frames or settings.audio_frames
    results: dict[str, list[localization.VideoRecall]] = {"video_audio": [], "video": []}
    missing = too_short = 0
    batch = config.runtime.batch_size
    for video in tqdm(bench.videos, desc=bench.name, disable=not config.runtime.progress, leave=False):
        record = _read(reader, video.video_id)
        if record is None:
            missing += 1
            continue
        seconds = embed.num_seconds(record)
        if seconds < len(video.steps):
            too_short += 1
            continue
        inputs = embed.per_second_inputs(record, settings.window_s, audio_frames, config.audio.logmel_padding)
        frames = embed.embed_stream(model, inputs, batch, device)
        steps = ({"text": vectorizer(text, settings.max_words)} for text in video.steps)
        steps_KD = embed.embed_stream(model, steps, batch, device)["text"]
        truth_TK = localization.ground_truth_matrix(video.intervals, seconds)
        for scoring, frames_TD in (
            ("video_audio", frames["video"] + frames["audio"]),
            ("video", frames["video"]),
        ):
            cost_TK = localization.scores_to_cost(
                embed.step_scores(frames_TD, steps_KD), settings.score_normalisation
            )
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
        {
            "num_videos": len(bench.videos),
            "num_videos_missing": missing,
            "num_videos_too_short": too_short,
            "audio_frames": audio_frames,
            **word_counts(vectorizer, (step for video in bench.videos for step in video.steps)),
        }
    )
    bars = {k.split("/")[2]: v for k, v in metrics.items() if k.startswith("video_audio/task/")}
    notes = [
        f"videos: {settings.video_list or bench.source or bench.name}; primary recall {settings.primary_recall}",
        f"scores normalised with {settings.score_normalisation!r}; decoder: ordered DP, one second per step, "
        f"background cost 0; audio: {settings.window_s:g} s window, {audio_frames} frames "
        f"({config.audio.logmel_padding} padding)",
        f"{missing} of {len(bench.videos)} videos missing from the store, {too_short} shorter than their steps",
        *_override_notes(config, settings.audio_frames),
    ]
    return report.Section(
        name, bench.name, "localization", metrics, bars=bars, notes=notes, primary=settings.primary_recall
    )


# ---- the job ----------------------------------------------------------------------------------------------


def _texts(bench: benchmarks.Benchmark) -> list[str]:
    if isinstance(bench, benchmarks.RetrievalBenchmark):
        return [clip.text for clip in bench.clips]
    return [step for video in bench.videos for step in video.steps]


def _effective_settings(bench: benchmarks.Benchmark, config: EvalConfig) -> dict:
    settings = bench.settings
    if config.overrides.audio_frames:
        settings = dataclasses.replace(settings, audio_frames=config.overrides.audio_frames)
    return config_to_dict(settings)


def run_eval(config: EvalConfig) -> dict:
    """Run every checkpoint on every benchmark; write metrics, config, settings and report; return the metrics."""
    config.check_paths()
    reader = StoreReader(config.store)
    loaded = [benchmarks.load_benchmark(path) for path in config.benchmarks]
    expected = (
        benchmarks.RetrievalBenchmark if config.kind == "retrieval" else benchmarks.LocalizationBenchmark
    )
    for path, bench in zip(config.benchmarks, loaded):
        if not isinstance(bench, expected):
            raise MCNError(f"{path} is not a {config.kind} benchmark definition")
    names = [bench.name for bench in loaded]
    if len(set(names)) < len(names):
        raise MCNError(f"two benchmark definitions share a name ({names}): their outputs would collide")
    device = config.runtime.torch_device()
    vectorizer = query_vectorizer(reader, config.text, [t for bench in loaded for t in _texts(bench)])
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.json")
    write_json_atomic(
        out / "settings.json",
        {
            b.name: {"definition": str(p), "settings": _effective_settings(b, config)}
            for p, b in zip(config.benchmarks, loaded)
        },
    )
    evaluate = evaluate_retrieval if config.kind == "retrieval" else evaluate_localization
    sections, flat = [], {}
    for checkpoint, name in zip(config.checkpoints, checkpoint_names(config.checkpoints)):
        model = load_checkpoint(checkpoint, device)
        for bench in loaded:
            section = evaluate(model, bench, reader, vectorizer, config, name, device)
            sections.append(section)
            write_json_atomic(out / name / bench.name / "metrics.json", section.metrics)
            flat.update({f"{name}/{bench.name}/{k}": v for k, v in section.metrics.items()})
            report.print_summary(section)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    write_json_atomic(out / "metrics.json", flat)
    page = report.render_report(
        f"mcn {config.kind} evaluation", sections, config_to_dict(config), config.report.thumbnails
    )
    storage.write_bytes(out / "report.html", page.encode("utf-8"))
    return flat
