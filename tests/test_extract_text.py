"""Caption readers (VTT rolling lines, SRT, CSV, JSON, broken files), tokenizer, word2vec files, token ids."""

import json
import subprocess
import sys

import numpy as np
import pytest
from gensim.models import KeyedVectors

from mcn.errors import MCNError
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
