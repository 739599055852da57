"""mcn.extract.constants: the recipe's numbers agree with every default that repeats them."""

from mcn.extract import asr, audio, constants, visual
from mcn.extract.decode import DecodeConfig


def test_defaults_elsewhere_repeat_the_constants():
    decode = DecodeConfig()
    assert (decode.rate_2d, decode.rate_3d) == (constants.RATE_2D_HZ, constants.RATE_3D_HZ)
    assert audio.SAMPLE_RATE == asr.SAMPLE_RATE == constants.AUDIO_SAMPLE_RATE
    assert visual.CLIP_FRAMES == constants.CLIP_FRAMES and visual.FEATURE_DIM == constants.FEATURE_DIM
    assert constants.FEATURES_3D_HZ == 1.5
