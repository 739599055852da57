"""Caption readers (VTT rolling lines, SRT, CSV, JSON, broken files), tokenizer, word2vec files, token ids."""

import json
import os
import random
import subprocess
import sys
import threading

import numpy as np
import pytest
from gensim.models import KeyedVectors

from mcn import store
from mcn.errors import MCNError
from mcn.extract import text
from mcn.extract.extractors import CaptionTokenizer
from mcn.extract.text import CaptionError, load_word_vectors, read_captions, token_ids, tokenize

# YouTube auto-captions: each cue repeats the previous line, then adds words with inline timing tags; 10 ms
# cues show the finished line alone. Lines holding a single space are part of the cue text.
YOUTUBE_VTT = """WEBVTT
Kind: captions
Language: en

00:00:00.030 --> 00:00:02.690 align:start position:0%
\x20
today<00:00:00.330><c> we</c><00:00:00.930><c> make</c><00:00:01.500><c> bread</c>

00:00:02.690 --> 00:00:02.700 align:start position:0%
today we make bread
\x20

00:00:02.700 --> 00:00:05.690 align:start position:0%
today we make bread
first<00:00:03.000><c> mix</c><00:00:03.300><c> the</c><c.colorE5E5E5> flour</c>

00:00:05.690 --> 00:00:05.700 align:start position:0%
first mix the flour
\x20

00:00:05.700 --> 00:00:08.000 align:start position:0%
first mix the flour
don't<00:00:06.000><c> add</c><00:00:06.500><c> salt</c> &amp; wait

"""


@pytest.fixture
def write(tmp_path):
    def write_file(name, content):
        path = tmp_path / name
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        return path

    return write_file


def test_tokenize_keeps_case_and_apostrophes():
    assert tokenize("Don't over-mix the DOUGH, ok? 2 cups_x") == [
        "Don't",
        "over",
        "mix",
        "the",
        "DOUGH",
        "ok",
        "2",
        "cups_x",
    ]
    assert tokenize("  ...  ") == []


def test_youtube_vtt_rolling_lines_are_read_once(write):
    captions = read_captions(write("a.vtt", YOUTUBE_VTT))
    assert [text for _, _, text in captions] == [
        "today we make bread",
        "first mix the flour",
        "don't add salt & wait",
    ]
    # A line lasts from the cue that introduces it to the last cue that still shows it.
    assert captions[0][:2] == pytest.approx((0.03, 5.69))
    assert captions[1][:2] == pytest.approx((2.7, 8.0))
    assert captions[2][:2] == pytest.approx((5.7, 8.0))


def test_plain_vtt_with_identifiers_notes_and_hours(write):
    text = "\ufeffWEBVTT\n\nNOTE made by hand\n\ncue-1\n01:00:01.500 --> 01:00:03.000\n<v Chef>Knead</v> the\ndough\n\n02:00.000 --> 02:01.250\nRest it\n"
    assert read_captions(write("b.vtt", text)) == [
        (3601.5, 3603.0, "Knead the dough"),
        (120.0, 121.25, "Rest it"),
    ]


def test_srt(write):
    text = "1\n00:00:01,000 --> 00:00:02,500\n<i>Preheat</i> the oven\n\n2\r\n00:00:03,000 --> 00:00:04,000\r\nto 200 degrees\r\n\r\n"
    assert read_captions(write("c.srt", text)) == [
        (1.0, 2.5, "Preheat the oven"),
        (3.0, 4.0, "to 200 degrees"),
    ]


def test_howto100m_csv_and_json_forms(write):
    csv_text = 'start,end,text\n0.5,3.2,"cut the onions, finely"\n3.2,6.0,now fry them\n'
    expected = [(0.5, 3.2, "cut the onions, finely"), (3.2, 6.0, "now fry them")]
    assert read_captions(write("v.csv", csv_text)) == expected
    columns = {"start": [0.5, 3.2], "end": [3.2, 6.0], "text": ["cut the onions, finely", "now fry them"]}
    assert read_captions(write("v.json", json.dumps(columns))) == expected
    rows = [{"start": s, "end": e, "text": t} for s, e, t in expected]
    assert read_captions(write("w.json", json.dumps(rows))) == expected


@pytest.mark.parametrize(
    ("name", "content", "reason", "message"),
    [
        ("a.vtt", "00:00:01.000 --> 00:00:02.000\nhello\n", "malformed", "WEBVTT header"),
        ("b.vtt", "WEBVTT\n\n00:00:01.000 --> 00:0x:02.000\nhello\n", "malformed", "bad timestamp"),
        ("c.vtt", "WEBVTT\n\njust some text\n", "malformed", "timing line"),
        ("d.srt", "1\n00:00:05,000 --> 00:00:02,000\nbackwards\n", "malformed", "ends before it starts"),
        ("e.srt", b"1\n00:00:01,000 --> 00:00:02,000\n\xff\xfe broken\n", "encoding", "UTF-8"),
        ("f.csv", "begin,finish,words\n1,2,hi\n", "malformed", "lacks the column"),
        ("g.csv", "start,end,text\none,2,hi\n", "malformed", "must be numbers"),
        ("h.json", '{"start": [1, 2], "end": [2', "malformed", "invalid JSON"),
        ("i.json", '{"start": [1, 2], "end": [2], "text": ["a", "b"]}', "malformed", "lengths differ"),
        ("j.json", '{"vid1": {"start": [1], "end": [2], "text": ["a"]}}', "malformed", "whole-dataset"),
        ("k.txt", "hello", "unsupported_format", ".vtt"),
    ],
)
def test_broken_caption_files_raise_caption_error(write, name, content, reason, message):
    with pytest.raises(CaptionError, match=message) as caught:
        read_captions(write(name, content))
    assert caught.value.reason == reason and isinstance(caught.value, MCNError)


