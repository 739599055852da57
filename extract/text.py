"""Captions and words: read caption files, tokenize, map tokens to word2vec ids.

Caption sources: YouTube WebVTT auto-captions (``.vtt``; the rolling lines are de-duplicated), SRT (``.srt``),
and the HowTo100M caption forms: a per-video CSV with ``start,end,text`` columns (``.csv``) and the per-video
``raw_caption.json`` entry ``{"start": [...], "end": [...], "text": [...]}`` or a list of ``{start, end, text}``
objects (``.json``). Every reader returns ``[(start_s, end_s, text), ...]`` in file order.

:func:`read_captions` validates every file the same way, whatever its format: a regular file (a FIFO, a device
or a folder is refused without being read), at most :data:`MAX_CAPTION_BYTES` read within
:data:`READ_TIMEOUT_S`, UTF-8, and caption times that are finite, >= 0 and do not end before they start (the
rule ``mcn.store.invalid_captions`` applies to stored captions). A caption URL (``s3://…``, see
:mod:`mcn.storage`) is read within the same limits. Any problem is a :class:`CaptionError` with a one-line reason.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mcn import storage
from mcn.errors import MCNError

if TYPE_CHECKING:
    from gensim.models import KeyedVectors

Caption = tuple[float, float, str]
CAPTION_FORMATS = ("vtt", "srt", "csv", "json")

_TOKEN = re.compile(r"[\w']+")
_TAG = re.compile(r"<[^>]*>")
_TIMING = re.compile(r"^\s*(\S+)\s+-->\s+(\S+)")
_TIMESTAMP = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2})[.,](\d{1,3})$")
# A 10-hour video's auto-captions are a few MB; a whole-dataset caption file (GBs) is a mistake.
MAX_CAPTION_BYTES = 32 << 20
# Reading 32 MB takes well under a second from any disk; a read still blocked after this is a stuck file system.
READ_TIMEOUT_S = 60.0
MAX_DETAIL_CHARS = 300


class CaptionError(MCNError):
    """A caption file that cannot be used. ``reason``: not_found, not_a_file, unreadable, too_large, timeout,
    unsupported_format, encoding or malformed; ``detail`` says what is wrong in one line."""

    def __init__(self, path: str | Path, reason: str, detail: str):
        detail = _one_line(detail)[:MAX_DETAIL_CHARS]
        super().__init__(f"caption file {_one_line(str(path))}: {reason}: {detail}")
        self.path = str(path)
        self.reason = reason
        self.detail = detail


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def tokenize(text: str) -> list[str]:
    """Words as the reference cuts them: ``re.findall(r"[\\w']+", text)``, case kept."""
    return _TOKEN.findall(text)


def caption_format(path: str | Path) -> str:
    """ "vtt", "srt", "csv" or "json" from the file extension."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in CAPTION_FORMATS:
        raise CaptionError(path, "unsupported_format", f"expected one of .{', .'.join(CAPTION_FORMATS)}")
    return suffix


