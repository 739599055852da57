"""Job inputs: a folder of videos with sidecar captions, or a CSV/Parquet manifest -> validated video items.

A video id becomes part of what the store records and of file names that ``mcn store export`` writes, so ids
are validated here once: no path separators, no ``..``, no control characters, not empty. A bad id is a per-row
error (recorded in the failures table with stage ``input``); a manifest that cannot be read at all is a
one-line :class:`~mcn.errors.MCNError`.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from mcn.errors import MCNError

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".ts", ".3gp")
CAPTION_SUFFIXES = (".vtt", ".srt", ".json", ".csv")  # sidecar priority when several exist
MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
MAX_ID_LENGTH = 255  # a file-name component on common file systems


@dataclass(frozen=True)
class VideoItem:
    """One input video: its id in the store, where it is, and its sidecar captions (None = none)."""

    video_id: str
    video_path: str
    caption_path: str | None = None


@dataclass(frozen=True)
class InputProblem:
    """An input row that cannot become a video item (reported and recorded as a failure)."""

    video_id: str
    source_path: str
    reason: str
    detail: str


def video_id_problem(video_id: str) -> str | None:
    """Why ``video_id`` cannot be used as a store id, or None when it is fine."""
    if not video_id:
        return "empty video id"
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in video_id):
        return f"video id {video_id!r} contains control characters"
    if "/" in video_id or "\\" in video_id:
        return f"video id {video_id!r} contains a path separator"
    if video_id in (".", "..") or ".." in video_id:
        return f"video id {video_id!r} contains '..'"
    if video_id != video_id.strip():
        return f"video id {video_id!r} has leading or trailing white space"
    if len(video_id.encode()) > MAX_ID_LENGTH:
        return f"video id {video_id[:20]!r}... is longer than {MAX_ID_LENGTH} bytes"
    return None


def read_inputs(source: str | Path) -> tuple[list[VideoItem], list[InputProblem]]:
    """Items and per-row problems of a video folder or a manifest file, in input order."""
    source = Path(source)
    if source.is_dir():
        rows = _folder_rows(source)
    elif source.is_file():
        rows = _manifest_rows(source)
    else:
        raise MCNError(f"input {source} does not exist: give a folder of videos or a CSV/Parquet manifest")
    items: list[VideoItem] = []
    problems: list[InputProblem] = []
    seen: dict[str, str] = {}
    for video_id, video_path, caption_path in rows:
        problem = video_id_problem(video_id)
        if problem is not None:
            problems.append(InputProblem(video_id, video_path, "bad_video_id", problem))
            continue
        if video_id in seen:
            raise MCNError(
                f"{source}: video id {video_id!r} appears twice ({seen[video_id]} and {video_path}); "
                "give every row a distinct video_id"
            )
        seen[video_id] = video_path
        items.append(VideoItem(video_id, video_path, caption_path))
    return items, problems


def _folder_rows(folder: Path) -> list[tuple[str, str, str | None]]:
    """Videos in ``folder`` and its (non-hidden) subfolders, sorted; id = file stem, captions = same-stem sidecar."""
    rows = []
    for path in sorted(folder.rglob("*")):
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        if not hidden and path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            sidecars = [path.with_suffix(s) for s in CAPTION_SUFFIXES]
            caption = next((str(p) for p in sidecars if p.is_file()), None)
            rows.append((path.stem, str(path.resolve()), caption))
    if not rows:
        raise MCNError(
            f"{folder} holds no videos ({', '.join(VIDEO_SUFFIXES)}); give a folder of videos or a manifest"
        )
    return rows


def _manifest_rows(path: Path) -> list[tuple[str, str, str | None]]:
    """Rows of a CSV/Parquet manifest: video_path (required), caption_path and video_id (optional)."""
    if path.suffix.lower() not in MANIFEST_SUFFIXES:
        raise MCNError(f"{path}: a manifest must be .csv or .parquet (got {path.suffix or 'no suffix'})")
    try:
        if path.suffix.lower() == ".csv":
            options = pa_csv.ConvertOptions(
                strings_can_be_null=True,
                column_types={
                    "video_id": pa.string(),
                    "video_path": pa.string(),
                    "caption_path": pa.string(),
                },
            )
            table = pa_csv.read_csv(path, convert_options=options)
        else:
            table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MCNError(f"{path}: unreadable manifest ({first_line})") from None
    if "video_path" not in table.column_names:
        raise MCNError(
            f"{path}: manifest has no 'video_path' column (columns: {', '.join(table.column_names) or 'none'}); "
            "needed: video_path, optional caption_path and video_id"
        )
    base = path.resolve().parent
    data = table.to_pydict()
    num_rows = table.num_rows
    rows = []
    for index in range(num_rows):
        video_path = data["video_path"][index]
        if not video_path:
            raise MCNError(f"{path}: row {index + 1} has an empty video_path")
        video_path = str(base / str(video_path))
        caption = data.get("caption_path", [None] * num_rows)[index]
        caption = str(base / str(caption)) if caption else None
        video_id = data.get("video_id", [None] * num_rows)[index]
        rows.append((Path(video_path).stem if video_id is None else str(video_id), video_path, caption))
    return rows
