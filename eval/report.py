"""A self-contained HTML report of an evaluation run.

It opens with one table: a row per checkpoint, benchmark, protocol and task with R@1, R@5, R@10 and MedR, each
next to its chance level (R@k = k / N, MedR = (N + 1) / 2 for the N clips of the gallery), and the counts of
clips in the gallery, counted and missing. Then, per checkpoint and benchmark: the settings used, recall@k
curves (or per-task recall bars), sample queries with their top clips (the true clip marked, and its rank when
it is not among them) and every metric, folded.

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

from mcn.eval.retrieval import RECALL_KS

THUMBNAIL_WIDTH = 160
THUMBNAIL_TIMEOUT_S = 20.0


@dataclass
class RetrievedClip:
    video_id: str
    start: float
    end: float
    score: float
    correct: bool  # this is the query's true clip
    source_path: str = ""


@dataclass
class QueryExample:
    query: str
    true_video_id: str
    true_start: float
    true_end: float
    hits: list[RetrievedClip]
    true_rank: int | None = None  # 1-based rank of the true clip in the whole gallery


@dataclass
class Section:
    """One checkpoint on one benchmark."""

    checkpoint: str
    benchmark: str
    kind: str  # "retrieval" or "localization"
    metrics: dict
    curves: dict[str, np.ndarray] = field(default_factory=dict)  # "<protocol> <task>" -> R@1..K
    examples: list[QueryExample] = field(default_factory=list)
    bars: dict[str, float] = field(default_factory=dict)  # localisation: task -> recall
    notes: list[str] = field(default_factory=list)
    primary: str = ""  # the task (retrieval) or recall (localisation) the published numbers use


def retrieval_rows(metrics: dict) -> list[tuple[str, str]]:
    """The (protocol, task) pairs a retrieval section's metrics hold, in report order."""
    return [
        (protocol, task)
        for protocol in ("reference", "strict")
        for task in ("text_to_video_audio", "text_to_video")
        if f"{protocol}/{task}/R@1" in metrics
    ]


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


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


def summary_table(sections: Sequence[Section]) -> str:
    """The report's first table: one row per checkpoint, benchmark, protocol and task, next to chance."""
    retrieval_sections = [s for s in sections if s.kind == "retrieval"]
    localization_sections = [s for s in sections if s.kind == "localization"]
    parts = []
    if retrieval_sections:
        head = "".join(
            f"<th>{name}</th><th class='chance'>chance</th>" for name in ("R@1", "R@5", "R@10", "MedR")
        )
        rows = []
        for section in retrieval_sections:
            m = section.metrics
            for protocol, task in retrieval_rows(m):
                p = f"{protocol}/{task}"
                cells = "".join(
                    f"<td>{_percent(m[f'{p}/R@{k}'])}</td><td class='chance'>{_percent(m[f'{p}/chance_R@{k}'])}</td>"
                    for k in RECALL_KS
                )
                cells += f"<td>{m[f'{p}/MedR']:.1f}</td><td class='chance'>{m[f'{p}/chance_MedR']:.1f}</td>"
                primary = protocol == "reference" and task == section.primary
                rows.append(
                    f"<tr{' class=primary' if primary else ''}><td>{html.escape(section.checkpoint)}</td>"
                    f"<td>{html.escape(section.benchmark)}</td>"
                    f"<td>{protocol}</td><td>{task}</td><td>{m[f'{p}/num_gallery']}</td>"
                    f"<td>{m[f'{p}/num_counted']}</td><td>{m[f'{p}/num_missing']}</td>{cells}</tr>"
                )
        parts.append(
            "<table class='summary'><tr><th>checkpoint</th><th>benchmark</th><th>protocol</th><th>task</th>"
            "<th title='clips in the gallery (N)'>N</th><th title='what R@k divides by'>counted</th>"
            f"<th title='annotated clips not in the gallery'>missing</th>{head}</tr>{''.join(rows)}</table>"
            "<p class='legend'>R@k in %, chance R@k = k / N, chance MedR = (N + 1) / 2 for the N clips of the "
            "gallery. <b>reference</b>: what the public MCN code computes for the benchmark; <b>strict</b>: every "
            "annotated clip counts, a missing one as a miss. Ties are broken pessimistically in both. Bold: the "
            "task and protocol of the published numbers.</p>"
        )
    if localization_sections:
        rows = []
        for section in localization_sections:
            m = section.metrics
            for scoring in ("video_audio", "video"):
                if f"{scoring}/recall_task_macro" in m:
                    cells = "".join(
                        f"<td{' class=primary' if key == section.primary else ''}>{_percent(m[f'{scoring}/{key}'])}</td>"
                        for key in ("recall_task_macro", "recall_task_micro", "recall_video_macro")
                    )
                    rows.append(
                        f"<tr><td>{html.escape(section.checkpoint)}</td><td>{html.escape(section.benchmark)}</td>"
                        f"<td>{scoring}</td><td>{m[f'{scoring}/num_videos']}</td><td>{m['num_videos_missing']}</td>"
                        f"{cells}</tr>"
                    )
        parts.append(
            "<table class='summary'><tr><th>checkpoint</th><th>benchmark</th><th>scoring</th><th>videos</th>"
            "<th>missing</th><th>recall task-macro</th><th>task-micro</th><th>video-macro</th></tr>"
            f"{''.join(rows)}</table><p class='legend'>recall in %; bold: the recall of the published numbers</p>"
        )
    return "".join(parts)


