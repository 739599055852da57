"""Retrieval metrics under each protocol against naive reimplementations written here: missing rows, clips
without audio, ties, NaN rows; chunked equals unchunked; embeddings path equals matrix path."""

from __future__ import annotations

import numpy as np
import pytest
from eval_store import naive_median, naive_protocol_metrics

from mcn.errors import MCNError
from mcn.eval import protocols, retrieval


def naive_rank(row, i) -> int:
    """Pessimistic rank: how many other columns score at least as high as the true one."""
    return sum(1 for j, value in enumerate(row) if j != i and value >= row[i])


def naive_benchmark(similarity, present, with_audio, protocol):
    """A whole benchmark of N annotated clips (``similarity`` N x N over all of them): the gallery keeps the present
    clips (only those with audio for ``with_audio``), then the brute-force protocol."""
    keep = [
        i for i in range(len(similarity)) if present[i] and (protocol.gallery == "present" or with_audio[i])
    ]
    metrics = naive_protocol_metrics(similarity, keep, len(similarity), protocol.denominator, protocol.median)
    return metrics, keep


def public_style(similarity, denominator=None):
    """What the public metric computes on a tie-free matrix: the position of the true score in its row sorted
    by decreasing similarity; R@k divided by the rows (or ``denominator``), median over the rows."""
    positions = []
    for i, row in enumerate(similarity):
        ordered = sorted(row, reverse=True)
        positions.append(ordered.index(row[i]))
    total = denominator or len(similarity)
    metrics = {f"R@{k}": sum(p < k for p in positions) / total for k in (1, 5, 10)}
    metrics["MedR"] = naive_median(positions) + 1
    return metrics


