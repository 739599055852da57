"""mcn.pipeline.stages: the decode stream a Ray decode task yields, run here without Ray."""

from __future__ import annotations

import os
import time

import numpy as np
from media import make_video

from mcn.pipeline import config as pipeline_config
from mcn.pipeline import stages
from mcn.pipeline.inputs import VideoItem

CONFIG = pipeline_config.tiny_cpu().extract


def tags(item: VideoItem, asr: bool = False) -> list[tuple[dict, list]]:
    return list(stages.decode_stream(item, CONFIG, asr))


def test_a_video_streams_header_windows_and_end(tmp_path):
    video = make_video(tmp_path / "v.mp4", seconds=3.0, size=(96, 64))
    captions = tmp_path / "v.srt"
    captions.write_text("1\n00:00:00,000 --> 00:00:01,000\nstir the pot\n")
    steps = tags(VideoItem("v", str(video), str(captions)))
    header, *windows, end = steps
    assert header[0]["tag"] == stages.TAG_HEADER and header[1] == []
    assert header[0]["captions"] == [(0.0, 1.0, "stir the pot")] and header[0]["caption_source"] == "srt"
    assert header[0]["logmel"].shape[0] == 40 and header[0]["logmel"].dtype == np.float16
    assert end == ({"tag": stages.TAG_END}, [])
    frames_2d = sum(len(w[1][0]) for w in windows)
    frames_3d = [len(w[1][1]) for w in windows]
    assert frames_2d == 3  # 1 fps over 3 s
    assert all(n % stages.CLIP_FRAMES == 0 for n in frames_3d[:-1])  # leftovers carry to the last window
    assert sum(frames_3d) == 72  # 24 fps over 3 s


def test_asr_gets_the_waveform_only_for_videos_without_captions(tmp_path):
    video = make_video(tmp_path / "talk.mp4", seconds=1.0, size=(64, 48))
    header, payloads = tags(VideoItem("talk", str(video)), asr=True)[0]
    assert header["needs_asr"] and payloads[0].dtype == np.float32 and abs(len(payloads[0]) - 16000) < 1600
    silent = make_video(tmp_path / "silent.mp4", seconds=1.0, size=(64, 48), audio=False)
    header, payloads = tags(VideoItem("silent", str(silent)), asr=True)[0]
    assert not header["needs_asr"] and payloads == [] and header["logmel"] is None


def test_broken_inputs_end_the_stream_with_a_failure_tag(tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    ((failed, _),) = tags(VideoItem("corrupt", str(corrupt)))
    assert (
        failed["tag"] == stages.TAG_FAILED and failed["reason"] == "corrupt" and failed["stage"] == "decode"
    )
    video = make_video(tmp_path / "v.mp4", seconds=1.0, size=(64, 48))
    broken = tmp_path / "v.json"
    broken.write_text('{"start": [0.0], "end": [1.0]')
    ((failed, _),) = tags(VideoItem("v", str(video), str(broken)))
    assert failed["stage"] == "captions" and failed["reason"] == "bad_captions"


def test_stage_timer_adds_up_wall_and_cpu_time():
    timer = stages.StageTimer()
    for _ in range(2):
        with timer:
            deadline = time.perf_counter() + 0.05
            while time.perf_counter() < deadline:
                pass
    assert 0.1 <= timer.wall_s < 1.0 and 0.0 < timer.cpu_s <= timer.wall_s + 0.05
