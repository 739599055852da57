"""Strict caption readers written independently of the code under test (a broken file raises ValueError)."""

from __future__ import annotations

import csv
import io
import json
import re

TIME = r"(\d\d):(\d\d):(\d\d)[.,](\d\d\d)"


def _seconds(match: tuple[str, ...]) -> float:
    h, m, s, ms = (int(x) for x in match)
    return h * 3600 + m * 60 + s + ms / 1000


def read_vtt_rolling(text: str) -> list[tuple[float, float, str]]:
    """YouTube-style WebVTT: keep each cue's newly spoken (last) line once, and check the rolling duplicate."""
    if not text.startswith("WEBVTT"):
        raise ValueError("no WEBVTT header")
    lines, previous = [], None
    for block in text.split("\n\n")[1:]:
        timing, *body = block.rstrip("\n").split("\n")
        found = re.fullmatch(rf"{TIME} --> {TIME}.*", timing)
        if not found:
            raise ValueError(f"bad cue timing {timing!r}")
        start, end = _seconds(found.groups()[:4]), _seconds(found.groups()[4:])
        body = [re.sub(r"<[^>]+>", "", line).strip() for line in body]
        assert len(body) == 2, body
        if end - start <= 0.011:  # the 10 ms cue holds the line just finished
            assert body == [previous, ""]
            continue
        if previous is not None:
            assert body[0] == previous, "a rolling cue must repeat the previous line on top"
        lines.append((start, end, body[1]))
        previous = body[1]
    return lines


def read_srt(text: str) -> list[tuple[float, float, str]]:
    cues = []
    for number, block in enumerate(text.strip().split("\n\n"), start=1):
        index, timing, *body = block.split("\n")
        found = re.fullmatch(rf"{TIME} --> {TIME}", timing)
        if index != str(number) or not found:
            raise ValueError(f"bad SRT cue {block!r}")
        cues.append((_seconds(found.groups()[:4]), _seconds(found.groups()[4:]), " ".join(body)))
    return cues


def read_csv(text: str) -> list[tuple[float, float, str]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or set(rows[0]) != {"start", "end", "text"}:
        raise ValueError("expected the columns start,end,text")
    return [(float(r["start"]), float(r["end"]), r["text"]) for r in rows]


def read_json(text: str) -> list[tuple[float, float, str]]:
    data = json.loads(text)
    if set(data) != {"start", "end", "text"} or not len(data["start"]) == len(data["end"]) == len(
        data["text"]
    ):
        raise ValueError("expected equal-length start, end and text lists")
    return list(zip(data["start"], data["end"], data["text"], strict=True))


READERS = {"vtt": read_vtt_rolling, "srt": read_srt, "csv": read_csv, "json": read_json}


def words_of(cues: list[tuple[float, float, str]]) -> list[str]:
    return [w for _, _, text in cues for w in text.split()]
