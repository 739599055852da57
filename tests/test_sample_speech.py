"""Narration of the sample corpus: reproducible espeak-ng speech with word timings, and the mixed soundtrack."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from mcn.errors import MCNError
from mcn.sample.speech import SpeechSynthesizer, Utterance, mix_soundtrack, write_wav

TEXT = "now the red circle slides to the left"


@pytest.fixture(scope="module")
def speech() -> SpeechSynthesizer:
    return SpeechSynthesizer()


def test_speech_has_every_word_timed_in_order(speech):
    utterance = speech(TEXT, "en-us", 170)
    assert utterance.sample_rate == speech.sample_rate > 0 and utterance.samples.dtype == np.int16
    assert 1.0 < utterance.duration < 5.0 and np.abs(utterance.samples).max() > 1000
    assert [w for _, _, w in utterance.words] == TEXT.split()
    starts = [s for s, _, _ in utterance.words]
    assert starts == sorted(starts) and all(s < e for s, e, _ in utterance.words)
    assert utterance.words[-1][1] == pytest.approx(utterance.duration)


def test_same_sentences_in_the_same_order_give_the_same_samples_whatever_ran_before(speech):
    sentences = [(TEXT, "en-us+m3", 160), ("then the blue square spins around", "en-gb-x-rp", 200)]
    synthesizer = SpeechSynthesizer()
    first = [synthesizer(*sentence).samples for sentence in sentences]
    speech("something else entirely, spoken first", "en-us", 170)  # another synthesizer in the same process
    again = SpeechSynthesizer()
    assert all(
        np.array_equal(again(*sentence).samples, f) for sentence, f in zip(sentences, first, strict=True)
    )
    faster = again(TEXT, "en-us+m3", 300)
    assert faster.duration < 0.8 * len(first[0]) / again.sample_rate


def test_unknown_voice_is_a_user_error(speech):
    with pytest.raises(MCNError, match="no voice 'xx-nonsense'"):
        speech(TEXT, "xx-nonsense")


def test_soundtrack_places_each_utterance_over_soft_noise(tmp_path):
    rate = 1000
    tone = Utterance((np.ones(500) * 16384).astype(np.int16), rate, [(0.0, 0.5, "tone")])
    track = mix_soundtrack([(1.0, tone), (2.8, tone)], 3.0, rate, 0.03, np.random.default_rng(0))
    assert track.shape == (3000,) and track.dtype == np.float32
    assert np.abs(track[:1000]).max() <= 0.03 * 1.3 + 1e-6  # noise and hum only
    assert track[1000:1500].mean() == pytest.approx(0.4, abs=0.05)  # 0.8 x half scale
    assert track[2800:].mean() == pytest.approx(0.4, abs=0.05)  # cut at the end of the track
    path = tmp_path / "track.wav"
    write_wav(path, track, rate)
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()) == (
            1,
            2,
            rate,
            3000,
        )
        samples = np.frombuffer(wav.readframes(3000), "<i2")
    assert np.allclose(samples / 32767, track, atol=1 / 32767)
