"""Retrieval metrics against a naive reference, ties included; chunked equals unchunked."""

from __future__ import annotations

import numpy as np
import pytest

from mcn.errors import MCNError
from mcn.eval import retrieval


def naive_ranks(similarity: np.ndarray) -> np.ndarray:
    """Pessimistic rank by brute force: how many other columns score at least as high as the true one."""
    ranks = []
    for i, row in enumerate(similarity):
        ranks.append(sum(1 for j, value in enumerate(row) if j != i and value >= row[i]))
    return np.array(ranks)


def naive_metrics(ranks: np.ndarray) -> dict:
    sorted_ranks = sorted(int(r) for r in ranks)
    n = len(sorted_ranks)
    median = (sorted_ranks[(n - 1) // 2] + sorted_ranks[n // 2]) / 2
    return {
        "R@1": sum(r < 1 for r in sorted_ranks) / n,
        "R@5": sum(r < 5 for r in sorted_ranks) / n,
        "R@10": sum(r < 10 for r in sorted_ranks) / n,
        "MedR": median + 1,
        "MeanR": sum(sorted_ranks) / n + 1,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_naive_reference_with_ties(seed):
    rng = np.random.default_rng(seed)
    similarity = rng.integers(0, 4, size=(37, 37)).astype(np.float32)  # many ties
    similarity[np.arange(37), np.arange(37)] += rng.integers(0, 2, size=37)
    expected = naive_metrics(naive_ranks(similarity))
    assert retrieval.retrieval_metrics(similarity) == pytest.approx(expected)
    for chunk in (1, 5, 36, 1000):
        assert retrieval.retrieval_metrics(similarity, chunk_size=chunk) == pytest.approx(expected)


def test_all_equal_scores_give_the_worst_rank():
    metrics = retrieval.retrieval_metrics(np.zeros((20, 20)))
    assert metrics["R@1"] == 0.0 and metrics["R@10"] == 0.0
    assert metrics["MedR"] == 20.0 and metrics["MeanR"] == 20.0


def test_perfect_diagonal():
    similarity = np.eye(12) + 0.01 * np.random.default_rng(0).random((12, 12))
    metrics = retrieval.retrieval_metrics(similarity)
    assert metrics["R@1"] == 1.0 and metrics["MedR"] == 1.0 and metrics["MeanR"] == 1.0


def test_embeddings_path_equals_matrix_path():
    rng = np.random.default_rng(3)
    queries, gallery = rng.standard_normal((50, 8)), rng.standard_normal((50, 8))
    gallery[7] = gallery[8]  # a tie between two gallery items
    queries[7] = queries[8]
    full = queries @ gallery.T
    expected = retrieval.ranks_from_similarity(full)
    np.testing.assert_array_equal(expected, naive_ranks(full.astype(np.float32)))
    for chunk in (1, 7, 64):
        np.testing.assert_array_equal(
            retrieval.ranks_from_embeddings(queries, gallery, chunk_size=chunk), expected
        )


def test_missing_queries_count_as_misses():
    similarity = np.eye(4) * 10
    metrics = retrieval.retrieval_metrics(similarity, num_total=10)
    assert metrics["R@1"] == pytest.approx(0.4)
    assert metrics["R@10"] == pytest.approx(0.4)
    # ranks: four 0s and six 10s (after the whole gallery) -> median 10 + 1
    assert metrics["MedR"] == 11.0
    assert metrics["MeanR"] == pytest.approx((6 * 10) / 10 + 1)
    with pytest.raises(ValueError):
        retrieval.retrieval_metrics(similarity, num_total=3)


def test_recall_curve_and_chance():
    ranks = np.array([0, 0, 1, 3, 9, 20])
    curve = retrieval.recall_curve(ranks, 5)
    np.testing.assert_allclose(curve, [2 / 6, 3 / 6, 3 / 6, 4 / 6, 4 / 6])
    np.testing.assert_allclose(retrieval.recall_curve(ranks, 2, num_total=12), [2 / 12, 3 / 12])
    assert retrieval.chance_recall(10, 1000) == 0.01
    assert retrieval.chance_recall(10, 5) == 1.0


def test_top_k_matches_sorting():
    rng = np.random.default_rng(5)
    queries, gallery = rng.standard_normal((9, 4)), rng.standard_normal((30, 4))
    indices, scores = retrieval.top_k_from_embeddings(queries, gallery, 3, chunk_size=4)
    full = queries @ gallery.T
    np.testing.assert_array_equal(indices, np.argsort(-full, axis=1)[:, :3])
    np.testing.assert_allclose(scores, -np.sort(-full, axis=1)[:, :3], rtol=1e-5)


def test_nan_similarity_is_an_error():
    similarity = np.eye(3)
    similarity[1, 2] = np.nan
    with pytest.raises(MCNError, match="NaN"):
        retrieval.retrieval_metrics(similarity)
