"""`mcn search`: the moment index is built once per checkpoint, saved atomically and reused."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
from eval_store import make_record, make_store, save_tiny_checkpoint, tiny_model

from mcn import cli, storage
from mcn.errors import MCNError
from mcn.eval import config, embed, search
from mcn.store import StoreReader, copy_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    make_store(root / "store", num_videos=4, seconds=23, silent=("vid03",))
    return root


def test_moment_spans_cover_the_video():
    video = make_record("v", 23, np.random.default_rng(0))
    spans = search.moment_spans(video, config.WindowConfig())
    windows = [(s, e) for s, e, kind in spans if kind == "window"]
    assert windows == [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0), (15.0, 23.0)]
    assert [kind for *_, kind in spans].count("caption") == 2
    short = make_record("s", 4, np.random.default_rng(0))
    assert search.moment_spans(short, config.WindowConfig(captions=False)) == [(0.0, 4.0, "window")]


def test_index_is_built_once_and_reused(store):
    reader = StoreReader(store / "store")
    model = tiny_model(seed=0)
    settings = config.search_quick_cpu()
    index, path, built = search.index_for(model, reader, settings)
    assert built and path.exists() and path.parent == reader.root / "index"
    assert path.with_suffix(".config.json").exists()  # the config that built it
    assert len(index.video_ids) == 4 * (4 + 2)  # four windows and two captions per video
    assert not list(path.parent.glob(".*tmp*"))  # no temporary file left behind
    again, path_again, built_again = search.index_for(model, reader, settings)
    assert not built_again and path_again == path
    np.testing.assert_array_equal(again.embeddings_MD, index.embeddings_MD)
    np.testing.assert_array_equal(again.video_ids, index.video_ids)
    other, other_path, other_built = search.index_for(tiny_model(seed=1), reader, settings)
    assert other_built and other_path != path
    floor = replace(settings, audio=config.AudioConfig(logmel_padding="floor"))
    assert search.index_for(model, reader, floor)[1] != path  # the padding is part of the fingerprint

    # the index row of a window equals a direct embedding of that clip (video + audio; video only when silent)
    row = int(np.flatnonzero((index.video_ids == "vid01") & (index.starts == 5.0))[0])
    record = reader.read("vid01")
    inputs = embed.clip_inputs(record, 5.0, 15.0, 1000)
    with torch.no_grad():
        v = model.encode_video(torch.from_numpy(inputs["video"])[None])[0]
        a = model.encode_audio(torch.from_numpy(inputs["audio"])[None], torch.tensor([inputs["nframes"]]))[0]
    np.testing.assert_allclose(index.embeddings_MD[row], (v + a).numpy(), rtol=1e-4, atol=1e-5)
    silent = int(np.flatnonzero((index.video_ids == "vid03") & (index.starts == 0.0))[0])
    inputs = embed.clip_inputs(reader.read("vid03"), 0.0, 10.0, 1000)
    with torch.no_grad():
        v = model.encode_video(torch.from_numpy(inputs["video"])[None])[0]
    np.testing.assert_allclose(index.embeddings_MD[silent], v.numpy(), rtol=1e-4, atol=1e-5)

    vectorizer = embed.TextVectorizer(reader.words)
    scores = search.query_scores(model, index, vectorizer, "crack the eggs")
    assert scores.shape == (len(index.video_ids),)
    with pytest.raises(MCNError, match="none of the words"):
        search.query_scores(model, index, vectorizer, "zzz qqq")


def test_the_index_of_a_bucket_store_is_kept_in_the_bucket(store, s3_bucket):
    url = f"{s3_bucket}/store"
    copy_store(store / "store", url)
    reader = StoreReader(url)
    model = tiny_model(seed=4)
    settings = config.search_quick_cpu()
    index, path, built = search.index_for(model, reader, settings)
    assert (
        built
        and path == f"{url}/index/{search.fingerprint(model, reader, settings.windows, settings.audio)}.npz"
    )
    assert storage.is_file(path) and storage.is_file(str(path).removesuffix(".npz") + ".config.json")
    again, path_again, built_again = search.index_for(model, StoreReader(url), settings)
    assert not built_again and path_again == path
    for name in ("video_ids", "starts", "ends", "kinds", "embeddings_MD"):
        np.testing.assert_array_equal(getattr(again, name), getattr(index, name))
    local = search.build_index(
        model, StoreReader(store / "store"), settings.windows, settings.audio, settings.runtime.batch_size
    )
    np.testing.assert_array_equal(index.embeddings_MD, local.embeddings_MD)


def test_search_cli(store, capsys, caplog):
    checkpoint = save_tiny_checkpoint(store / "run" / "step-000001", seed=2)
    argv = [
        "search",
        str(store / "store"),
        "--checkpoint",
        str(checkpoint),
        "whisk",
        "the",
        "batter",
        "-k",
        "3",
        "--preset",
        "quick_cpu",
    ]
    with caplog.at_level(logging.INFO):
        assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert "built index" in caplog.text and "videos for 'whisk the batter'" in first
    moments = first.split("moments:")[1].strip().splitlines()
    assert len(moments) == 3 and all("vid0" in line and " s  score " in line for line in moments)
    with caplog.at_level(logging.INFO):
        assert cli.main(argv) == 0
    assert "using index" in caplog.text
    # no word2vec file: the word would vanish from the query
    assert cli.main(["search", str(store / "store"), "--checkpoint", str(checkpoint), "omelette"]) == 2
    assert "'omelette'" in capsys.readouterr().err
