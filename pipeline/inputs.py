"""Job inputs: a folder of videos with sidecar captions, or a CSV/Parquet manifest -> validated video items.

A video path that exists but is not a regular file (a FIFO, a device) is a per-row error too (``not_a_file``).
A video id becomes part of what the store records and of file names that ``mcn store export`` writes, so ids
are validated here once: no path separators, no ``..``, no control characters, not empty. A bad id is a per-row
error (recorded in the failures table with stage ``input``); a manifest that cannot be read at all, or one that
gives two rows the same id (good or bad), is a one-line :class:`~mcn.errors.MCNError` before anything runs.

Every local path leaves here absolute (workers of a cluster run in other folders); a manifest's video and
caption paths may also be URLs (``s3://bucket/key.mp4``, any filesystem :mod:`mcn.storage` resolves), which
are kept as they are. The input itself may be a URL too: a manifest object, or a bucket prefix read like a
folder (its objects listed, sidecars matched by name), so that a cluster needs no shared folder at all. Every video carries the size and modification time of its file (of its object: one
request, through :mod:`mcn.storage`), so that a resumed job can tell a changed source from the one it extracted.
"""

from __future__ import annotations

import os
import posixpath
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from mcn import storage
from mcn.errors import MCNError

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".ts", ".3gp")
CAPTION_SUFFIXES = (".vtt", ".srt", ".json", ".csv")  # sidecar priority when several exist
MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
MAX_ID_LENGTH = 255  # a file-name component on common file systems
MAX_LISTED = 5  # duplicate ids shown in an error


@dataclass(frozen=True)
class VideoItem:
    """One input video: its id in the store, where it is (absolute), its sidecar captions (None = none), and
    the size and modification time of its file when the job started (None when it could not be read)."""

    video_id: str
    video_path: str
    caption_path: str | None = None
    size: int | None = None
    mtime_ns: int | None = None

    def source(self) -> dict:
        """What a shard records about the source file (in the video's ``extra``)."""
        return {"source_size": self.size, "source_mtime_ns": self.mtime_ns} if self.size is not None else {}


def source_conflict(item: VideoItem, stored_path: str, stored_extra: dict) -> str | None:
    """Why ``item`` is not the file the store extracted under its id, or None when it is (or cannot be told).

    The same size and modification time (to the second: copies may round it) mean the same file, moved or
    not; without recorded figures (stores written before they were) only the path can be compared.
    """
    size, mtime_ns = stored_extra.get("source_size"), stored_extra.get("source_mtime_ns")
    if isinstance(size, int) and isinstance(mtime_ns, int):
        if item.size is None:
            return None  # the source is gone: nothing to compare with, and nothing else to extract
        if item.size != size:
            return f"{item.video_path} has {item.size} bytes, the one extracted from {stored_path} had {size}"
        if item.mtime_ns is not None and item.mtime_ns // 10**9 != mtime_ns // 10**9:
            return f"{item.video_path} was modified after the extraction from {stored_path}"
        return None
    if item.video_path != stored_path:
        return f"the store extracted it from {stored_path}, the input gives {item.video_path}"
    return None


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
    """Items and per-row problems of a video folder or a manifest file (local, or a URL), in input order."""
    if storage.is_remote(source):
        try:
            if storage.is_file(source):
                rows = _manifest_rows(str(source))
            elif storage.is_dir(source):
                rows = _remote_folder_rows(str(source))
            else:
                raise MCNError(
                    f"input {source} does not exist: give a prefix of videos or a CSV/Parquet manifest"
                )
        except OSError as error:
            raise MCNError(f"input {source} cannot be read ({' '.join(str(error).split())[:300]})") from None
        return _items(source, rows)
    source = Path(os.path.abspath(source))
    if source.is_dir():
        rows = _folder_rows(source)
    elif source.is_file():
        rows = _manifest_rows(source)
    elif os.path.lexists(source):
        raise MCNError(f"input {source} is neither a folder nor a regular file: give a folder or a manifest")
    else:
        raise MCNError(f"input {source} does not exist: give a folder of videos or a CSV/Parquet manifest")
    return _items(source, rows)


def _items(source: str | Path, rows: list[Row]) -> tuple[list[VideoItem], list[InputProblem]]:
    _refuse_duplicate_ids(source, rows)
    items: list[VideoItem] = []
    problems: list[InputProblem] = []
    for video_id, video_path, caption_path, _ in rows:
        problem = video_id_problem(video_id)
        if problem is not None:
            problems.append(InputProblem(video_id, video_path, "bad_video_id", problem))
            continue
        if storage.is_remote(video_path):  # missing or unreadable: the decode task's fetch records why
            found = storage.file_stat(video_path)
            items.append(VideoItem(video_id, video_path, caption_path, *(found or (None, None))))
            continue
        try:
            status = os.stat(video_path)
        except (OSError, ValueError):  # missing or unreadable: the decode stage records why
            items.append(VideoItem(video_id, video_path, caption_path))
            continue
        if not stat.S_ISREG(status.st_mode):  # a FIFO or a device would block or never end in a decoder
            problems.append(
                InputProblem(video_id, video_path, "not_a_file", "the video path is not a regular file")
            )
            continue
        items.append(VideoItem(video_id, video_path, caption_path, status.st_size, status.st_mtime_ns))
    return items, problems


Row = tuple[str, str, str | None, str]  # video id, video path, caption path, where it is in the input


