"""Caption files of the sample corpus: every writer round-trips through an independent reader; broken ones do not."""

from __future__ import annotations

import pytest
from caption_readers import READERS, words_of

from mcn.extract.text import CaptionError, read_captions
from mcn.sample.captions import CAPTION_WRITERS, broken_captions, caption_lines

SENTENCES = [
    [(0.5, 0.8, "now"), (0.8, 1.0, "the"), (1.0, 1.3, "red"), (1.3, 1.7, "circle"), (1.7, 2.0, "slides"),
     (2.0, 2.1, "to"), (2.1, 2.2, "the"), (2.2, 2.6, "left")],
    [(5.0, 5.4, "then"), (5.4, 5.6, "the"), (5.6, 6.0, "blue"), (6.0, 6.5, "square"), (6.5, 7.0, "spins")],
]  # fmt: skip


@pytest.mark.parametrize("fmt", sorted(CAPTION_WRITERS))
def test_each_caption_writer_round_trips(fmt):
    cues = READERS[fmt](CAPTION_WRITERS[fmt](SENTENCES))
    assert words_of(cues) == [w for s in SENTENCES for _, _, w in s]
    assert cues[0][0] == pytest.approx(0.5) and cues[-1][1] >= 7.0
    if fmt == "vtt":
        assert len(cues) == len(caption_lines(SENTENCES)) == 3  # the 8-word sentence is shown as two lines


def test_caption_lines_split_long_sentences_evenly():
    lines = caption_lines(SENTENCES, max_words=6)
    assert [len(line) for line in lines] == [4, 4, 5]
    assert [w for line in lines for w in line] == [w for s in SENTENCES for w in s]


@pytest.mark.parametrize("fmt", sorted(CAPTION_WRITERS))
def test_broken_captions_parse_with_neither_reader(fmt, tmp_path):
    text = broken_captions(fmt, SENTENCES)
    with pytest.raises((ValueError, KeyError)):
        READERS[fmt](text)
    path = tmp_path / f"broken.{fmt}"
    path.write_text(text)
    with pytest.raises(CaptionError, match="malformed"):
        read_captions(path)