def test_missing_caption_file(tmp_path):
    with pytest.raises(CaptionError) as caught:
        read_captions(tmp_path / "nope.srt")
    assert caught.value.reason == "not_found"


# One file per format for each kind of bad time; VTT and SRT timestamps cannot spell NaN or a negative time.
BAD_TIMES = {
    "nan": {
        "json": '{"start": [0, NaN], "end": [1, 2], "text": ["a", "b"]}',
        "csv": "start,end,text\n0,1,a\nnan,2,b\n",
    },
    "infinity": {
        "json": '[{"start": 0, "end": Infinity, "text": "a"}]',
        "csv": "start,end,text\n0,inf,a\n",
    },
    "past_float32": {
        "json": '{"start": [1e39], "end": [1e40], "text": ["a"]}',
        "csv": "start,end,text\n0,1e300,a\n",
    },
    "negative": {"json": '[{"start": -1, "end": 2, "text": "a"}]', "csv": "start,end,text\n-0.5,1,a\n"},
    "reversed": {
        "json": '{"start": [0, 5], "end": [1, 2], "text": ["a", "b"]}',
        "csv": "start,end,text\n0,1,a\n5,2,b\n",
        "vtt": "WEBVTT\n\n00:00:05.000 --> 00:00:02.000\nbackwards\n",
        "srt": "1\n00:00:05,000 --> 00:00:02,000\nbackwards\n",
    },
}


@pytest.mark.parametrize(("kind", "fmt"), [(kind, fmt) for kind, forms in BAD_TIMES.items() for fmt in forms])
def test_bad_times_are_refused_the_same_way_in_every_format(write, kind, fmt):
    with pytest.raises(CaptionError) as caught:
        read_captions(write(f"{kind}.{fmt}", BAD_TIMES[kind][fmt]))
    assert caught.value.reason == "malformed" and "\n" not in str(caught.value)
    assert any(word in caught.value.detail for word in ("non-finite", "before 0", "ends before"))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0.0, 0.0),
        (1.0, 0.5),
        (-0.001, 1.0),
        (float("nan"), 1.0),
        (0.0, float("inf")),
        (1e39, 1e39),
        (3.0, 1e38),
    ],
)
def test_extraction_and_the_store_agree_on_valid_times(start, end):
    extraction_ok = text.caption_times_problem([(start, end, "x")]) is None
    stored = np.array([start], np.float64), np.array([end], np.float64)
    with np.errstate(over="ignore"):
        store_ok = not store.invalid_captions(
            stored[0].astype(np.float32), stored[1].astype(np.float32)
        ).any()
    assert extraction_ok == store_ok


def test_wrong_types_in_json_are_caption_errors(write):
    for content in (
        '{"start": [true], "end": [1], "text": ["a"]}',
        '{"start": 5, "end": [1], "text": ["a"]}',
        '{"start": [0], "end": [1], "text": [{"a": 1}]}',
        '{"start": [' + "9" * 5000 + '], "end": [1], "text": ["a"]}',
        "[" * 100_000,
    ):
        with pytest.raises(CaptionError) as caught:
            read_captions(write("t.json", content))
        assert caught.value.reason == "malformed"


def test_random_garbage_only_ever_raises_caption_errors(write):
    rng = random.Random(0)
    atoms = ["WEBVTT", "\n", "\n\n", " --> ", "00:00:01.000", "1:2.3", "NOTE", "<c>", "&amp;", "\r\n", ",", '"',
             "start", "end", "text", "-1", "nan", "1e999", "\x00", "{", "}", "[", "]", ":", "null", "true"]  # fmt: skip
    for index in range(2000):
        fmt = ("vtt", "srt", "csv", "json")[index % 4]
        content = "".join(rng.choice(atoms) for _ in range(rng.randint(0, 30)))
        try:
            captions = read_captions(write(f"g.{fmt}", content))
        except CaptionError as error:
            assert "\n" not in str(error)
            continue
        assert all(0 <= s <= e < float("inf") and isinstance(t, str) for s, e, t in captions)


