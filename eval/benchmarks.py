"""Benchmark definitions: the clips (or videos) of a benchmark together with its protocol settings.

A **definition** is one JSON file, written by ``mcn eval prepare`` to ``STORE/benchmarks/<name>.json`` and read by
every evaluation job. Nothing about a benchmark is inferred from a file name: its settings travel with it.

- Retrieval::

    {"format_version": 2, "kind": "retrieval", "name": "youcook2", "source": "...",
     "settings": {"audio_frames": 5120, "max_words": 20, "primary_task": "text_to_video_audio",
                  "reference": {"gallery": "present", "denominator": "rows", "median": "rows"},
                  "strict": {"gallery": "present", "denominator": "annotated", "median": "annotated"},
                  "source": "..."},
     "clips": [{"video_id": "...", "start": 10.0, "end": 20.0, "text": "..."}, ...]}

  one query caption per clip, matched to ``[start, end]`` seconds of ``video_id`` (null = from the start / to the
  end of the video). Every annotated clip is listed, including those whose video is missing: the ``annotated``
  rules count them.
- Localisation::

    {"format_version": 2, "kind": "localization", "name": "crosstask", "source": "...",
     "settings": {"audio_frames": 1024, "window_s": 8.0, "max_words": 30, "score_normalisation": "none",
                  "primary_recall": "recall_task_macro", "video_list": "videos_val.csv (1,850 pairs)",
                  "source": "..."},
     "extra": {...}, "videos": [{"video_id", "task", "duration", "steps": [{"text", "intervals": [[s, e]]}]}]}

  steps in their order; ``duration`` may be null (taken from the store); a step without intervals is absent
  from that video.

The settings are documented in :mod:`mcn.eval.protocols`; each one must be present (``source`` excepted), and an
unknown one is an error. Older definitions (``format_version`` 1 localisation JSON, retrieval CSV) are read only
when they carry a ``settings`` object; otherwise the error says to rerun ``mcn eval prepare`` or add the settings.

Two **inputs** that are not definitions: the clip list CSV ``video_id,start,end,text`` (empty ``start``/``end`` =
the whole video; the sample corpus' ``benchmark_retrieval.csv``) and a localisation JSON without settings (the
sample corpus' ``benchmark_localization.json``, whose steps carry one ``start``/``end`` each and no ``task``:
every video is then in task ``all``). ``mcn eval prepare generic`` turns either into a definition.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from mcn import storage
from mcn.configs import config_from_dict, config_to_dict, write_json_atomic
from mcn.errors import MCNError
from mcn.eval.protocols import LocalizationSettings, RetrievalSettings

FORMAT_VERSION = 2
RETRIEVAL_COLUMNS = ("video_id", "start", "end", "text")


@dataclass(frozen=True)
class RetrievalClip:
    video_id: str
    start: float | None  # None: from the beginning of the video
    end: float | None  # None: to the end of the video
    text: str


@dataclass
class RetrievalBenchmark:
    name: str
    clips: list[RetrievalClip]
    settings: RetrievalSettings
    source: str = ""  # where the clips come from (the official file, the split)


@dataclass
class LocalizationVideo:
    video_id: str
    task: str
    steps: list[str]
    intervals: list[list[tuple[float, float]]]  # per step, its ground-truth spans in seconds
    duration: float | None = None


@dataclass
class LocalizationBenchmark:
    name: str
    videos: list[LocalizationVideo]
    settings: LocalizationSettings
    source: str = ""
    extra: dict = field(default_factory=dict)


Benchmark = RetrievalBenchmark | LocalizationBenchmark


# ---- inputs without settings -------------------------------------------------------------------------------


def _optional_float(value: str) -> float | None:
    value = (value or "").strip()
    return None if value == "" else float(value)


def _seconds(value) -> float | None:
    return None if value is None else float(value)


def read_retrieval_clips(path: str | Path) -> list[RetrievalClip]:
    """A clip list CSV ``video_id,start,end,text``."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(RETRIEVAL_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise MCNError(
                f"{path}: a retrieval clip list needs the columns {','.join(RETRIEVAL_COLUMNS)}; "
                f"missing {sorted(missing)}"
            )
        try:
            clips = [
                RetrievalClip(
                    row["video_id"], _optional_float(row["start"]), _optional_float(row["end"]), row["text"]
                )
                for row in reader
            ]
        except ValueError as error:
            raise MCNError(f"{path}: start/end must be numbers of seconds or empty ({error})") from None
    if not clips:
        raise MCNError(f"{path} holds no clips")
    return clips


def write_retrieval_clips(path: str | Path, clips: list[RetrievalClip]) -> None:
    """Write the clip list CSV ``video_id,start,end,text`` (atomically; empty start/end = the whole video)."""
    rows = [
        (c.video_id, "" if c.start is None else c.start, "" if c.end is None else c.end, c.text)
        for c in clips
    ]
    storage.write_csv(path, [RETRIEVAL_COLUMNS, *rows])


def _step_intervals(step: dict) -> list[tuple[float, float]]:
    if "intervals" in step:
        return [(float(s), float(e)) for s, e in step["intervals"]]
    return [(float(step["start"]), float(step["end"]))] if "start" in step else []


