"""Temporal step localisation: CrossTask's ordered dynamic-programming decoder and step recall.

Decoder (facts from the public CrossTask code, ``dp.pyx``): given a cost matrix ``cost_TK`` (seconds × steps)
it assigns every step, **in the given order**, to **exactly one** second, seconds strictly increasing, and
minimises the summed cost; seconds not assigned to a step cost ``background_cost`` (0). States are
``background, step 1, background, step 2, …, step K, background``; a step state lasts one second; a step may
follow the previous step directly. On equal costs the reference prefers staying, then the previous state, then
skipping a background; at the end it prefers finishing on the last step over the trailing background. MCN
scores a second against a step with the raw dot product and decodes ``cost = -score`` on CrossTask and
``cost = -log_softmax(score over steps)`` on Mining YouTube (its ``eval_cross.py``).

Recall (per video) = steps whose predicted second lies inside one of their ground-truth intervals / steps
present in the ground truth. Ground-truth intervals cover seconds ``floor(start) … ceil(end) - 1`` (CrossTask's
``read_assignment``). Videos without any annotated step are left out of the averages.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mcn.errors import MCNError


def ordered_step_dp(cost_TK: np.ndarray, background_cost: float = 0.0) -> np.ndarray:
    """The second assigned to each step, (K,) int64, strictly increasing; minimises the total cost."""
    cost_TK = np.asarray(cost_TK, np.float64)
    num_seconds, num_steps = cost_TK.shape
    if num_steps == 0:
        return np.zeros(0, np.int64)
    if num_seconds < num_steps:
        raise MCNError(
            f"cannot place {num_steps} steps in a {num_seconds}-second video (one second per step)"
        )
    num_states = 2 * num_steps + 1
    is_step = np.arange(num_states) % 2 == 1
    step_of_state = (np.arange(num_states) + 1) // 2 - 1  # step index of odd states
    total = np.full(num_states, np.inf)
    total[0] = 0.0  # before the first second: the leading background, nothing paid yet
    back_SS = np.full((num_seconds + 1, num_states), -1, np.int64)
    shifted_1 = np.full(num_states, np.inf)
    shifted_2 = np.full(num_states, np.inf)
    for t in range(1, num_seconds + 1):
        stay = np.where(is_step, np.inf, total)  # a step lasts exactly one second
        shifted_1[1:] = total[:-1]
        shifted_2[2:] = np.where(is_step[2:], total[:-2], np.inf)  # step k-1 -> step k without background
        candidates_3S = np.stack([stay, shifted_1, shifted_2])
        choice = np.argmin(candidates_3S, axis=0)  # first minimum: stay, then previous, then skip
        best = candidates_3S[choice, np.arange(num_states)]
        back_SS[t] = np.where(np.isfinite(best), np.arange(num_states) - choice, -1)
        gain = np.where(is_step, cost_TK[t - 1, np.maximum(step_of_state, 0)], background_cost)
        total = best + gain
    state = num_states - 1 if total[-1] < total[-2] else num_states - 2
    seconds = np.empty(num_steps, np.int64)
    for t in range(num_seconds, 0, -1):
        if is_step[state]:
            seconds[step_of_state[state]] = t - 1
        state = back_SS[t, state]
    return seconds


def log_softmax(scores_TK: np.ndarray) -> np.ndarray:
    """Log-softmax over the steps axis (used to turn Mining YouTube scores into costs)."""
    scores_TK = np.asarray(scores_TK, np.float64)
    shifted = scores_TK - scores_TK.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def scores_to_cost(scores_TK: np.ndarray, normalise: str = "none") -> np.ndarray:
    """``normalise="none"``: cost = -score (CrossTask); ``"log_softmax"``: cost = -log_softmax (Mining YouTube)."""
    if normalise == "none":
        return -np.asarray(scores_TK, np.float64)
    if normalise == "log_softmax":
        return -log_softmax(scores_TK)
    raise ValueError(f"unknown score normalisation {normalise!r}; use 'none' or 'log_softmax'")


def ground_truth_matrix(intervals: Sequence[Sequence[tuple[float, float]]], num_seconds: int) -> np.ndarray:
    """(T, K) uint8: second t lies in an interval of step k (seconds floor(start) … ceil(end) - 1)."""
    truth_TK = np.zeros((num_seconds, len(intervals)), np.uint8)
    for step, spans in enumerate(intervals):
        for start, end in spans:
            truth_TK[max(int(math.floor(start)), 0) : max(int(math.ceil(end)), 0), step] = 1
    return truth_TK


@dataclass(frozen=True)
class VideoRecall:
    """Step hits of one video: ``hits`` of the ``present`` annotated steps were placed inside their intervals."""

    video_id: str
    task: str
    hits: int
    present: int

    @property
    def recall(self) -> float:
        return self.hits / self.present if self.present else float("nan")


def video_recall(
    video_id: str, task: str, predicted_seconds: np.ndarray, truth_TK: np.ndarray
) -> VideoRecall:
    """Count the annotated steps whose predicted second falls inside their ground truth."""
    present = truth_TK.sum(axis=0) > 0
    inside = truth_TK[np.asarray(predicted_seconds, np.int64), np.arange(truth_TK.shape[1])] > 0
    return VideoRecall(video_id, task, int((inside & present).sum()), int(present.sum()))


def recall_summary(videos: Sequence[VideoRecall]) -> dict:
    """Flat dict of recalls.

    - ``recall_task_macro``: per-video recall averaged over a task's videos, then over tasks (CrossTask in MCN).
    - ``recall_task_micro``: hits / present summed over a task's videos, then averaged over tasks (CrossTask paper).
    - ``recall_video_macro``: per-video recall averaged over all videos (Mining YouTube).
    - ``task/<id>/recall``: each task's macro recall; ``num_videos`` and ``num_tasks`` counted.
    """
    scored = [video for video in videos if video.present > 0]
    if not scored:
        raise MCNError("no video has an annotated step present: check the benchmark's annotations")
    by_task: dict[str, list[VideoRecall]] = defaultdict(list)
    for video in scored:
        by_task[video.task].append(video)
    task_macro = {task: float(np.mean([v.recall for v in vs])) for task, vs in sorted(by_task.items())}
    task_micro = {
        task: sum(v.hits for v in vs) / sum(v.present for v in vs) for task, vs in sorted(by_task.items())
    }
    summary = {
        "recall_task_macro": float(np.mean(list(task_macro.values()))),
        "recall_task_micro": float(np.mean(list(task_micro.values()))),
        "recall_video_macro": float(np.mean([v.recall for v in scored])),
        "num_videos": len(scored),
        "num_tasks": len(by_task),
    }
    summary.update({f"task/{task}/recall": value for task, value in task_macro.items()})
    return summary
