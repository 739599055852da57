"""mcn.pipeline.stages: the tags and payloads a Ray decode task yields for a video's stream, run here without Ray."""

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
    (header, header_payloads), *windows, end = steps
    assert header["tag"] == stages.TAG_HEADER and header_payloads == []
    assert header["header"].captions == [(0.0, 1.0, "stir the pot")]
    assert header["header"].logmel.shape[0] == 40 and header["header"].waveform_16k is None
    assert end == ({"tag": stages.TAG_END}, [])
    for index, (tag, (frames_2d, frames_3d)) in enumerate(windows):
        # What the driver needs to fill batches without fetching the frames.
        assert tag["tag"] == stages.TAG_WINDOW and tag["index"] == index
        assert tag["frames"] == {"2d": len(frames_2d), "3d": len(frames_3d)}
        assert tag["rows"] == {"2d": len(frames_2d), "3d": -(-len(frames_3d) // 16)}
        assert tag["group"] == {"2d": frames_2d.shape[1:3], "3d": ()}
        assert frames_2d.dtype == frames_3d.dtype == np.uint8 and frames_3d.shape[1:] == (112, 112, 3)
    assert sum(tag["frames"]["2d"] for tag, _ in windows) == 3  # 1 fps over 3 s
    assert sum(tag["frames"]["3d"] for tag, _ in windows) == 72  # 24 fps over 3 s
    assert windows[0][0]["group"]["2d"] == (224, 336)  # shorter side 224


def test_asr_gets_the_waveform_only_for_videos_without_captions(tmp_path):
    video = make_video(tmp_path / "talk.mp4", seconds=1.0, size=(64, 48))
    header, payloads = tags(VideoItem("talk", str(video)), asr=True)[0]
    assert header["header"].needs_asr and header["header"].waveform_16k is None  # sent as the payload
    assert payloads[0].dtype == np.float32 and abs(len(payloads[0]) - 16000) < 1600
    silent = make_video(tmp_path / "silent.mp4", seconds=1.0, size=(64, 48), audio=False)
    header, payloads = tags(VideoItem("silent", str(silent)), asr=True)[0]
    assert not header["header"].needs_asr and payloads == [] and header["header"].logmel is None


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


class FakeActor:
    """Stands in for a Ray actor handle: ``run.remote`` and ``ready.options(...).remote`` return tokens."""

    def __init__(self, name: str):
        self.name, self.calls = name, 0
        self.run = self.ready = self

    def remote(self, *args):
        self.calls += 1
        return (self.name, self.calls)

    def options(self, **options):
        assert options == {"max_task_retries": -1}  # a probe waits for the restart
        return self


def test_actor_pool_sends_each_call_to_the_least_busy_available_actor():
    pool = stages.ActorPool([FakeActor("a"), FakeActor("b")])
    assert pool.has_idle
    first, second = pool.submit(1), pool.submit(2)
    assert {first[0], second[0]} == {"a", "b"} and not pool.has_idle
    pool.done(first)
    assert pool.has_idle and pool.submit(3)[0] == first[0]
    # An actor whose call died takes no calls until its probe answers.
    pool.done(second, actor_died=True)
    assert pool.available == [0 if first[0] == "a" else 1] and not pool.has_idle
    assert pool.submit(4)[0] == first[0]
    (probe,) = pool.probes
    pool.probe_done(probe)
    assert pool.available == [0, 1] and pool.has_idle and pool.submit(5)[0] == second[0]


def test_stage_timer_adds_up_wall_and_cpu_time():
    timer = stages.StageTimer()
    for _ in range(2):
        with timer:
            deadline = time.perf_counter() + 0.05
            while time.perf_counter() < deadline:
                pass
    assert 0.1 <= timer.wall_s < 1.0 and 0.0 < timer.cpu_s <= timer.wall_s + 0.05
