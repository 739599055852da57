"""The feature recipe's fixed numbers, defined once (the spec's, after the HowTo100M feature extractors).

Frames reach the 2D network at one per second and the 3D network at 24 per second, cut into 16-frame clips
(1.5 features per second); both networks give 2048-d features; audio is decoded to 16 kHz mono for the
log-mel and for speech recognition.
"""

from __future__ import annotations

RATE_2D_HZ = 1.0  # frames per second into the 2D network, one feature each
RATE_3D_HZ = 24.0  # frames per second into the 3D network
CLIP_FRAMES = 16  # frames per 3D clip, one feature each (non-overlapping clips)
FEATURES_3D_HZ = RATE_3D_HZ / CLIP_FRAMES  # 1.5 3D features per second
FEATURE_DIM = 2048  # width of the 2D and the 3D features
AUDIO_SAMPLE_RATE = 16000  # Hz, mono: what the log-mel and Whisper take
