"""Caption files for the sample corpus, from timed words: YouTube-style rolling WebVTT, SRT, HowTo100M CSV and
JSON, and damaged copies of each the way real downloads break."""

from __future__ import annotations

import csv
import io
import json

Word = tuple[
    float, float, str
]  # one spoken word: (start_s, end_s, word); caption writers take lists of sentences


def _timestamp(seconds: float, decimal: str = ".") -> str:
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def caption_lines(sentences: list[list[Word]], max_words: int = 6) -> list[list[Word]]:
    """Split each sentence's timed words into display lines of at most ``max_words`` words."""
    lines = []
    for words in sentences:
        num_lines = -(-len(words) // max_words)
        per_line = -(-len(words) // num_lines)
        lines += [words[i : i + per_line] for i in range(0, len(words), per_line)]
    return lines


def youtube_vtt(lines: list[list[Word]], hold: float = 1.0) -> str:
    """WebVTT as YouTube's automatic captions write it: every line is shown twice, first being spoken
    (word-timed ``<c>`` tags, under the previous line) and then as the top line of the next cue, with a 10 ms
    cue between them that holds the finished line alone."""
    out = ["WEBVTT", "Kind: captions", "Language: en", ""]
    previous = " "
    for i, line in enumerate(lines):
        start, end = line[0][0], line[-1][1] + hold
        if i + 1 < len(lines):
            end = min(end, lines[i + 1][0][0] - 0.01)
        spoken = line[0][2] + "".join(f"<{_timestamp(s)}><c> {w}</c>" for s, _, w in line[1:])
        out += [f"{_timestamp(start)} --> {_timestamp(end)} align:start position:0%", previous, spoken, ""]
        previous = " ".join(w for _, _, w in line)
        out += [f"{_timestamp(end)} --> {_timestamp(end + 0.01)} align:start position:0%", previous, " ", ""]
    return "\n".join(out)


def srt(sentences: list[list[Word]]) -> str:
    blocks = [
        f"{i}\n{_timestamp(words[0][0], ',')} --> {_timestamp(words[-1][1], ',')}\n{' '.join(w for _, _, w in words)}\n"
        for i, words in enumerate(sentences, start=1)
    ]
    return "\n".join(blocks)


def _rows(sentences: list[list[Word]]) -> list[tuple[float, float, str]]:
    return [(round(s[0][0], 3), round(s[-1][1], 3), " ".join(w for _, _, w in s)) for s in sentences]


def howto100m_csv(sentences: list[list[Word]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["start", "end", "text"])
    writer.writerows(_rows(sentences))
    return buffer.getvalue()


def howto100m_json(sentences: list[list[Word]]) -> str:
    rows = _rows(sentences)
    return json.dumps(
        {"start": [r[0] for r in rows], "end": [r[1] for r in rows], "text": [r[2] for r in rows]}
    )


CAPTION_WRITERS = {
    "vtt": lambda s: youtube_vtt(caption_lines(s)),
    "srt": srt,
    "csv": howto100m_csv,
    "json": howto100m_json,
}


def broken_captions(fmt: str, sentences: list[list[Word]]) -> str:
    """A caption file of format ``fmt`` damaged the way real downloads are (no parser can read it)."""
    text = CAPTION_WRITERS[fmt](sentences)
    if fmt == "vtt":  # header lost and timestamps mangled
        return text.replace("WEBVTT\n", "").replace(":", ";").replace(" --> ", " -> ")
    if fmt == "srt":  # the timing lines are garbage
        return text.replace(" --> ", " ~~ ").replace(",", "#")
    if fmt == "csv":  # a foreign header and non-numeric times
        return "begin|finish|caption\n" + text.split("\n", 1)[1].replace(",", "|").replace(".", "h")
    return text[: len(text) // 2]  # json cut off mid-file
