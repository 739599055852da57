"""Benchmark definitions and adapters from the official annotation files.

Two generic formats, which every adapter produces and every eval job reads:

- **Retrieval CSV** ``video_id,start,end,text``: one query caption per row, matched to the clip
  ``[start, end]`` (seconds) of ``video_id``; empty ``start``/``end`` mean the whole video. This is the file the
  sample corpus writes as ``benchmark_retrieval.csv``.
- **Localisation JSON** ``{"name", "score_normalisation", "videos": [{"video_id", "task", "duration",
  "steps": [{"text", "intervals": [[start, end], ...]}]}]}``: steps in their order; ``duration`` may be null
  (taken from the store); a step without intervals is absent from that video.

Adapters (official files -> generic): YouCook2 (``youcookii_annotations_trainval.json``), MSR-VTT 1k-A (the
JSFusion test CSV), CrossTask (``tasks_primary.txt`` + ``annotations/<task>_<video>.csv``) and Mining YouTube
(per-video segment files; format assumption in :func:`mining_youtube`).
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from mcn.configs import write_json_atomic
from mcn.errors import MCNError

RETRIEVAL_COLUMNS = ("video_id", "start", "end", "text")
BACKGROUND_LABELS = frozenset({"SIL", "sil", "background", "bg", "BG"})


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
    score_normalisation: str = "none"  # "none" (CrossTask) or "log_softmax" (Mining YouTube)
    extra: dict = field(default_factory=dict)


# ---- generic formats ---------------------------------------------------------------------------------------


def _optional_float(value: str) -> float | None:
    value = (value or "").strip()
    return None if value == "" else float(value)


def read_retrieval_csv(path: str | Path, name: str | None = None) -> RetrievalBenchmark:
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(RETRIEVAL_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise MCNError(
                f"{path}: a retrieval benchmark needs the columns {','.join(RETRIEVAL_COLUMNS)}; missing {sorted(missing)}"
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
    return RetrievalBenchmark(name or path.stem, clips)


def write_retrieval_csv(path: str | Path, benchmark: RetrievalBenchmark) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(RETRIEVAL_COLUMNS)
        for clip in benchmark.clips:
            writer.writerow(
                [
                    clip.video_id,
                    "" if clip.start is None else clip.start,
                    "" if clip.end is None else clip.end,
                    clip.text,
                ]
            )
    tmp.replace(path)


def _step_intervals(step: dict) -> list[tuple[float, float]]:
    if "intervals" in step:
        return [(float(s), float(e)) for s, e in step["intervals"]]
    return [(float(step["start"]), float(step["end"]))] if "start" in step else []


def read_localization_json(path: str | Path) -> LocalizationBenchmark:
    """The generic localisation JSON; also the sample corpus' ``benchmark_localization.json`` (steps with one
    ``start``/``end`` each and no ``task``: every video is then in task ``all``)."""
    path = Path(path)
    data = json.loads(Path(path).read_text(encoding="utf-8"))
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
            f"{path}: not a localisation benchmark (videos[].video_id/steps[].text/intervals): {error}"
        ) from None
    return LocalizationBenchmark(
        data.get("name", path.stem), videos, data.get("score_normalisation", "none"), data.get("extra", {})
    )


def write_localization_json(path: str | Path, benchmark: LocalizationBenchmark) -> None:
    videos = [
        {
            "video_id": video.video_id,
            "task": video.task,
            "duration": video.duration,
            "steps": [
                {"text": text, "intervals": [list(span) for span in spans]}
                for text, spans in zip(video.steps, video.intervals)
            ],
        }
        for video in benchmark.videos
    ]
    data = {
        "name": benchmark.name,
        "score_normalisation": benchmark.score_normalisation,
        "extra": benchmark.extra,
        "videos": videos,
    }
    write_json_atomic(path, data)


def load_benchmark(path: str | Path) -> RetrievalBenchmark | LocalizationBenchmark:
    """A generic definition by extension: ``.csv`` retrieval, ``.json`` localisation."""
    path = Path(path)
    if not path.exists():
        raise MCNError(f"benchmark definition {path} does not exist (make one with `mcn eval prepare`)")
    if path.suffix == ".csv":
        return read_retrieval_csv(path)
    if path.suffix == ".json":
        return read_localization_json(path)
    raise MCNError(f"{path}: a benchmark definition is a retrieval .csv or a localisation .json")


# ---- official formats --------------------------------------------------------------------------------------


def youcook2(annotations_json: str | Path, split: str = "validation") -> RetrievalBenchmark:
    """YouCook2 clips of one split: ``database[vid]["subset"] == split``, each ``annotations[i]`` is
    ``{"segment": [start, end], "sentence": ...}``. The validation split is the zero-shot benchmark."""
    database = json.loads(Path(annotations_json).read_text(encoding="utf-8")).get("database")
    if not isinstance(database, dict):
        raise MCNError(f"{annotations_json}: not youcookii_annotations_trainval.json (no 'database' object)")
    clips = [
        RetrievalClip(video_id, float(note["segment"][0]), float(note["segment"][1]), note["sentence"])
        for video_id, video in sorted(database.items())
        if video.get("subset") == split
        for note in video.get("annotations", [])
    ]
    if not clips:
        raise MCNError(f"{annotations_json}: no clip in subset {split!r}")
    return RetrievalBenchmark("youcook2", clips)


def msrvtt(test_csv: str | Path) -> RetrievalBenchmark:
    """MSR-VTT 1k-A: the JSFusion test CSV (columns key, vid_key, video_id, sentence); whole-clip spans."""
    with open(test_csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"video_id", "sentence"} <= set(reader.fieldnames or ()):
            raise MCNError(
                f"{test_csv}: expected the JSFusion CSV with columns key,vid_key,video_id,sentence"
            )
        clips = [RetrievalClip(row["video_id"], None, None, row["sentence"]) for row in reader]
    return RetrievalBenchmark("msrvtt", clips)


def read_crosstask_tasks(path: str | Path) -> dict[str, dict]:
    """``tasks_primary.txt``: blocks of task id, name, url, number of steps, comma-separated steps, blank line."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    tasks: dict[str, dict] = {}
    index = 0
    while index < len(lines):
        if not lines[index].strip():
            index += 1
            continue
        block = [line.strip() for line in lines[index : index + 5]]
        if len(block) < 5 or not block[3].isdigit():
            raise MCNError(f"{path}: line {index + 1}: expected task id, name, url, number of steps, steps")
        steps = block[4].split(",")
        if len(steps) != int(block[3]):
            raise MCNError(f"{path}: task {block[0]} announces {block[3]} steps but lists {len(steps)}")
        tasks[block[0]] = {"name": block[1], "url": block[2], "steps": steps}
        index += 5
    return tasks


