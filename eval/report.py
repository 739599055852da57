"""A self-contained HTML report of an evaluation run: metric tables, recall@K curves, sample queries.

Everything is inline (PNG plots as base64 from matplotlib's Agg backend, JPEG thumbnails decoded from the source
videos the store records), so the file can be mailed or archived on its own. A thumbnail whose source video is
gone becomes a grey placeholder.
"""

from __future__ import annotations

import base64
import html
import io
import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

THUMBNAIL_WIDTH = 160
THUMBNAIL_TIMEOUT_S = 20.0


@dataclass
class RetrievedClip:
    video_id: str
    start: float
    end: float
    score: float
    correct: bool
    source_path: str = ""


@dataclass
class QueryExample:
    query: str
    true_video_id: str
    true_start: float
    true_end: float
    hits: list[RetrievedClip]


@dataclass
class Section:
    """One checkpoint on one benchmark."""

    checkpoint: str
    benchmark: str
    kind: str  # "retrieval" or "localization"
    metrics: dict
    curves: dict[str, np.ndarray] = field(default_factory=dict)  # retrieval task -> R@1..K
    examples: list[QueryExample] = field(default_factory=list)
    bars: dict[str, float] = field(default_factory=dict)  # localisation: task -> recall
    notes: list[str] = field(default_factory=list)


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def curve_png(curves: dict[str, np.ndarray], chance_gallery: int | None, title: str) -> str:
    """Base64 PNG of R@k against k for each retrieval task (and the chance line k/N)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.5, 3.5))
    for task, curve in curves.items():
        axes.plot(np.arange(1, len(curve) + 1), 100 * np.asarray(curve), label=task)
    if chance_gallery and curves:
        ks = np.arange(1, len(next(iter(curves.values()))) + 1)
        axes.plot(ks, 100 * np.minimum(ks / chance_gallery, 1), "k:", label="chance")
    axes.set_xlabel("k")
    axes.set_ylabel("R@k (%)")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    encoded = _png(figure)
    plt.close(figure)
    return encoded


def bars_png(values: dict[str, float], title: str) -> str:
    """Base64 PNG bar chart of per-task recall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(max(4.0, 0.35 * len(values) + 2), 3.2))
    axes.bar(range(len(values)), [100 * v for v in values.values()])
    axes.set_xticks(range(len(values)), list(values), rotation=60, fontsize=7)
    axes.set_ylabel("recall (%)")
    axes.set_title(title, fontsize=10)
    encoded = _png(figure)
    plt.close(figure)
    return encoded


def thumbnail_jpeg(source_path: str, seconds: float, ffmpeg: str | None = None) -> str | None:
    """Base64 JPEG of the frame at ``seconds`` of a video (width 160), or None when it cannot be decoded."""
    if not source_path or not Path(source_path).is_file():
        return None
    if ffmpeg is None:
        import imageio_ffmpeg

        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    command = [
        ffmpeg,
        "-loglevel",
        "error",
        "-ss",
        f"{max(seconds, 0.0):.3f}",
        "-i",
        source_path,
        "-frames:v",
        "1",
        "-vf",
        f"scale={THUMBNAIL_WIDTH}:-2",
        "-f",
        "image2pipe",
        "-vcodec",
        "mjpeg",
        "-",
    ]
    try:
        result = subprocess.run(command, capture_output=True, timeout=THUMBNAIL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0 or not result.stdout:
        return None
    return base64.b64encode(result.stdout).decode("ascii")


def _metric_table(metrics: dict) -> str:
    rows = []
    for key, value in metrics.items():
        shown = (
            f"{100 * value:.2f}" if isinstance(value, float) and ("R@" in key or "recall" in key) else value
        )
        if isinstance(shown, float):
            shown = f"{shown:.2f}"
        rows.append(f"<tr><td>{html.escape(key)}</td><td>{html.escape(str(shown))}</td></tr>")
    return "<table><tr><th>metric</th><th>value (R@k and recall in %)</th></tr>" + "".join(rows) + "</table>"


def _thumbnail_html(hit: RetrievedClip, thumbnails: bool) -> str:
    encoded = None
    if thumbnails:  # the middle of the clip, else the first frame (a span may run past a re-encoded video)
        encoded = thumbnail_jpeg(hit.source_path, (hit.start + hit.end) / 2) or thumbnail_jpeg(
            hit.source_path, 0.0
        )
    if encoded is None:
        return '<div class="ph">no frame</div>'
    return f'<img class="thumb" src="data:image/jpeg;base64,{encoded}" alt="{html.escape(hit.video_id)}">'


def _examples_html(examples: Sequence[QueryExample], thumbnails: bool) -> str:
    parts = []
    for example in examples:
        cells = []
        for rank, hit in enumerate(example.hits, 1):
            mark = "hit" if hit.correct else ""
            cells.append(
                f'<td class="{mark}">{_thumbnail_html(hit, thumbnails)}<br>#{rank} {html.escape(hit.video_id)}'
                f"<br>{hit.start:.1f}–{hit.end:.1f} s<br>score {hit.score:.3f}</td>"
            )
        parts.append(
            f"<p><b>{html.escape(example.query)}</b> (true clip: {html.escape(example.true_video_id)} "
            f"{example.true_start:.1f}–{example.true_end:.1f} s)</p><table><tr>{''.join(cells)}</tr></table>"
        )
    return "".join(parts)


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top}td.hit{background:#dfd}
.ph{width:160px;height:90px;background:#ddd;color:#666;display:flex;align-items:center;justify-content:center}
h2{border-bottom:1px solid #999}"""


def render_report(title: str, sections: Sequence[Section], config: dict, thumbnails: bool = True) -> str:
    """The whole HTML document as a string."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        body.append(
            f"<h2>{html.escape(section.checkpoint)} — {html.escape(section.benchmark)} ({section.kind})</h2>"
        )
        body.extend(f"<p>{html.escape(note)}</p>" for note in section.notes)
        body.append(_metric_table(section.metrics))
        if section.curves:
            gallery = section.metrics.get("text_to_video/gallery_size")
            encoded = curve_png(section.curves, gallery, f"{section.benchmark}: recall@k")
            body.append(f'<img src="data:image/png;base64,{encoded}" alt="recall at k">')
        if section.bars:
            encoded = bars_png(section.bars, f"{section.benchmark}: recall per task")
            body.append(f'<img src="data:image/png;base64,{encoded}" alt="recall per task">')
        if section.examples:
            body.append("<h3>Sample queries: top retrieved clips</h3>")
            body.append(_examples_html(section.examples, thumbnails))
    config_json = html.escape(json.dumps(config, indent=2))
    body.append(f"<h2>Configuration</h2><pre>{config_json}</pre>")
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