def read_captions(path: str | Path) -> list[Caption]:
    """Read and validate a caption file (format from its extension); any problem raises :class:`CaptionError`."""
    fmt = caption_format(path)
    data = _read_bounded(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CaptionError(
            path, "encoding", f"not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    readers = {"vtt": parse_vtt, "srt": parse_srt, "csv": parse_csv, "json": parse_json}
    try:
        captions = readers[fmt](text)
    # What a parser of untrusted text can raise: bad values and types, huge or deeply nested JSON, CSV errors.
    except (ValueError, TypeError, OverflowError, RecursionError, csv.Error) as error:
        raise CaptionError(path, "malformed", str(error) or type(error).__name__) from None
    problem = caption_times_problem(captions)
    if problem is not None:
        raise CaptionError(path, "malformed", problem)
    return captions


def caption_times_problem(captions: list[Caption]) -> str | None:
    """Why the times of ``captions`` are invalid as the store keeps them (float32), or None.

    Valid: finite, >= 0, no caption ending before it starts; the rule of ``mcn.store.invalid_captions``.
    """
    times = np.array([(start, end) for start, end, _ in captions], np.float64).reshape(-1, 2)
    with np.errstate(over="ignore", invalid="ignore"):
        stored = times.astype(np.float32)
    for index, (start, end) in enumerate(stored.tolist()):
        if not (np.isfinite(start) and np.isfinite(end)):
            return f"caption {index} has a non-finite time (start {times[index, 0]}, end {times[index, 1]})"
        if start < 0:
            return f"caption {index} starts before 0 s (start {start})"
        if end < start:
            return f"caption {index} ends before it starts (start {start}, end {end})"
    return None


def _read_bounded(path: str | Path) -> bytes:
    """The bytes of a regular file of at most MAX_CAPTION_BYTES, read within READ_TIMEOUT_S.

    The type is checked on the opened descriptor (opened non-blocking: a FIFO would block an ordinary open),
    so a link to a device or a FIFO is refused before anything is read. The read runs in a helper thread: a
    file system that stops answering costs that thread, not the job.
    """
    if storage.is_remote(path):
        return _read_remote(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CaptionError(path, "not_found", "no such file") from None
    except (OSError, ValueError) as error:  # ValueError: a NUL in the path
        raise CaptionError(path, "unreadable", getattr(error, "strerror", None) or str(error)) from None
    mode, size = os.fstat(fd).st_mode, os.fstat(fd).st_size
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else "a device or socket"
        raise CaptionError(path, "not_a_file", f"{kind}, not a regular file")
    if size > MAX_CAPTION_BYTES:
        os.close(fd)
        raise CaptionError(path, "too_large", f"{size} bytes, more than the {MAX_CAPTION_BYTES} allowed")
    result: dict = {}

    def read() -> None:
        try:
            with os.fdopen(fd, "rb") as f:
                result["data"] = f.read(MAX_CAPTION_BYTES + 1)
        except OSError as error:
            result["error"] = error

    reader = threading.Thread(target=read, name="caption-reader", daemon=True)
    reader.start()
    reader.join(READ_TIMEOUT_S)
    if reader.is_alive():
        raise CaptionError(path, "timeout", f"no data within {READ_TIMEOUT_S:.0f} s")
    if "error" in result:
        raise CaptionError(path, "unreadable", result["error"].strerror or str(result["error"]))
    if len(result["data"]) > MAX_CAPTION_BYTES:
        raise CaptionError(path, "too_large", f"more than the {MAX_CAPTION_BYTES} bytes allowed")
    return result["data"]


# What a failed fetch of a caption URL is, as a caption file's reason.
_FETCH_REASONS = {"not_found": "not_found", "too_large": "too_large", "timeout": "timeout"}


def _read_remote(url: str | Path) -> bytes:
    try:
        return storage.read_limited(url, MAX_CAPTION_BYTES, READ_TIMEOUT_S)
    except storage.FetchError as error:
        raise CaptionError(url, _FETCH_REASONS.get(error.reason, "unreadable"), error.detail) from None


def parse_timestamp(stamp: str) -> float:
    """``[HH:]MM:SS.mmm`` (or ``,mmm``) -> seconds."""
    match = _TIMESTAMP.match(stamp)
    if match is None:
        raise ValueError(f"bad timestamp {stamp!r}")
    hours, minutes, seconds, fraction = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(fraction) / 10 ** len(fraction)


def _clean(line: str) -> str:
    return " ".join(html.unescape(_TAG.sub("", line)).split())


def _blocks(text: str, strict_blank: bool) -> list[tuple[int, list[str]]]:
    """Blank-line separated blocks as (first line number, lines). With ``strict_blank`` only an empty line
    separates (WebVTT: YouTube cues hold whitespace-only text lines), else whitespace-only lines do too."""
    blocks, current, start = [], [], 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line if strict_blank else line.strip():
            if not current:
                start = number
            current.append(line)
        elif current:
            blocks.append((start, current))
            current = []
    if current:
        blocks.append((start, current))
    return blocks


def _cue_timing(lines: list[str], first_line: int) -> tuple[float, float, list[str]] | None:
    """Split a block into (start, end, text lines); None when it holds no timing line."""
    for offset, line in enumerate(lines[:2]):
        match = _TIMING.match(line)
        if match:
            start, end = parse_timestamp(match.group(1)), parse_timestamp(match.group(2))
            if end < start:
                raise ValueError(f"cue at line {first_line + offset} ends before it starts")
            return start, end, lines[offset + 1 :]
    return None


def parse_vtt(text: str) -> list[Caption]:
    """WebVTT; YouTube's rolling auto-captions are de-duplicated.

    A rolling cue shows the previous line again above the new words, and short transitional cues show the
    finished line alone. A line that already appeared in the previous cue is not emitted again; instead its
    caption's end moves to the end of the cue that still shows it (the time the line stayed on screen). The
    new lines of a cue form one caption.
    """
    blocks = _blocks(text, strict_blank=True)
    if not blocks or not blocks[0][1][0].lstrip("\ufeff").startswith("WEBVTT"):
        raise ValueError("missing the WEBVTT header")
    captions: list[list] = []
    previous: dict[str, int] = {}  # line text shown by the previous cue -> its caption index
    for first_line, lines in blocks[1:]:
        if lines[0].startswith(("NOTE", "STYLE", "REGION")):
            continue
        cue = _cue_timing(lines, first_line)
        if cue is None:
            raise ValueError(f"block at line {first_line} has no 'start --> end' timing line")
        start, end, body = cue
        shown: dict[str, int] = {}
        new_lines = []
        for line in filter(None, map(_clean, body)):
            if line in previous:
                shown[line] = previous[line]
                captions[previous[line]][1] = max(captions[previous[line]][1], end)
            else:
                new_lines.append(line)
        if new_lines:
            captions.append([start, end, " ".join(new_lines)])
            shown.update(dict.fromkeys(new_lines, len(captions) - 1))
        previous = shown
    return [(float(s), float(e), t) for s, e, t in captions]


def parse_srt(text: str) -> list[Caption]:
    """SubRip: numbered blocks of a timing line (``00:00:01,000 --> 00:00:02,500``) and text lines."""
    captions = []
    for first_line, lines in _blocks(text, strict_blank=False):
        cue = _cue_timing(lines, first_line)
        if cue is None:
            raise ValueError(f"block at line {first_line} has no 'start --> end' timing line")
        start, end, body = cue
        line = " ".join(filter(None, map(_clean, body)))
        if line:
            captions.append((start, end, line))
    return captions


def _caption_rows(starts: list, ends: list, texts: list) -> list[Caption]:
    if not len(starts) == len(ends) == len(texts):
        raise ValueError(f"start/end/text lengths differ: {len(starts)}, {len(ends)}, {len(texts)}")
    rows = []
    for index, (start, end, text) in enumerate(zip(starts, ends, texts, strict=True)):
        if isinstance(start, bool) or isinstance(end, bool):
            raise ValueError(f"caption {index}: start/end must be numbers, got {start!r}, {end!r}")
        if not (text is None or isinstance(text, (str, int, float))) or isinstance(text, bool):
            raise ValueError(f"caption {index}: text must be a string, got {type(text).__name__}")
        try:
            rows.append((float(start), float(end), "" if text is None else str(text).strip()))
        except (TypeError, ValueError, OverflowError):
            raise ValueError(
                f"caption {index}: start/end must be numbers, got {_short(start)}, {_short(end)}"
            ) from None
    return rows


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_csv(text: str) -> list[Caption]:
    """The HowTo100M per-video CSV: a header with ``start``, ``end`` and ``text`` columns."""
    reader = csv.DictReader(io.StringIO(text))
    missing = {"start", "end", "text"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"CSV lacks the column(s) {sorted(missing)} (header: {reader.fieldnames})")
    rows = list(reader)
    return _caption_rows([r["start"] for r in rows], [r["end"] for r in rows], [r["text"] for r in rows])


def parse_json(text: str) -> list[Caption]:
    """``{"start": [...], "end": [...], "text": [...]}`` or ``[{"start", "end", "text"}, ...]``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON ({error.msg} at line {error.lineno})") from None
    if isinstance(data, dict) and {"start", "end", "text"} <= set(data):
        if not all(isinstance(data[key], list) for key in ("start", "end", "text")):
            raise ValueError('"start", "end" and "text" must be lists')
        return _caption_rows(data["start"], data["end"], data["text"])
    if isinstance(data, list) and all(
        isinstance(item, dict) and {"start", "end", "text"} <= set(item) for item in data
    ):
        return _caption_rows([i["start"] for i in data], [i["end"] for i in data], [i["text"] for i in data])
    if isinstance(data, dict) and data and all(isinstance(v, dict) and "start" in v for v in data.values()):
        raise ValueError(
            "this is a whole-dataset caption file (video id -> captions); give one video's entry"
        )
    raise ValueError('expected {"start": [...], "end": [...], "text": [...]} or a list of {start, end, text}')


def load_word_vectors(path: str | Path, binary: bool | None = None) -> KeyedVectors:
    """Word vectors in the word2vec binary or text format (GoogleNews ``.bin``, ``.txt``/``.vec``; ``.gz`` ok).

    ``binary=None`` decides from the extension, else from the file's second line. A text file without the
    ``count dim`` header line (GloVe style) is read too.
    """
    from gensim.models import KeyedVectors

    path = Path(path)
    if not path.is_file():
        raise MCNError(f"word vectors file not found: {path}")
    header = _first_lines(path, 2)
    no_header = len(header[0].split()) != 2
    if binary is None:
        binary = _looks_binary(path, header)
    try:
        return KeyedVectors.load_word2vec_format(str(path), binary=binary, no_header=no_header and not binary)
    except Exception as error:  # gensim raises ValueError, EOFError, UnicodeDecodeError for broken files
        raise MCNError(
            f"cannot read word vectors {path} ({'binary' if binary else 'text'}): {error}"
        ) from error


def _first_lines(path: Path, num_lines: int) -> list[bytes]:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        lines = [f.readline(65536) for _ in range(num_lines)]
    if not lines[0].strip():
        raise MCNError(f"word vectors file is empty: {path}")
    return lines


def _looks_binary(path: Path, header: list[bytes]) -> bool:
    suffixes = [s.lower() for s in path.suffixes]
    if ".bin" in suffixes:
        return True
    if {".txt", ".vec"} & set(suffixes):
        return False
    try:
        fields = header[1].decode("utf-8").split()
        [float(x) for x in fields[1:]]
    except (UnicodeDecodeError, ValueError):
        return True
    return len(fields) < 2


def token_ids(tokens: list[str], vectors: KeyedVectors) -> np.ndarray:
    """Ids of the tokens in ``vectors.key_to_index`` as int32; out-of-vocabulary tokens are dropped."""
    key_to_index = vectors.key_to_index
    return np.array([key_to_index[t] for t in tokens if t in key_to_index], dtype=np.int32)
