"""Adapters from the official annotation files to benchmark definitions with the benchmark's named settings.

YouCook2 (``youcookii_annotations_trainval.json``), MSR-VTT 1k-A (the JSFusion test CSV), CrossTask
(``tasks_primary.txt`` + ``annotations/<task>_<video>.csv``, optionally restricted by a video list) and Mining
YouTube (per-video segment files; format assumption in :func:`mining_youtube`). The settings each adapter attaches
are the named ones of :mod:`mcn.eval.protocols`.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path

from mcn.errors import MCNError
from mcn.eval import protocols
from mcn.eval.benchmarks import LocalizationBenchmark, LocalizationVideo, RetrievalBenchmark, RetrievalClip

logger = logging.getLogger(__name__)

BACKGROUND_LABELS = frozenset({"SIL", "sil", "background", "bg", "BG"})
JSFUSION_COLUMNS = ("key", "vid_key", "video_id", "sentence")


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
    source = f"{Path(annotations_json).name}, subset {split}, {len(clips)} clips"
    return RetrievalBenchmark("youcook2", clips, protocols.youcook2(), source)


def msrvtt(test_csv: str | Path) -> RetrievalBenchmark:
    """MSR-VTT 1k-A: the JSFusion test CSV (columns key, vid_key, video_id, sentence); whole-clip spans."""
    with open(test_csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not set(JSFUSION_COLUMNS) <= set(reader.fieldnames or ()):
            raise MCNError(f"{test_csv}: expected the JSFusion CSV with columns {','.join(JSFUSION_COLUMNS)}")
        clips = [RetrievalClip(row["video_id"], None, None, row["sentence"]) for row in reader]
    if not clips:
        raise MCNError(f"{test_csv} holds no test clips")
    if len({clip.video_id for clip in clips}) != len(clips):
        raise MCNError(f"{test_csv}: a video_id appears twice; the 1k-A split has one caption per test video")
    source = f"{Path(test_csv).name}, {len(clips)} clips"
    return RetrievalBenchmark("msrvtt", clips, protocols.msrvtt(), source)


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


def read_video_list(path: str | Path) -> set[tuple[str, str]]:
    """(task, video id) pairs: the CrossTask release's ``videos_val.csv`` (rows ``task,video,url``, no header) or
    a CSV with ``task`` and ``video_id`` columns (the layout of the list the public MCN numbers used)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f) if row]
    if rows and {"task", "video_id"} <= {cell.strip() for cell in rows[0]}:
        header = [cell.strip() for cell in rows[0]]
        task_at, video_at = header.index("task"), header.index("video_id")
        pairs = {(row[task_at].strip(), row[video_at].strip()) for row in rows[1:]}
    else:
        pairs = {(row[0].strip(), row[1].strip()) for row in rows if len(row) >= 2}
    if not pairs:
        raise MCNError(f"{path}: no (task, video) pair; expected rows task,video_id[,url] (videos_val.csv)")
    return pairs


def crosstask(
    tasks_primary: str | Path, annotations_dir: str | Path, video_list: str | Path | None = None
) -> LocalizationBenchmark:
    """CrossTask primary tasks: every ``<task>_<video>.csv`` (rows ``step(1-based),start,end``) of a primary
    task; ``video_list`` (:func:`read_video_list`, e.g. ``videos_val.csv``) restricts the videos to its pairs."""
    tasks = read_crosstask_tasks(tasks_primary)
    wanted = read_video_list(video_list) if video_list is not None else None
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
        raise MCNError(
            f"{annotations_dir}: no <task>_<video>.csv annotation of a task in {tasks_primary}"
            + (f" among the pairs of {video_list}" if video_list is not None else "")
        )
    if wanted is None:
        listed = f"every primary-task annotation ({len(videos)} videos)"
    else:
        primary = {pair for pair in wanted if pair[0] in tasks}
        listed = f"{Path(video_list).name}: {len(videos)} of its {len(primary)} primary-task pairs annotated"
        if len(videos) < len(primary):
            logger.info(
                "%s: %d listed primary-task videos have no annotation file",
                video_list,
                len(primary) - len(videos),
            )
    return LocalizationBenchmark(
        "crosstask",
        videos,
        protocols.crosstask(listed),
        f"{Path(tasks_primary).name} + {Path(annotations_dir).name}/",
        {"task_names": {k: v["name"] for k, v in tasks.items()}},
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
    listed = f"every segment file of {root.name}/ ({len(videos)} videos)"
    return LocalizationBenchmark("mining_youtube", videos, protocols.mining_youtube(listed), f"{root.name}/")
