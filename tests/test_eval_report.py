"""The HTML report: it opens with one row per task next to chance, and marks the true clip of each sample query."""

from __future__ import annotations

import re

import numpy as np
import pytest
from media import make_video

from mcn.eval import report


def task_metrics(r1: float, num_gallery: int, num_counted: int, num_missing: int) -> dict:
    return {
        "R@1": r1,
        "R@5": 0.5,
        "R@10": 0.75,
        "MedR": 3.0,
        "MeanR": 4.0,
        "num_queries": num_gallery,
        "num_gallery": num_gallery,
        "num_counted": num_counted,
        "num_missing": num_missing,
        "chance_R@1": 1 / num_gallery,
        "chance_R@5": 5 / num_gallery,
        "chance_R@10": 10 / num_gallery,
        "chance_MedR": (num_gallery + 1) / 2,
    }


def section(examples=()) -> report.Section:
    metrics = {"num_clips": 100, "num_clips_missing": 20}
    for protocol, counted in (("reference", 80), ("strict", 100)):
        for task, r1 in (("text_to_video_audio", 0.25), ("text_to_video", 0.125)):
            metrics.update(
                {f"{protocol}/{task}/{k}": v for k, v in task_metrics(r1, 80, counted, 20).items()}
            )
    return report.Section(
        "ckpt",
        "youcook2",
        "retrieval",
        metrics,
        curves={"reference text_to_video": np.linspace(0.1, 0.9, 10)},
        examples=list(examples),
        notes=["a <note>"],
        primary="text_to_video",
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("report") / "vid00.mp4", seconds=3.0, audio=False)


def test_the_report_opens_with_one_row_per_task_next_to_chance():
    page = report.render_report("title", [section()], {"kind": "retrieval"}, thumbnails=False)
    first_table = page[page.index("<table") : page.index("</table>")]
    assert page.index("<table class='summary'>") < page.index("<h2>")  # before any section
    rows = re.findall(r"<tr[^>]*><td>ckpt</td>(.*?)</tr>", first_table)
    assert len(rows) == 4  # reference and strict × T·(V+A) and T·V
    assert re.findall(
        r"<tr class=primary><td>ckpt</td><td>youcook2</td><td>(\w+)</td><td>(\w+)<", first_table
    ) == [("reference", "text_to_video")]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", rows[0])
    # youcook2, reference, text_to_video_audio, N 80, counted 80, missing 20, R@1 25.00 next to chance 1.25, ...
    assert cells == ["youcook2", "reference", "text_to_video_audio", "80", "80", "20",
                     "25.00", "1.25", "50.00", "6.25", "75.00", "12.50", "3.0", "40.5"]  # fmt: skip
    assert re.findall(r"<td[^>]*>([^<]*)</td>", rows[2])[:6] == [
        "youcook2", "strict", "text_to_video_audio", "80", "100", "20"
    ]  # fmt: skip
    for header in ("R@1", "R@5", "R@10", "MedR", "chance", "missing"):
        assert f">{header}</th>" in first_table
    assert "a &lt;note&gt;" in page and "all 54 metrics" in page


def test_the_true_clip_is_marked_among_the_results(source, tmp_path):
    hits = [
        report.RetrievedClip("vid01", 6.0, 10.0, 0.9, False, str(tmp_path / "gone.mp4")),
        report.RetrievedClip("vid00", 1.0, 2.0, 0.5, True, str(source)),
    ]
    missed = [report.RetrievedClip("vid02", 0.0, 1.0, 0.8, False, "")]
    examples = [
        report.QueryExample("crack <the> eggs", "vid00", 1.0, 2.0, hits, true_rank=2),
        report.QueryExample("whisk", "vid03", 0.0, 4.0, missed, true_rank=17),
    ]
    page = report.render_report("t", [section(examples)], {})
    assert page.count("&#10003; true clip") == 1
    marked = page[page.index('<td class="hit">') :]
    assert marked.index("true clip") < marked.index("#2 vid00") < marked.index("</td>")
    assert "ranked #2" in page and "ranked #17, not in the top 1" in page
    assert "crack &lt;the&gt; eggs" in page
    assert page.count('src="data:image/jpeg;base64,') == 1 and "no frame" in page  # the gone video
    assert 'src="data:image/png;base64,' in page
    assert page.count('src="data:image/jpeg;base64,') == 1
    assert "data:image/jpeg" not in report.render_report("t", [section(examples)], {}, thumbnails=False)


def test_localization_summary_rows():
    metrics = {"num_videos_missing": 2}
    for scoring in ("video_audio", "video"):
        metrics.update({f"{scoring}/recall_task_macro": 0.5, f"{scoring}/recall_task_micro": 0.25,
                        f"{scoring}/recall_video_macro": 0.125, f"{scoring}/num_videos": 9})  # fmt: skip
    crosstask = report.Section(
        "c", "crosstask", "localization", metrics, bars={"A": 0.5}, primary="recall_task_macro"
    )
    page = report.render_report("t", [crosstask], {})
    first_table = page[page.index("<table") : page.index("</table>")]
    assert first_table.count("<tr><td>c</td>") == 2 and "50.00" in first_table and "12.50" in first_table
    assert first_table.count("<td class=primary>50.00</td>") == 2


def test_thumbnail_decoding(source, tmp_path):
    assert report.thumbnail_jpeg(str(source), 1.5) is not None
    assert report.thumbnail_jpeg(str(tmp_path / "gone.mp4"), 1.0) is None
    assert report.thumbnail_jpeg("", 1.0) is None