def parse_localization_videos(data: dict, path: str | Path) -> list[LocalizationVideo]:
    """The ``videos`` of a localisation JSON (a definition or the sample corpus' file)."""
    try:
        videos = [
            LocalizationVideo(
                video_id=str(video["video_id"]),
                task=str(video.get("task", "all")),
                steps=[step.get("text", step.get("name")) for step in video["steps"]],
                intervals=[_step_intervals(step) for step in video["steps"]],
                duration=video.get("duration"),
            )
            for video in data["videos"]
        ]
        if any(text is None for video in videos for text in video.steps):
            raise KeyError("text")
    except (KeyError, TypeError, ValueError) as error:
        raise MCNError(
            f"{path}: not a localisation benchmark (videos[].video_id/steps[].text/intervals): {error!r}"
        ) from None
    if not videos:
        raise MCNError(f"{path} holds no videos")
    return videos


def read_json(path: storage.StorePath) -> dict:
    """A JSON object from a local path or any URL :mod:`mcn.storage` resolves."""
    try:
        data = json.loads(storage.read_bytes(path).decode("utf-8"))
    except json.JSONDecodeError as error:
        raise MCNError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise MCNError(f"{path}: expected a JSON object")
    return data


# ---- definitions -------------------------------------------------------------------------------------------


def _settings(cls: type, data: dict, path: storage.StorePath):
    """Settings of ``cls`` from a definition: every field present (``source`` may be left out), none unknown."""
    settings = data.get("settings")
    hint = (
        f'rerun `mcn eval prepare` to write a current definition, or add a "settings" object with '
        f"{', '.join(f.name for f in dataclasses.fields(cls) if f.name != 'source')} (see docs/evaluation.md)"
    )
    if not isinstance(settings, dict):
        raise MCNError(f"{path}: this benchmark definition carries no protocol settings; {hint}")
    missing = [f.name for f in dataclasses.fields(cls) if f.name != "source" and f.name not in settings]
    if missing:
        raise MCNError(f"{path}: settings {', '.join(missing)} missing; {hint}")
    try:
        return config_from_dict(cls, settings)
    except MCNError as error:
        raise MCNError(f"{path}: settings: {error}") from None


def load_benchmark(path: storage.StorePath) -> Benchmark:
    """A definition written by ``mcn eval prepare`` (or any JSON in the format above), on a local path or any URL
    :mod:`mcn.storage` resolves (``s3://bucket/benchmarks/youcook2.json``)."""
    if not storage.exists(path):
        raise MCNError(f"benchmark definition {path} does not exist (make one with `mcn eval prepare`)")
    file_name = PurePosixPath(storage.name(path))
    if file_name.suffix.lower() == ".csv":
        raise MCNError(
            f"{path} is a clip list without protocol settings, not a benchmark definition: rerun "
            f"`mcn eval prepare` for an official benchmark, or make one with `mcn eval prepare generic "
            f"--annotations {path} --audio-frames N --videos VIDEOS --out STORE`"
        )
    data = read_json(path)
    version = data.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise MCNError(f"{path}: format_version {version!r} is newer than this mcn reads ({FORMAT_VERSION})")
    kind = data.get("kind") or ("localization" if "videos" in data else "retrieval")
    name = str(data.get("name") or file_name.stem)
    if kind == "retrieval":
        settings = _settings(RetrievalSettings, data, path)
        try:
            clips = [
                RetrievalClip(str(c["video_id"]), _seconds(c["start"]), _seconds(c["end"]), str(c["text"]))
                for c in data["clips"]
            ]
        except (KeyError, TypeError, ValueError) as error:
            raise MCNError(f"{path}: clips[] need video_id, start, end and text ({error!r})") from None
        if not clips:
            raise MCNError(f"{path} holds no clips")
        return RetrievalBenchmark(name, clips, settings, str(data.get("source", "")))
    if kind == "localization":
        settings = _settings(LocalizationSettings, data, path)
        videos = parse_localization_videos(data, path)
        return LocalizationBenchmark(
            name, videos, settings, str(data.get("source", "")), data.get("extra", {})
        )
    raise MCNError(f"{path}: unknown benchmark kind {kind!r}; use 'retrieval' or 'localization'")


def write_benchmark(path: str | Path, bench: Benchmark) -> None:
    """Write a definition (atomically)."""
    data: dict = {
        "format_version": FORMAT_VERSION,
        "kind": "retrieval" if isinstance(bench, RetrievalBenchmark) else "localization",
        "name": bench.name,
        "source": bench.source,
        "settings": config_to_dict(bench.settings),
    }
    if isinstance(bench, RetrievalBenchmark):
        data["clips"] = [dataclasses.asdict(clip) for clip in bench.clips]
    else:
        data["extra"] = bench.extra
        data["videos"] = [
            {
                "video_id": video.video_id,
                "task": video.task,
                "duration": video.duration,
                "steps": [
                    {"text": text, "intervals": [list(span) for span in spans]}
                    for text, spans in zip(video.steps, video.intervals)
                ],
            }
            for video in bench.videos
        ]
    write_json_atomic(path, data)


def benchmark_video_ids(bench: Benchmark) -> list[str]:
    """The benchmark's video ids, in first-seen order."""
    items = bench.clips if isinstance(bench, RetrievalBenchmark) else bench.videos
    return list(dict.fromkeys(item.video_id for item in items))


def whole_video_span(start: float | None, end: float | None, duration: float) -> tuple[float, float]:
    """Resolve a clip's optional bounds against its video's duration."""
    start = 0.0 if start is None else start
    end = duration if end is None or (isinstance(end, float) and math.isnan(end)) else end
    return start, end
