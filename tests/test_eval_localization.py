"""The ordered step decoder against brute force; ground-truth seconds; macro and micro recall."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mcn.errors import MCNError
from mcn.eval import localization


def brute_force(cost_TK: np.ndarray) -> tuple[float, list[tuple[int, ...]]]:
    """Minimum total cost over all strictly increasing step seconds, and every assignment reaching it."""
    num_seconds, num_steps = cost_TK.shape
    totals = {
        seconds: sum(cost_TK[t, k] for k, t in enumerate(seconds))
        for seconds in itertools.combinations(range(num_seconds), num_steps)
    }
    best = min(totals.values())
    return best, [s for s, total in totals.items() if np.isclose(total, best)]


@pytest.mark.parametrize("seed", range(12))
def test_dp_finds_the_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    num_steps = int(rng.integers(1, 5))
    num_seconds = int(rng.integers(num_steps, 9))
    cost = rng.standard_normal((num_seconds, num_steps))
    seconds = localization.ordered_step_dp(cost)
    best, optimal = brute_force(cost)
    assert tuple(seconds) in optimal
    assert cost[seconds, np.arange(num_steps)].sum() == pytest.approx(best)
    assert np.all(np.diff(seconds) > 0)


def test_dp_with_positive_costs_still_places_every_step():
    cost = np.ones((6, 3))
    cost[4, 1] = -5.0
    seconds = localization.ordered_step_dp(cost)
    assert len(seconds) == 3 and seconds[1] == 4 and seconds[0] < 4 < seconds[2]


def test_dp_order_is_enforced():
    cost = np.zeros((5, 2))
    cost[0, 1] = -10.0  # step 2 would like second 0, but step 1 must come first
    cost[4, 0] = -10.0
    seconds = localization.ordered_step_dp(cost)
    assert seconds[0] < seconds[1]
    best, optimal = brute_force(cost)
    assert tuple(seconds) in optimal


def test_dp_needs_a_second_per_step():
    with pytest.raises(MCNError, match="cannot place"):
        localization.ordered_step_dp(np.zeros((2, 3)))
    assert localization.ordered_step_dp(np.zeros((4, 0))).shape == (0,)


def test_cost_normalisations():
    scores = np.array([[1.0, 2.0], [3.0, 0.0]])
    np.testing.assert_allclose(localization.scores_to_cost(scores), -scores)
    log_probs = -localization.scores_to_cost(scores, "log_softmax")
    np.testing.assert_allclose(np.exp(log_probs).sum(axis=1), 1.0)
    np.testing.assert_allclose(log_probs[0], [np.log(1 / (1 + np.e)), np.log(np.e / (1 + np.e))])
    with pytest.raises(ValueError):
        localization.scores_to_cost(scores, "softmax")


def test_ground_truth_uses_floor_and_ceil():
    truth = localization.ground_truth_matrix([[(1.2, 2.1)], [], [(4.0, 9.0)]], num_seconds=6)
    np.testing.assert_array_equal(truth[:, 0], [0, 1, 1, 0, 0, 0])  # seconds 1 and 2
    assert truth[:, 1].sum() == 0
    np.testing.assert_array_equal(truth[:, 2], [0, 0, 0, 0, 1, 1])  # clipped to the video


def test_video_recall_counts_present_steps_only():
    truth = localization.ground_truth_matrix([[(0, 2)], [(3, 4)], []], num_seconds=6)
    result = localization.video_recall("v", "t", np.array([1, 5, 2]), truth)
    assert (result.hits, result.present) == (1, 2)
    assert result.recall == 0.5


def test_recall_summary_macro_and_micro():
    videos = [
        localization.VideoRecall("a1", "A", hits=1, present=1),  # 1.0
        localization.VideoRecall("a2", "A", hits=0, present=3),  # 0.0
        localization.VideoRecall("b1", "B", hits=2, present=4),  # 0.5
        localization.VideoRecall("b2", "B", hits=0, present=0),  # nothing annotated: left out
    ]
    summary = localization.recall_summary(videos)
    assert summary["task/A/recall"] == pytest.approx(0.5)
    assert summary["task/B/recall"] == pytest.approx(0.5)
    assert summary["recall_task_macro"] == pytest.approx(0.5)
    assert summary["recall_task_micro"] == pytest.approx((1 / 4 + 2 / 4) / 2)
    assert summary["recall_video_macro"] == pytest.approx(0.5)
    assert summary["num_videos"] == 3 and summary["num_tasks"] == 2
    with pytest.raises(MCNError):
        localization.recall_summary([localization.VideoRecall("x", "A", 0, 0)])
