"""mcn.extract.stream: one video's stream (header, then frame windows with 3D clips carried across windows),
and the assembly of its parts in any order."""

from __future__ import annotations

import dataclasses
import gc
import os
import tempfile

import numpy as np
import pytest
from gensim.models import KeyedVectors
from media import make_video

from mcn import storage
from mcn.extract.constants import AUDIO_SAMPLE_RATE, CLIP_FRAMES, FEATURE_DIM
from mcn.extract.decode import DecodeConfig, DecodeError
from mcn.extract.extractors import CaptionTokenizer
from mcn.extract.stream import ModelWindow, VideoAssembly, VideoHeader, VideoStream
from mcn.extract.text import CaptionError

TWO_SECOND_WINDOWS = DecodeConfig(window_seconds=2.0)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("media") / "v.mp4", seconds=5.0, size=(96, 64))


def test_header_then_windows_whose_3d_frames_make_whole_clips(video, tmp_path):
    captions = tmp_path / "v.srt"
    captions.write_text("1\n00:00:00,000 --> 00:00:01,000\nstir the pot\n")
    header, *windows = VideoStream(video, captions, TWO_SECOND_WINDOWS)
    assert isinstance(header, VideoHeader) and header.info.has_audio
    assert header.captions == [(0.0, 1.0, "stir the pot")] and header.caption_source == "srt"
    assert not header.needs_asr and header.waveform_16k is None
    assert header.logmel.shape[0] == 40 and header.logmel.dtype == np.float16
    assert abs(header.logmel.shape[1] - 100 * header.info.duration) <= 3
    assert all(isinstance(w, ModelWindow) for w in windows)
    assert [w.index for w in windows] == list(range(len(windows)))
    assert sum(len(w.frames_2d_THWC) for w in windows) == 5  # 1 fps over 5 s
    frames_3d = [len(w.frames_3d_THWC) for w in windows]
    assert sum(frames_3d) == 120  # 24 fps over 5 s
    assert all(n % CLIP_FRAMES == 0 for n in frames_3d[:-1])  # leftovers carry to the next window
    # 2 s windows hold 48 3D frames; 120 = 2 x 48 + 24, and the last 8 frames of 24 are a partial clip that
    # follows in a window of its own with no 2D frames.
    assert frames_3d == [48, 48, 16, 8] and len(windows[-1].frames_2d_THWC) == 0
    assert windows[-1].frames_2d_THWC.shape[1:] == windows[0].frames_2d_THWC.shape[1:]
    assert windows[0].frames("3d") is windows[0].frames_3d_THWC


def test_only_videos_with_audio_and_no_captions_are_transcribed(video, tmp_path):
    header = next(iter(VideoStream(video, None, TWO_SECOND_WINDOWS, transcribe=True)))
    assert header.needs_asr and header.caption_source == "none"
    assert header.waveform_16k.dtype == np.float32
    assert abs(len(header.waveform_16k) - 5 * AUDIO_SAMPLE_RATE) < AUDIO_SAMPLE_RATE / 10
    captions = tmp_path / "v.vtt"
    captions.write_text("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nhello\n")
    assert not next(iter(VideoStream(video, captions, TWO_SECOND_WINDOWS, transcribe=True))).needs_asr
    silent = make_video(tmp_path / "silent.mp4", seconds=1.0, size=(64, 48), audio=False)
    header = next(iter(VideoStream(silent, None, TWO_SECOND_WINDOWS, transcribe=True)))
    assert not header.needs_asr and header.logmel is None and header.waveform_16k is None


def test_log_mel_is_the_whole_tracks_and_the_track_is_held_only_for_transcription(video, monkeypatch):
    from mcn.extract import stream
    from mcn.extract.audio import log_mel
    from mcn.extract.decode import read_audio

    whole = log_mel(read_audio(video)).astype(np.float16)
    header = next(iter(VideoStream(video, None, TWO_SECOND_WINDOWS, transcribe=True)))
    np.testing.assert_array_equal(header.logmel, whole)

    def whole_track(*args, **kwargs):
        raise AssertionError("the whole track was read without speech recognition")

    monkeypatch.setattr(stream, "read_audio", whole_track)
    header = next(iter(VideoStream(video, None, TWO_SECOND_WINDOWS)))  # bounded: decode.read_log_mel
    np.testing.assert_array_equal(header.logmel, whole)


