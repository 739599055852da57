"""Evaluation inputs and embeddings: text lookup with a word2vec fallback, per-second inputs, batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from eval_store import WORD_DIM, WORDS, make_record, tiny_model

from mcn.errors import MCNError
from mcn.eval import embed
from mcn.extract.text import load_word_vectors
from mcn.store import WordTable
from mcn.train.clips import audio_window, pool_video


def word_table() -> WordTable:
    vectors = np.arange(len(WORDS) * WORD_DIM, dtype=np.float32).reshape(len(WORDS), WORD_DIM)
    return WordTable(np.arange(len(WORDS), dtype=np.int32), list(WORDS), vectors)


def test_text_vectorizer_uses_store_words_then_the_word2vec_file(tmp_path):
    table = word_table()
    path = tmp_path / "vectors.txt"
    path.write_text(
        f"2 {WORD_DIM}\nomelette {' '.join(['1.5'] * WORD_DIM)}\neggs {' '.join(['-9'] * WORD_DIM)}\n"
    )
    vectorizer = embed.TextVectorizer(table, load_word_vectors(path))
    out = vectorizer("Crack the eggs, omelette! unknownword", max_words=4)
    assert out.shape == (4, WORD_DIM)
    np.testing.assert_array_equal(out[0], table.vectors_UW[WORDS.index("the")])  # "Crack": case kept, unknown
    np.testing.assert_array_equal(
        out[1], table.vectors_UW[WORDS.index("eggs")]
    )  # the store wins over the file
    np.testing.assert_array_equal(out[2], np.full(WORD_DIM, 1.5, np.float32))  # from the file
    np.testing.assert_array_equal(out[3], 0.0)
    num_tokens, unknown = vectorizer.unknown_words(["Crack the eggs, omelette! unknownword", "the Crack"])
    assert num_tokens == 7 and unknown == {"Crack": 2, "unknownword": 1}
    only_store = embed.TextVectorizer(table)
    assert only_store("omelette", 3).sum() == 0.0
    assert only_store.unknown_words(["omelette eggs"]) == (2, {"omelette": 1})
    assert only_store(" ".join(["eggs"] * 40), 30)[-1].any()  # up to max_words words are kept


def test_text_vectorizer_errors(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("1 3\nx 1 2 3\n")
    with pytest.raises(MCNError, match="3-d vectors"):
        embed.TextVectorizer(word_table(), load_word_vectors(path))
    empty = WordTable(np.zeros(0, np.int32), [], np.zeros((0, 0), np.float32))
    with pytest.raises(MCNError, match="--word-vectors"):
        embed.TextVectorizer(empty)
    assert embed.TextVectorizer(empty, load_word_vectors(path)).dim == 3


def test_clip_inputs_follow_the_training_recipe():
    record = make_record("v", 12, np.random.default_rng(0))
    inputs = embed.clip_inputs(record, 2.0, 7.5, 256)
    np.testing.assert_array_equal(inputs["video"], pool_video(record.feat_2d, record.feat_3d, 2.0, 7.5))
    audio, nframes = audio_window(record.logmel, 2.0, 7.5, 256)
    np.testing.assert_array_equal(inputs["audio"], audio)
    assert inputs["nframes"] == nframes == 256  # 5.5 s = 550 frames, truncated
    silent = make_record("s", 12, np.random.default_rng(1), audio=False)
    assert embed.clip_inputs(silent, 0, 5, 64)["nframes"] == 0


def test_logmel_padding_zero_db_or_the_clips_floor():
    record = make_record("v", 12, np.random.default_rng(4))
    zero = embed.clip_inputs(record, 2.0, 3.0, 256)  # 1 s = 100 frames, 156 padded
    floor = embed.clip_inputs(record, 2.0, 3.0, 256, padding="floor")
    frames = zero["nframes"]
    assert frames == 100 and zero["nframes"] == floor["nframes"]
    np.testing.assert_array_equal(zero["audio"][:, :frames], floor["audio"][:, :frames])
    np.testing.assert_array_equal(zero["audio"][:, frames:], 0.0)  # 0 dB: the reference's padding
    lowest = zero["audio"][:, :frames].min()
    np.testing.assert_array_equal(floor["audio"][:, frames:], lowest)
    full = embed.clip_inputs(record, 0.0, 5.0, 256, padding="floor")  # nothing padded
    np.testing.assert_array_equal(full["audio"], embed.clip_inputs(record, 0.0, 5.0, 256)["audio"])
    seconds = list(embed.per_second_inputs(record, max_audio_frames=1024, padding="floor"))
    assert seconds[0]["nframes"] == 798  # the window [0, 8] s
    np.testing.assert_array_equal(seconds[0]["audio"][:, 798:], seconds[0]["audio"][:, :798].min())
    with pytest.raises(MCNError, match="padding"):
        embed.clip_inputs(record, 2.0, 3.0, 256, padding="loud")


def test_per_second_windows_match_the_reference():
    # the reference: t < 4 -> [0, 8]; t > T - 4 -> [T - 8, T]; else [t - 4, t + 4]
    seconds = 20
    for t, (start, end) in enumerate(embed.per_second_windows(seconds)):
        expected = (0, 8) if t < 4 else (seconds - 8, seconds) if t > seconds - 4 else (t - 4, t + 4)
        assert (start, end) == expected
    assert embed.per_second_windows(3)[0] == (0.0, 8.0)


def test_per_second_video_is_adaptive_max_pooling():
    record = make_record("v", 7, np.random.default_rng(2))
    video = embed.per_second_video(record, 7)
    assert video.shape == (7, 4096)
    feat_3d = record.feat_3d.astype(np.float32)  # 10 rows pooled to 7
    for t in range(7):
        rows = feat_3d[math.floor(t * 10 / 7) : math.ceil((t + 1) * 10 / 7)].max(axis=0)
        np.testing.assert_allclose(video[t, 2048:], rows / np.linalg.norm(rows), rtol=1e-5, atol=1e-6)
        row_2d = record.feat_2d[t].astype(np.float32)
        np.testing.assert_allclose(video[t, :2048], row_2d / np.linalg.norm(row_2d), rtol=1e-5, atol=1e-6)
    assert embed.num_seconds(record) == 7
    inputs = list(embed.per_second_inputs(record, max_audio_frames=128))
    assert len(inputs) == 7 and inputs[0]["audio"].shape == (40, 128)


def test_embed_stream_batches_do_not_change_results():
    model = tiny_model()
    rng = np.random.default_rng(3)
    record = make_record("v", 12, rng)
    vectorizer = embed.TextVectorizer(word_table())
    items = [
        {**embed.clip_inputs(record, s, s + 3, 200), "text": vectorizer(text)}
        for s, text in [(0, "crack the eggs"), (2, "whisk"), (5, "pour the batter"), (8, "serve")] * 3
    ]
    one = embed.embed_stream(model, items, batch_size=1)
    five = embed.embed_stream(model, iter(items), batch_size=5)
    for name in ("video", "audio", "text"):
        assert one[name].shape == (12, model.config.embed_dim)
        np.testing.assert_allclose(one[name], five[name], rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        direct = model.encode_text(torch.from_numpy(np.stack([item["text"] for item in items[:2]])))
    np.testing.assert_allclose(one["text"][:2], direct.numpy(), rtol=1e-5, atol=1e-6)
    assert not model.training
    scores = embed.step_scores(one["video"], one["text"][:3])
    np.testing.assert_allclose(scores, one["video"] @ one["text"][:3].T, rtol=1e-5)
