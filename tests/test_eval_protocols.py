"""The named protocols: rules are validated, and each benchmark's reference settings are the public code's."""

from __future__ import annotations

import pytest

from mcn.errors import MCNError
from mcn.eval import protocols


def test_named_retrieval_settings():
    youcook2, msrvtt = protocols.youcook2(), protocols.msrvtt()
    assert (youcook2.audio_frames, msrvtt.audio_frames) == (5120, 3072)
    assert youcook2.reference == protocols.RankingProtocol(
        gallery="present", denominator="rows", median="rows"
    )
    assert msrvtt.reference == protocols.RankingProtocol(
        gallery="with_audio", denominator="annotated", median="rows"
    )
    assert youcook2.strict == msrvtt.strict == protocols.STRICT
    assert (youcook2.primary_task, msrvtt.primary_task) == ("text_to_video_audio", "text_to_video")
    assert protocols.ANNOTATED_CLIPS == {"youcook2": 3492, "msrvtt": 1000}
    assert protocols.generic_retrieval(2000).reference == protocols.ROWS
    assert all(settings().source for settings in protocols.RETRIEVAL.values())


def test_named_localization_settings():
    crosstask, mining = protocols.crosstask("videos_val.csv"), protocols.mining_youtube()
    assert (crosstask.score_normalisation, mining.score_normalisation) == ("none", "log_softmax")
    assert (crosstask.primary_recall, mining.primary_recall) == ("recall_task_macro", "recall_video_macro")
    assert crosstask.audio_frames == mining.audio_frames == 1024 and crosstask.window_s == 8.0
    assert crosstask.video_list == "videos_val.csv"


def test_unknown_rules_and_protocols_are_errors():
    with pytest.raises(MCNError, match="gallery rule"):
        protocols.RankingProtocol(gallery="everything", denominator="rows", median="rows")
    with pytest.raises(MCNError, match="median rule"):
        protocols.RankingProtocol(gallery="present", denominator="rows", median="present")
    with pytest.raises(MCNError, match="unknown protocol 'lenient'"):
        protocols.youcook2().protocol("lenient")
    with pytest.raises(MCNError, match="score_normalisation"):
        protocols.generic_localization("softmax")
    with pytest.raises(MCNError, match="audio_frames"):
        protocols.generic_retrieval(8)