def _refuse_duplicate_ids(source: str | Path, rows: list[Row]) -> None:
    where: dict[str, list[str]] = {}
    for video_id, _, _, location in rows:
        where.setdefault(video_id, []).append(location)
    repeated = {video_id: places for video_id, places in where.items() if len(places) > 1}
    if repeated:
        shown = "; ".join(f"{v!r}: {', '.join(p)}" for v, p in list(repeated.items())[:MAX_LISTED])
        more = f"; and {len(repeated) - MAX_LISTED} more" if len(repeated) > MAX_LISTED else ""
        raise MCNError(
            f"{source}: {len(repeated)} video ids appear more than once ({shown}{more}); "
            "give every row a distinct video_id (a folder's ids are file stems)"
        )


def _folder_rows(folder: Path) -> list[Row]:
    """Videos in ``folder`` and its (non-hidden) subfolders, sorted; id = file stem, captions = same-stem sidecar.

    A video or a sidecar is whatever has its name, regular file or not (folders aside), so that a FIFO or a
    dangling link is reported, not ignored.
    """
    rows = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        hidden = any(part.startswith(".") for part in relative.parts)
        if not hidden and not path.is_dir() and path.suffix.lower() in VIDEO_SUFFIXES:
            sidecars = [path.with_suffix(s) for s in CAPTION_SUFFIXES]
            caption = next((str(p) for p in sidecars if os.path.lexists(p)), None)
            rows.append((path.stem, str(path.resolve()), caption, str(relative)))
    if not rows:
        raise MCNError(
            f"{folder} holds no videos ({', '.join(VIDEO_SUFFIXES)}); give a folder of videos or a manifest"
        )
    return rows


def _remote_folder_rows(folder: str) -> list[Row]:
    """Videos below a bucket prefix (or any remote folder), like :func:`_folder_rows`: id = object name stem,
    captions = the same-stem sidecar object."""
    files = [str(f) for f in storage.list_files(folder, recursive=True)]
    present = set(files)
    rows = []
    for url in files:
        relative = storage.relative(url, folder)
        stem, suffix = os.path.splitext(url)
        hidden = any(part.startswith(".") for part in relative.split("/"))
        if not hidden and suffix.lower() in VIDEO_SUFFIXES:
            caption = next((stem + s for s in CAPTION_SUFFIXES if stem + s in present), None)
            rows.append((Path(storage.name(url)).stem, url, caption, relative))
    if not rows:
        raise MCNError(
            f"{folder} holds no videos ({', '.join(VIDEO_SUFFIXES)}); give a prefix of videos or a manifest"
        )
    return rows


def _manifest_rows(path: Path | str) -> list[Row]:
    """Rows of a CSV/Parquet manifest (a local file or a URL): video_path (required), caption_path and
    video_id (optional).

    Relative paths are relative to the manifest's (resolved) folder, or its prefix for a URL.
    """
    suffix = os.path.splitext(storage.name(path))[1].lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise MCNError(f"{path}: a manifest must be .csv or .parquet (got {suffix or 'no suffix'})")
    try:
        if storage.is_remote(path):
            path_or_file = pa.BufferReader(storage.read_bytes(path))
        else:
            path_or_file = path
        if suffix == ".csv":
            options = pa_csv.ConvertOptions(
                strings_can_be_null=True,
                column_types={
                    "video_id": pa.string(),
                    "video_path": pa.string(),
                    "caption_path": pa.string(),
                },
            )
            table = pa_csv.read_csv(path_or_file, convert_options=options)
        else:
            table = pq.read_table(path_or_file)
    except (pa.ArrowInvalid, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MCNError(f"{path}: unreadable manifest ({first_line})") from None
    if "video_path" not in table.column_names:
        raise MCNError(
            f"{path}: manifest has no 'video_path' column (columns: {', '.join(table.column_names) or 'none'}); "
            "needed: video_path, optional caption_path and video_id"
        )
    base = str(path).rsplit("/", 1)[0] if storage.is_remote(path) else Path(path).resolve().parent
    data = table.to_pydict()
    num_rows = table.num_rows
    rows = []
    for index in range(num_rows):
        video_path = data["video_path"][index]
        if not video_path:
            raise MCNError(f"{path}: row {index + 1} has an empty video_path")
        video_path = _anchored(base, str(video_path))
        caption = data.get("caption_path", [None] * num_rows)[index]
        caption = _anchored(base, str(caption)) if caption else None
        video_id = data.get("video_id", [None] * num_rows)[index]
        video_id = Path(storage.name(video_path)).stem if video_id is None else str(video_id)
        rows.append((video_id, video_path, caption, f"row {index + 1}"))
    return rows


def _anchored(base: Path | str, path: str) -> str:
    """A manifest's path: a URL as it is, a path relative to the manifest's folder (or prefix) made whole."""
    if storage.is_remote(path) or os.path.isabs(path):
        return path
    if isinstance(base, str):  # a manifest in a bucket: its relative paths are keys relative to its prefix
        scheme, rest = base.split("://", 1)
        bucket, _, prefix = rest.partition("/")
        key = posixpath.normpath(posixpath.join(prefix, path)).lstrip("/")
        if key == ".." or key.startswith("../"):
            return path  # leaves the bucket: not a key, left for the fetch to report as missing
        return f"{scheme}://{bucket}/{key}"
    return str(base / path)