def crosstask(
    tasks_primary: str | Path, annotations_dir: str | Path, videos_csv: str | Path | None = None
) -> LocalizationBenchmark:
    """CrossTask primary tasks: every ``<task>_<video>.csv`` (rows ``step(1-based),start,end``) of a primary
    task; ``videos_csv`` (rows ``task,video_id,url``, e.g. ``videos_val.csv``) restricts the videos."""
    tasks = read_crosstask_tasks(tasks_primary)
    wanted = None
    if videos_csv is not None:
        with open(videos_csv, newline="", encoding="utf-8") as f:
            wanted = {(row[0], row[1]) for row in csv.reader(f) if len(row) >= 2}
    videos = []
    for path in sorted(Path(annotations_dir).glob("*.csv")):
        task, _, video_id = path.stem.partition("_")
        if task not in tasks or (wanted is not None and (task, video_id) not in wanted):
            continue
        steps = tasks[task]["steps"]
        intervals: list[list[tuple[float, float]]] = [[] for _ in steps]
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.reader(f):
                if not row:
                    continue
                step = int(row[0]) - 1
                if not 0 <= step < len(steps):
                    raise MCNError(f"{path}: step {row[0]} outside 1..{len(steps)} of task {task}")
                intervals[step].append((float(row[1]), float(row[2])))
        videos.append(LocalizationVideo(video_id, task, list(steps), intervals))
    if not videos:
        raise MCNError(f"{annotations_dir}: no <task>_<video>.csv annotation of a task in {tasks_primary}")
    return LocalizationBenchmark(
        "crosstask", videos, "none", {"task_names": {k: v["name"] for k, v in tasks.items()}}
    )


_SEGMENT = re.compile(r"^\s*([0-9.]+)\s*[-\s,]\s*([0-9.]+)\s*[\s,]\s*(.+?)\s*$")


def mining_youtube(annotations_dir: str | Path, frame_rate: float | None = None) -> LocalizationBenchmark:
    """Mining YouTube test videos from per-video segment files ``<video_id>.txt``.

    Assumed format (the test annotations of github.com/hildekuehne/Weak_YouTube_dataset, Breakfast-style): one
    segment per line, ``start-end label`` or ``start end label``; times are frame numbers when ``frame_rate`` is
    given, else seconds. Background labels (SIL, background) are dropped; a video's steps are its other labels in
    order of first appearance, each with all its segments (underscores read as spaces in the step text). The task
    is the name of the file's sub-folder when the files are grouped by dish, else ``mining_youtube``.
    """
    root = Path(annotations_dir)
    videos = []
    for path in sorted(root.rglob("*.txt")):
        labels: dict[str, list[tuple[float, float]]] = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            match = _SEGMENT.match(line)
            if match is None:
                raise MCNError(f"{path}: line {number}: expected 'start-end label' or 'start end label'")
            start, end, label = float(match[1]), float(match[2]), match[3]
            if frame_rate is not None:  # frame numbers are 1-based and inclusive
                start, end = (start - 1) / frame_rate, end / frame_rate
            if label not in BACKGROUND_LABELS:
                labels.setdefault(label, []).append((start, end))
        if labels:
            task = path.parent.name if path.parent != root else "mining_youtube"
            steps = [label.replace("_", " ") for label in labels]
            videos.append(LocalizationVideo(path.stem, task, steps, list(labels.values())))
    if not videos:
        raise MCNError(f"{annotations_dir}: no per-video segment file (<video_id>.txt) with an action label")
    return LocalizationBenchmark("mining_youtube", videos, "log_softmax")


def whole_video_span(start: float | None, end: float | None, duration: float) -> tuple[float, float]:
    """Resolve a clip's optional bounds against its video's duration."""
    start = 0.0 if start is None else start
    end = duration if end is None or (isinstance(end, float) and math.isnan(end)) else end
    return start, end
