"""mcn.pipeline.writer: resume state, atomic shards, failure parts folded at the end, words and the manifest."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from writer_store import IDENTITY, failure, record, word_vectors, write_store

from mcn import store
from mcn.configs import apply_overrides
from mcn.errors import MCNError
from mcn.pipeline import config as pipeline_config
from mcn.pipeline.config import ShardConfig
from mcn.pipeline.writer import (
    EXTRACTION,
    FAILURE_PARTS,
    SUMMARY,
    StoreWriter,
    extraction_identity,
    latest_failures,
    record_nbytes,
)


def open_writer(root, identity=IDENTITY, **limits) -> StoreWriter:
    writer = StoreWriter(root, identity, ShardConfig(**limits))
    writer.open()
    return writer


def test_a_finished_store_holds_every_video_once_with_its_words(tmp_path):
    root = write_store(tmp_path / "store", ["a", "b", "c"], failed={"x": "corrupt"})
    reader = store.StoreReader(root)
    assert [s["video_ids"] for s in reader.manifest["shards"]] == [["a", "b"], ["c"]]
    assert reader.manifest["counts"] == {**reader.manifest["counts"], "videos": 3, "failures": 1, "words": 5}
    assert [f["video_id"] for f in reader.failures()] == ["x"]
    assert reader.words.words == ["cut", "the", "onion", "stir", "pot"]
    np.testing.assert_array_equal(reader.words.vectors_UW, word_vectors().vectors)
    np.testing.assert_array_equal(reader.read("b").feat_2d, record("b").feat_2d)
    assert json.loads((root / SUMMARY).read_text()) == {"extracted": 3}
    assert not list((root / FAILURE_PARTS).glob("*.parquet")), (
        "failure parts are folded into failures.parquet"
    )


def test_shards_close_at_the_byte_bound_with_whole_videos(tmp_path):
    one = record_nbytes(record("a"))
    writer = open_writer(tmp_path, max_videos=100, max_bytes=int(2.5 * one))
    for video_id in "abcde":
        writer.add(record(video_id))
    writer.flush()
    writer.wait()
    writer.close()
    assert [store.shard_video_ids(p) for p in store.list_shards(tmp_path)] == [["a", "b"], ["c", "d"], ["e"]]


def test_resume_knows_what_is_done_and_numbers_new_shards_after_the_old(tmp_path):
    writer = open_writer(tmp_path, max_videos=1)
    writer.add(record("a"))
    writer.record_failures([failure("x")])
    writer.wait()
    writer.close()  # a crash: no finish, no manifest
    (tmp_path / store.SHARD_DIR / ".shard-000007.parquet.tmp-123").write_bytes(b"half")
    writer = open_writer(tmp_path, max_videos=1)
    assert writer.done_ids == {"a"} and set(writer.failures) == {"x"}
    assert not list((tmp_path / store.SHARD_DIR).glob(".*")), "stray temporary files are removed"
    writer.add(record("b"))
    writer.finish(None, {}, {})
    writer.close()
    assert [p.name for p in store.list_shards(tmp_path)] == ["shard-000000.parquet", "shard-000001.parquet"]


def test_the_latest_failure_wins_and_a_later_success_clears_it(tmp_path):
    writer = open_writer(tmp_path)
    writer.record_failures([failure("x", "corrupt"), failure("y", "corrupt")])
    writer.record_failures([failure("x", "timeout")])
    assert latest_failures(tmp_path)["x"]["reason"] == "timeout"
    writer.add(record("y"))
    writer.finish(None, {}, {})
    writer.close()
    assert {f["video_id"]: f["reason"] for f in store.read_failures(tmp_path)} == {"x": "timeout"}


def test_another_extraction_identity_is_refused(tmp_path):
    open_writer(tmp_path).close()
    assert json.loads((tmp_path / EXTRACTION).read_text()) == IDENTITY
    with pytest.raises(MCNError, match="model_2d"):
        open_writer(tmp_path, identity={**IDENTITY, "model_2d": "resnet152"})


def test_a_second_writer_is_locked_out(tmp_path):
    first = open_writer(tmp_path)
    try:
        with pytest.raises(MCNError, match="another extraction job"):
            open_writer(tmp_path)
    finally:
        first.close()


def test_a_file_as_the_store_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MCNError, match="is a file"):
        open_writer(tmp_path / "file")


def test_identity_ignores_how_decoding_runs_but_not_what_it_decodes(tmp_path):
    base = pipeline_config.tiny_cpu()
    identity = extraction_identity(base)
    assert identity == extraction_identity(apply_overrides(base, {"extract.decode.timeout_s": "1"}))
    assert (
        identity["decode"]
        != extraction_identity(apply_overrides(base, {"extract.decode.rate_2d": "2"}))["decode"]
    )
    assert identity["weights_2d"] == "random-init" and identity["word_vectors"] is None
    (tmp_path / "w.pth").write_bytes(b"weights")
    with_weights = apply_overrides(base, {"extract.models.weights_3d": str(tmp_path / "w.pth")})
    assert len(extraction_identity(with_weights)["weights_3d"]) == 64


def test_shards_describe_themselves(tmp_path):
    root = write_store(tmp_path / "store", ["a"])
    metadata = pq.read_schema(store.list_shards(root)[0]).metadata
    assert json.loads(metadata[b"video_ids"]) == ["a"]
    assert json.loads(metadata[b"extraction"]) == IDENTITY
    assert metadata[b"mcn_store_format"] == str(store.STORE_FORMAT_VERSION).encode()
