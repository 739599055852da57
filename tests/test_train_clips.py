"""Clip inputs on hand-checked cases: video pooling rows, audio frames (clamp, padding), text, caption merging."""

import numpy as np
import pytest
from train_store import make_video

from mcn.store import WordTable
from mcn.train.clips import (
    ClipOptions,
    audio_frame,
    audio_window,
    merge_captions,
    pool_video,
    sample_video_clips,
    text_tokens,
    text_vectors,
)


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_pool_video_uses_inclusive_rows_at_each_rate():
    feat_2d = np.zeros((10, 2), np.float32)
    feat_2d[:, 0] = np.arange(10)  # row t holds t in the first column
    feat_2d[:, 1] = 1.0
    feat_3d = np.zeros((15, 3), np.float32)
    feat_3d[:, 2] = np.arange(15)
    feat_3d[:, 0] = 2.0
    # 2D rows int(2.7)=2 .. int(4.2)=4 -> max row value 4; 3D rows int(4.05)=4 .. int(6.3)=6 -> 6
    out = pool_video(feat_2d, feat_3d, 2.7, 4.2)
    assert out.shape == (5,) and out.dtype == np.float32
    np.testing.assert_allclose(out[:2], unit([4, 1]), rtol=1e-6)
    np.testing.assert_allclose(out[2:], unit([2, 0, 6]), rtol=1e-6)


def test_pool_video_empty_slice_gives_zeros_per_modality():
    feat_2d = np.ones((3, 4), np.float16)
    feat_3d = np.ones((30, 4), np.float16)
    out = pool_video(feat_2d, feat_3d, 5.0, 6.0)  # 2D rows 5..6 do not exist; 3D rows 7..9 do
    np.testing.assert_array_equal(out[:4], 0)
    np.testing.assert_allclose(out[4:], 0.5, rtol=1e-6)


def test_audio_frame_follows_librosa_time_to_frames():
    # floor((int(16000 t) - 200) / 160)
    assert audio_frame(0.0) == -2
    assert audio_frame(0.005) == -1
    assert audio_frame(0.0125) == 0
    assert audio_frame(1.0) == 98
    assert audio_frame(2.5) == 248


def test_audio_window_clamps_start_and_pads():
    logmel = np.arange(2 * 300, dtype=np.float16).reshape(2, 300)
    window, num_frames = audio_window(logmel, 0.0, 0.05, max_frames=10)
    assert window.shape == (2, 10) and window.dtype == np.float32
    assert num_frames == 3  # frames 0, 1, 2 (f(0.05) = 3, end exclusive)
    np.testing.assert_array_equal(window[:, :3], logmel[:, :3])
    np.testing.assert_array_equal(window[:, 3:], 0)


def test_audio_window_reference_quirk_slices_from_the_end():
    logmel = np.arange(2 * 300, dtype=np.float16).reshape(2, 300)
    window, num_frames = audio_window(logmel, 0.0, 0.05, max_frames=10, clamp_start=False)
    assert num_frames == 0  # logmel[:, -2:3] is empty
    np.testing.assert_array_equal(window, 0)


def test_audio_window_truncates_long_clips():
    logmel = np.ones((40, 2000), np.float16)
    window, num_frames = audio_window(logmel, 1.0, 15.0, max_frames=1000)
    assert window.shape == (40, 1000) and num_frames == 1000


def test_text_tokens_and_vectors():
    words = WordTable(
        np.array([2, 5, 9], np.int32), ["a", "b", "c"], np.arange(6, dtype=np.float32).reshape(3, 2)
    )
    ids = list(range(30))
    assert text_tokens(ids, 20).tolist() == list(range(20))
    vectors = text_vectors([9, 2, 9], words, max_words=4)
    np.testing.assert_array_equal(vectors, [[4, 5], [0, 1], [4, 5], [0, 0]])
    np.testing.assert_array_equal(text_vectors([], words, max_words=3), np.zeros((3, 2)))


@pytest.mark.parametrize(
    ("starts", "ends", "index", "expected"),
    [
        # long enough already
        ([0, 20], [15, 30], 0, (0.0, 15.0, [0])),
        # middle: next gives span 7, previous 8 -> next; then previous 12 vs next 25 -> previous (appended last)
        ([0, 5, 9, 20], [4, 8, 12, 30], 1, (0.0, 12.0, [1, 2, 0])),
        # tie (both merges give span 6) -> previous; then only the next one is left
        ([0, 4, 8], [2, 6, 10], 1, (0.0, 10.0, [1, 0, 2])),
        # first caption: only the next neighbour
        ([0, 3, 6, 9], [2, 5, 8, 11], 0, (0.0, 11.0, [0, 1, 2, 3])),
        # last caption: only the previous one, words of preceding captions appended after its own
        ([0, 3, 6], [2, 5, 8], 2, (0.0, 8.0, [2, 1, 0])),
        # a lone caption cannot grow
        ([1], [2], 0, (1.0, 2.0, [0])),
    ],
)
def test_merge_captions(starts, ends, index, expected):
    assert merge_captions(np.array(starts, float), np.array(ends, float), index, 10.0) == expected


def test_sample_video_clips_builds_each_clip_from_its_merged_captions():
    rng = np.random.default_rng(3)
    record = make_video("x", seconds=12, num_captions=4, rng=rng)
    words = WordTable(
        np.arange(12, dtype=np.int32),
        [str(i) for i in range(12)],
        rng.standard_normal((12, 6)).astype(np.float32),
    )
    options = ClipOptions(num_clips=5, min_time=4.0, max_frames=300, max_words=7)
    item = sample_video_clips(record, words, options, np.random.default_rng(1))
    assert (
        item["video"].shape == (5, 4096)
        and item["audio"].shape == (5, 40, 300)
        and item["text"].shape == (5, 7, 6)
    )
    drawn = np.random.default_rng(1).choice(4, size=5, replace=True)
    for clip, index in enumerate(drawn):
        start, end, merged = merge_captions(
            record.caption_start.astype(float), record.caption_end.astype(float), int(index), 4.0
        )
        assert (item["start"][clip], item["end"][clip]) == (start, end)
        np.testing.assert_array_equal(
            item["video"][clip], pool_video(record.feat_2d, record.feat_3d, start, end)
        )
        audio, num_frames = audio_window(record.logmel, start, end, 300)
        assert item["nframes"][clip] == num_frames
        np.testing.assert_array_equal(item["audio"][clip], audio)
        ids = np.concatenate([record.caption_token_ids[i] for i in merged])
        np.testing.assert_array_equal(item["text"][clip], text_vectors(ids, words, 7))