def _metric_table(metrics: dict) -> str:
    """Every metric of a section, folded away below its plots."""
    rows = []
    for key, value in metrics.items():
        shown = _percent(value) if isinstance(value, float) and ("R@" in key or "recall" in key) else value
        if isinstance(shown, float):
            shown = f"{shown:.2f}"
        rows.append(f"<tr><td>{html.escape(key)}</td><td>{html.escape(str(shown))}</td></tr>")
    return (
        f"<details><summary>all {len(rows)} metrics</summary><table><tr><th>metric</th>"
        f"<th>value (R@k and recall in %)</th></tr>{''.join(rows)}</table></details>"
    )


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
            mark = '<div class="truth">&#10003; true clip</div>' if hit.correct else ""
            cells.append(
                f'<td class="{"hit" if hit.correct else ""}">{mark}{_thumbnail_html(hit, thumbnails)}'
                f"<br>#{rank} {html.escape(hit.video_id)}<br>{hit.start:.1f}–{hit.end:.1f} s"
                f"<br>score {hit.score:.3f}</td>"
            )
        found = any(hit.correct for hit in example.hits)
        where = (f"ranked #{example.true_rank}" if example.true_rank is not None else "") + (
            "" if found else f", not in the top {len(example.hits)}"
        )
        parts.append(
            f"<p><b>{html.escape(example.query)}</b> (true clip: {html.escape(example.true_video_id)} "
            f"{example.true_start:.1f}–{example.true_end:.1f} s, {where.lstrip(', ')})</p>"
            f"<table><tr>{''.join(cells)}</tr></table>"
        )
    return "".join(parts)


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1300px}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top}
td.hit{background:#dfd;outline:3px solid #2a2;outline-offset:-3px}.truth{color:#161;font-weight:bold}
.chance{color:#888}table.summary td{text-align:right}table.summary td:nth-child(-n+4){text-align:left}
.legend{color:#555;font-size:12px}tr.primary td,td.primary{font-weight:bold}
.ph{width:160px;height:90px;background:#ddd;color:#666;display:flex;align-items:center;justify-content:center}
h2{border-bottom:1px solid #999}"""


def render_report(title: str, sections: Sequence[Section], config: dict, thumbnails: bool = True) -> str:
    """The whole HTML document as a string: the summary table first, then one part per section."""
    body = [f"<h1>{html.escape(title)}</h1>", summary_table(sections)]
    for section in sections:
        body.append(
            f"<h2>{html.escape(section.checkpoint)} — {html.escape(section.benchmark)} ({section.kind})</h2>"
        )
        body.extend(f"<p>{html.escape(note)}</p>" for note in section.notes)
        if section.curves:
            gallery = next(
                (section.metrics[f"{p}/{t}/num_gallery"] for p, t in retrieval_rows(section.metrics)), None
            )
            encoded = curve_png(section.curves, gallery, f"{section.benchmark}: recall@k")
            body.append(f'<img src="data:image/png;base64,{encoded}" alt="recall at k">')
        if section.bars:
            encoded = bars_png(section.bars, f"{section.benchmark}: recall per task")
            body.append(f'<img src="data:image/png;base64,{encoded}" alt="recall per task">')
        if section.examples:
            body.append("<h3>Sample queries: top retrieved clips (reference gallery, primary task)</h3>")
            body.append(_examples_html(section.examples, thumbnails))
        body.append(_metric_table(section.metrics))
    config_json = html.escape(json.dumps(config, indent=2))
    body.append(f"<h2>Configuration</h2><pre>{config_json}</pre>")
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )


def print_summary(section: Section) -> None:
    """A short table on stdout, each figure next to its chance level."""
    m = section.metrics
    print(f"\n{section.checkpoint} on {section.benchmark}")
    if section.kind == "retrieval":
        print(
            f"  {m['num_clips_in_store']} of {m['num_clips']} clips in the store ({m['num_clips_missing']} missing, "
            f"{m['num_clips_with_audio']} with audio)"
        )
        print(
            f"  {'protocol':<10}{'task':<21}{'N':>6}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'MedR':>8}   chance R@1/5/10, MedR"
        )
        for protocol, task in retrieval_rows(m):
            p = f"{protocol}/{task}"
            print(
                f"  {protocol:<10}{task:<21}{m[f'{p}/num_gallery']:>6}"
                + "".join(f"{100 * m[f'{p}/R@{k}']:>8.2f}" for k in RECALL_KS)
                + f"{m[f'{p}/MedR']:>8.1f}   "
                + " / ".join(f"{100 * m[f'{p}/chance_R@{k}']:.2f}" for k in RECALL_KS)
                + f", {m[f'{p}/chance_MedR']:.1f}"
            )
    else:
        for scoring in ("video_audio", "video"):
            if f"{scoring}/recall_task_macro" in m:
                print(
                    f"  {scoring:<12} recall task-macro {100 * m[f'{scoring}/recall_task_macro']:.2f}  "
                    f"task-micro {100 * m[f'{scoring}/recall_task_micro']:.2f}  "
                    f"video-macro {100 * m[f'{scoring}/recall_video_macro']:.2f}  ({m[f'{scoring}/num_videos']} videos)"
                )