def test_a_fifo_a_device_and_a_folder_are_refused_without_reading(tmp_path):
    os.mkfifo(tmp_path / "pipe.vtt")  # an open for reading would block until a writer comes
    (tmp_path / "zero.srt").symlink_to("/dev/zero")  # a read would never end
    (tmp_path / "folder.json").mkdir()
    for name in ("pipe.vtt", "zero.srt", "folder.json"):
        with pytest.raises(CaptionError) as caught:
            read_captions(tmp_path / name)
        assert caught.value.reason == "not_a_file"


def test_size_and_read_time_limits(write, monkeypatch):
    monkeypatch.setattr(text, "MAX_CAPTION_BYTES", 100)
    with pytest.raises(CaptionError) as caught:
        read_captions(write("big.srt", "1\n00:00:01,000 --> 00:00:02,000\n" + "word " * 100))
    assert caught.value.reason == "too_large"
    release = threading.Event()
    real_fdopen = os.fdopen

    class StuckFile:  # a file system that stops answering
        def __init__(self, fd):
            self.file = real_fdopen(fd, "rb")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def read(self, size):
            release.wait(30)
            return self.file.read(size)

    monkeypatch.setattr(text, "READ_TIMEOUT_S", 0.2)
    monkeypatch.setattr(text.os, "fdopen", lambda fd, mode: StuckFile(fd))
    try:
        with pytest.raises(CaptionError) as caught:
            read_captions(write("slow.srt", "1\n00:00:01,000 --> 00:00:02,000\nhi\n"))
        assert caught.value.reason == "timeout"
    finally:
        release.set()


def test_caption_urls_are_read_within_the_same_limits(s3_bucket, monkeypatch):
    from mcn import storage

    storage.write_bytes(f"{s3_bucket}/c/v.srt", b"1\n00:00:01,000 --> 00:00:02,000\nhi there\n")
    assert read_captions(f"{s3_bucket}/c/v.srt") == [(1.0, 2.0, "hi there")]
    with pytest.raises(CaptionError) as caught:
        read_captions(f"{s3_bucket}/c/gone.vtt")
    assert caught.value.reason == "not_found"
    monkeypatch.setattr(text, "MAX_CAPTION_BYTES", 10)
    with pytest.raises(CaptionError) as caught:
        read_captions(f"{s3_bucket}/c/v.srt")
    assert caught.value.reason == "too_large"


@pytest.fixture
def vectors():
    words = ["the", "Bread", "flour", "don't", "mix"]
    kv = KeyedVectors(vector_size=4)
    kv.add_vectors(words, np.arange(20, dtype=np.float32).reshape(5, 4) / 7)
    return kv


@pytest.mark.parametrize("name", ["w2v.bin", "w2v.txt", "w2v.bin.gz", "vectors.data"])
def test_word2vec_files_round_trip_and_binary_is_detected(tmp_path, vectors, name):
    binary = ".bin" in name or name.endswith(".data")  # the extensionless one is detected from its header
    path = tmp_path / name
    vectors.save_word2vec_format(str(path), binary=binary)
    loaded = load_word_vectors(path)
    assert loaded.index_to_key == vectors.index_to_key
    np.testing.assert_allclose(loaded.vectors, vectors.vectors, rtol=1e-6)


def test_text_vectors_without_header_and_broken_files(tmp_path, vectors):
    glove = tmp_path / "glove.50d.txt"
    glove.write_text(
        "".join(f"{w} {' '.join(map(str, v))}\n" for w, v in zip(vectors.index_to_key, vectors.vectors))
    )
    assert load_word_vectors(glove).index_to_key == vectors.index_to_key
    truncated = tmp_path / "cut.bin"
    vectors.save_word2vec_format(str(truncated), binary=True)
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(MCNError, match="cannot read word vectors"):
        load_word_vectors(truncated)
    with pytest.raises(MCNError, match="not found"):
        load_word_vectors(tmp_path / "missing.bin")


def test_token_ids_drop_oov_and_keep_order(vectors):
    ids = token_ids(tokenize("Mix the bread, don't mix THE Bread!"), vectors)
    assert ids.dtype == np.int32
    assert [vectors.index_to_key[i] for i in ids] == ["the", "don't", "mix", "Bread"]
    assert token_ids([], vectors).shape == (0,)


def test_caption_tokenizer_collects_the_word_table(tmp_path, vectors):
    path = tmp_path / "w2v.bin"
    vectors.save_word2vec_format(str(path), binary=True)
    tokenizer = CaptionTokenizer(path)
    result = tokenizer(
        [[(0.0, 1.0, "mix the flour"), (1.0, 2.0, "no words known")], [(0.0, 1.0, "Bread")], [(0, 1)]]
    )
    assert set(result.failures) == {2}
    first, second = result.outputs[:2]
    assert [list(ids) for ids in first] == [[4, 0, 2], []] and [list(ids) for ids in second] == [[1]]
    ids, words, vectors_UW = tokenizer.word_table()
    assert list(ids) == [0, 1, 2, 4] and words == ["the", "Bread", "flour", "mix"]
    np.testing.assert_array_equal(vectors_UW, vectors.vectors[[0, 1, 2, 4]])


def test_importing_text_does_not_import_torch():
    code = "import sys, mcn.extract.text; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