RULES = [
    protocols.RankingProtocol(gallery=g, denominator=d, median=m)
    for g in protocols.GALLERY_RULES
    for d in protocols.COUNT_RULES
    for m in protocols.COUNT_RULES
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("protocol", RULES, ids=lambda p: f"{p.gallery}-{p.denominator}-{p.median}")
def test_every_rule_matches_the_naive_benchmark(seed, protocol):
    rng = np.random.default_rng(seed)
    n = 60
    similarity = rng.integers(0, 5, size=(n, n)).astype(np.float32)  # many ties
    similarity[np.arange(n), np.arange(n)] += rng.integers(0, 3, size=n)
    present = rng.random(n) > 0.15
    with_audio = rng.random(n) > 0.2
    expected, keep = naive_benchmark(similarity.tolist(), present, with_audio, protocol)
    matrix = similarity[np.ix_(keep, keep)]
    for chunk in (1, 7, 1000):
        got = retrieval.score_similarity(matrix, protocol, num_annotated=n, chunk_size=chunk)
        assert {k: got[k] for k in expected} == pytest.approx(expected)
    assert got["num_queries"] == len(keep) and got["num_missing"] == n - len(keep)
    assert got["num_counted"] == (len(keep) if protocol.denominator == "rows" else n)
    assert got["chance_R@10"] == pytest.approx(10 / len(keep))
    assert got["chance_MedR"] == pytest.approx((len(keep) + 1) / 2)


def test_reference_protocols_equal_the_public_computation_without_ties():
    rng = np.random.default_rng(7)
    msrvtt = rng.standard_normal((968, 968)).astype(np.float32)
    got = retrieval.score_similarity(msrvtt, protocols.msrvtt().reference, num_annotated=1000)
    expected = public_style(msrvtt.tolist(), denominator=1000)
    assert {k: got[k] for k in expected} == pytest.approx(expected)
    youcook = rng.standard_normal((300, 300)).astype(np.float32) + 2 * np.eye(300, dtype=np.float32)
    got = retrieval.score_similarity(youcook, protocols.youcook2().reference, num_annotated=3492)
    expected = public_style(youcook.tolist())
    assert {k: got[k] for k in expected} == pytest.approx(expected)
    strict = retrieval.score_similarity(youcook, protocols.STRICT, num_annotated=3492)
    assert strict["R@1"] == pytest.approx(got["R@1"] * 300 / 3492)
    assert strict["MedR"] == 3493.0  # most annotated clips are missing: the median is a miss


def test_ties_are_the_one_deliberate_difference_from_the_public_metric():
    # The public metric takes every sorted position whose value equals the true score: a constant row adds N
    # entries, R@5 counts five of them. Pessimistic ties give the worst rank instead.
    constant = np.zeros((20, 20), np.float32)
    positions = [
        p for row in constant.tolist() for p, v in enumerate(sorted(row, reverse=True)) if v == row[0]
    ]
    assert sum(p < 5 for p in positions) / 20 == 5.0  # the public R@5 of a constant matrix
    got = retrieval.score_similarity(constant, protocols.ROWS)
    assert got["R@1"] == got["R@5"] == got["R@10"] == 0.0 and got["MedR"] == 20.0


def test_nan_rows_are_an_error():
    similarity = np.eye(6, dtype=np.float32)
    similarity[4] = np.nan
    for chunk in (1, 4, 100):
        with pytest.raises(MCNError, match="NaN"):
            retrieval.score_similarity(similarity, protocols.ROWS, chunk_size=chunk)
    with pytest.raises(MCNError, match="NaN"):
        retrieval.ranks_from_embeddings(np.full((2, 3), np.nan), np.ones((2, 3)))


def test_shape_and_count_errors():
    with pytest.raises(MCNError, match="at least as many columns"):
        retrieval.score_similarity(np.zeros((5, 3)), protocols.ROWS)
    with pytest.raises(MCNError, match="--num-total"):
        retrieval.score_similarity(np.eye(3), protocols.STRICT)  # the annotated count is needed
    with pytest.raises(MCNError, match="annotates 2 clips"):
        retrieval.score_similarity(np.eye(3), protocols.STRICT, num_annotated=2)
    with pytest.raises(MCNError, match="2-D"):
        retrieval.ranks_from_similarity(np.zeros(4))


def test_extra_gallery_columns_are_distractors():
    similarity = np.eye(3, 8, dtype=np.float32)
    similarity[0, 5] = 2.0  # a distractor beats query 0's true clip
    got = retrieval.score_similarity(similarity, protocols.ROWS)
    assert got["R@1"] == pytest.approx(2 / 3) and got["num_gallery"] == 8


def test_embeddings_path_equals_matrix_path():
    rng = np.random.default_rng(3)
    queries, gallery = rng.standard_normal((50, 8)), rng.standard_normal((50, 8))
    gallery[7] = gallery[8]  # a tie between two gallery items
    queries[7] = queries[8]
    full = (queries @ gallery.T).astype(np.float32)
    expected = retrieval.ranks_from_similarity(full)
    np.testing.assert_array_equal(expected, [naive_rank(row, i) for i, row in enumerate(full.tolist())])
    for chunk in (1, 7, 64):
        np.testing.assert_array_equal(
            retrieval.ranks_from_embeddings(queries, gallery, chunk_size=chunk), expected
        )


def test_public_api_short_form():
    similarity = np.eye(4) * 10
    assert retrieval.retrieval_metrics(similarity)["R@1"] == 1.0
    metrics = retrieval.retrieval_metrics(similarity, num_total=10)
    assert metrics["R@1"] == pytest.approx(0.4) and metrics["MedR"] == 11.0
    assert metrics["MeanR"] == pytest.approx((6 * 10) / 10 + 1)


def test_recall_curve_and_chance():
    ranks = np.array([0, 0, 1, 3, 9, 20])
    np.testing.assert_allclose(retrieval.recall_curve(ranks, 5), [2 / 6, 3 / 6, 3 / 6, 4 / 6, 4 / 6])
    np.testing.assert_allclose(retrieval.recall_curve(ranks, 2, denominator=12), [2 / 12, 3 / 12])
    assert retrieval.chance_recall(10, 1000) == 0.01 and retrieval.chance_recall(10, 5) == 1.0
    assert retrieval.chance_median_rank(76) == 38.5


def test_top_k_matches_sorting():
    rng = np.random.default_rng(5)
    queries, gallery = rng.standard_normal((9, 4)), rng.standard_normal((30, 4))
    indices, scores = retrieval.top_k_from_embeddings(queries, gallery, 3, chunk_size=4)
    full = queries @ gallery.T
    np.testing.assert_array_equal(indices, np.argsort(-full, axis=1)[:, :3])
    np.testing.assert_allclose(scores, -np.sort(-full, axis=1)[:, :3], rtol=1e-5)
