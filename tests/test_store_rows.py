"""One video as one row, in formats 1 and 2: schemas, Parquet options, records to Arrow tables and back."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from mcn import store_rows
from mcn.store_rows import VideoRecord


def record(num_captions: int = 2, with_audio: bool = True) -> VideoRecord:
    rng = np.random.default_rng(1)
    return VideoRecord(
        video_id="v",
        duration=2.0,
        feat_2d=rng.standard_normal((2, 2048)).astype(np.float16),
        feat_3d=rng.standard_normal((3, 2048)).astype(np.float16),
        logmel=rng.standard_normal((40, 200)).astype(np.float16) if with_audio else None,
        caption_start=np.arange(num_captions, dtype=np.float32),
        caption_end=np.arange(num_captions, dtype=np.float32) + 0.5,
        caption_text=[f"c{i}" for i in range(num_captions)],
        caption_token_ids=[np.arange(i, dtype=np.int32) for i in range(num_captions)],
    )


def test_parquet_options_name_the_columns_parquet_writes(tmp_path):
    table = store_rows.record_to_table(record(), 2, store_rows.SCHEMA_V2)
    pq.write_table(table, tmp_path / "x.parquet", **store_rows.PARQUET_OPTIONS[2])
    metadata = pq.ParquetFile(tmp_path / "x.parquet").metadata
    paths = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    assert sorted(paths) == sorted(store_rows.PARQUET_OPTIONS_V2["compression"]), "every leaf has its codec"
    chunks = {
        c.path_in_schema: c for c in (metadata.row_group(0).column(i) for i in range(metadata.num_columns))
    }
    assert {chunks[leaf].compression for leaf in store_rows.FEATURE_LEAVES.values()} == {"UNCOMPRESSED"}
    assert chunks["captions.list.element.text"].compression == "ZSTD"
    assert not chunks[store_rows.FEATURE_LEAVES["feat_2d"]].is_stats_set and chunks["duration"].is_stats_set


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("num_captions, with_audio", [(2, True), (0, False)])
def test_a_record_survives_its_table(version, num_captions, with_audio):
    original = record(num_captions, with_audio)
    table = store_rows.record_to_table(original, version, store_rows.SCHEMAS[version])
    back = store_rows.record_from_table(table, version)
    if version == 2:  # the features of format 2 are read apart (mcn.parquet_pages), or through Arrow
        for name in store_rows.ARRAY_COLUMNS:
            values = store_rows.feature_from_arrow(table.column(name))
            setattr(back, name, store_rows.frames_from_values(values, name))
    np.testing.assert_array_equal(back.feat_3d, original.feat_3d)
    assert back.logmel.shape == (40, 200 if with_audio else 0)
    if with_audio:
        np.testing.assert_array_equal(back.logmel, original.logmel)
    assert back.caption_text == original.caption_text and back.num_captions == num_captions
    assert [ids.tolist() for ids in back.caption_token_ids] == [list(range(i)) for i in range(num_captions)]


def test_logmel_is_stored_one_frame_per_row():
    original = record()
    table = store_rows.record_to_table(original, 2, store_rows.SCHEMA_V2)
    frames = table.column("logmel").to_pylist()[0]
    assert len(frames) == 200 and len(frames[0]) == 40
    np.testing.assert_array_equal(np.array(frames[7], np.float16), original.logmel[:, 7])


def test_projections():
    features, columns = store_rows.columns_for(["logmel", "captions", "duration"], 2)
    assert features == ["logmel"] and columns == ["video_id", "captions", "duration"]
    features, columns = store_rows.columns_for(["logmel", "captions"], 1)
    assert features == [] and columns == ["video_id", *store_rows.CAPTION_COLUMNS, "logmel", "logmel_shape"]
    with pytest.raises(ValueError, match="unknown store field"):
        store_rows.columns_for(["pixels"], 2)


def test_captions_must_agree_in_length():
    bad = record()
    bad.caption_text = ["only one"]
    for version in (1, 2):
        with pytest.raises(ValueError, match="caption columns disagree"):
            store_rows.record_to_table(bad, version, store_rows.SCHEMAS[version])