def test_failures_name_the_step_that_failed(video, tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    stream = VideoStream(corrupt, None, TWO_SECOND_WINDOWS)
    with pytest.raises(DecodeError) as caught:
        list(stream)
    assert caught.value.reason == "corrupt" and stream.stage == "decode"
    broken = tmp_path / "v.json"
    broken.write_text('{"start": [0.0], "end": [1.0]')
    stream = VideoStream(video, broken, TWO_SECOND_WINDOWS)
    with pytest.raises(CaptionError):
        list(stream)
    assert stream.stage == "captions"


def header(needs_asr: bool = False) -> VideoHeader:
    from mcn.extract.decode import VideoInfo

    info = VideoInfo("v.mp4", 3.0, 25.0, 96, 64, 75, True, "h264", "aac", "mov,mp4")
    captions = [] if needs_asr else [(0.0, 1.0, "the eggs")]
    return VideoHeader(
        info, np.zeros((40, 300), np.float16), captions, "none" if needs_asr else "vtt", needs_asr
    )


def feats(first: float, num_rows: int) -> np.ndarray:
    return np.full((num_rows, FEATURE_DIM), first, np.float16)


def test_assembly_puts_parts_back_in_window_order_whatever_order_they_arrive():
    assembly = VideoAssembly()
    assembly.add_header(header())
    assert [assembly.add_window(), assembly.add_window()] == [0, 1]
    assembly.set_features("3d", 1, feats(4, 1))
    assembly.set_features("2d", 1, feats(2, 1))
    assert assembly.window_done(1) and not assembly.window_done(0)
    assembly.set_features("2d", 0, feats(1, 2))
    assembly.set_features("3d", 0, feats(3, 3))
    assert not assembly.complete  # the stream may still send windows
    assembly.stream_done = True
    assert assembly.complete
    vectors = KeyedVectors(vector_size=2)
    vectors.add_vectors(["eggs", "the"], np.eye(2, dtype=np.float32))
    result = assembly.features(CaptionTokenizer(vectors))
    np.testing.assert_array_equal(result.feat_2d[:, 0], [1, 1, 2])
    np.testing.assert_array_equal(result.feat_3d[:, 0], [3, 3, 3, 4])
    assert result.caption_source == "vtt" and result.captions == [(0.0, 1.0, "the eggs")]
    assert [ids.tolist() for ids in result.caption_token_ids] == [[1, 0]]


def test_assembly_waits_for_speech_recognition_and_marks_its_captions():
    assembly = VideoAssembly()
    assembly.add_header(header(needs_asr=True))
    assembly.stream_done = True
    assert not assembly.complete  # no windows, but the captions are not in yet
    assembly.set_captions([(0.5, 1.5, "hello")])
    result = assembly.features()
    assert result.caption_source == "asr" and result.captions == [(0.5, 1.5, "hello")]
    assert result.feat_2d.shape == (0, FEATURE_DIM) and result.caption_token_ids is None


def test_a_video_in_a_bucket_streams_as_its_local_copy_and_leaves_no_file(
    video, tmp_path, s3_bucket, monkeypatch
):
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    captions = tmp_path / "v.srt"
    captions.write_text("1\n00:00:00,000 --> 00:00:01,000\nstir the pot\n")
    storage.copy(video, f"{s3_bucket}/media/v.mp4")
    storage.copy(captions, f"{s3_bucket}/media/v.srt")
    local_header, *local_windows = VideoStream(video, captions, TWO_SECOND_WINDOWS)
    stream = VideoStream(f"{s3_bucket}/media/v.mp4", f"{s3_bucket}/media/v.srt", TWO_SECOND_WINDOWS)
    parts = iter(stream)
    header = next(parts)
    assert len(list(spool.glob("mcn-fetch-*"))) == 1, "the fetched copy, while the stream runs"
    windows = list(parts)
    assert list(spool.glob("mcn-fetch-*")) == []
    assert header.info.path == f"{s3_bucket}/media/v.mp4"
    assert header.info == dataclasses.replace(local_header.info, path=header.info.path)
    assert header.captions == local_header.captions and header.caption_source == "srt"
    np.testing.assert_array_equal(header.logmel, local_header.logmel)
    assert len(windows) == len(local_windows)
    for remote, local in zip(windows, local_windows, strict=True):
        np.testing.assert_array_equal(remote.frames_2d_THWC, local.frames_2d_THWC)
        np.testing.assert_array_equal(remote.frames_3d_THWC, local.frames_3d_THWC)
    abandoned = iter(VideoStream(f"{s3_bucket}/media/v.mp4", None, TWO_SECOND_WINDOWS))
    next(abandoned)  # the header only
    del abandoned
    gc.collect()
    assert list(spool.glob("mcn-fetch-*")) == [], "an abandoned stream removes its copy too"


def test_a_missing_video_object_fails_at_the_fetch(s3_bucket):
    stream = VideoStream(f"{s3_bucket}/media/gone.mp4", None, TWO_SECOND_WINDOWS)
    with pytest.raises(storage.FetchError) as caught:
        list(stream)
    assert caught.value.reason == "not_found" and stream.stage == "fetch"
