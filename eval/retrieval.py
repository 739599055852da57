"""Text-to-clip retrieval metrics, computed in chunks of query rows.

Convention: query ``i`` (row ``i``) matches gallery item ``targets[i]`` (column ``i`` by default). The rank of a
query is 0-based. **Ties are broken pessimistically**: the rank is the number of gallery items whose similarity
is greater than *or equal to* the true item's, minus one (the true item itself). A model that gives every clip
the same score therefore gets the worst rank, never the best (the public MCN/HowTo100M metric code locates the
true score with ``np.where(sorted - true == 0)`` and reports the first tied position, which flatters ties).

``R@k`` is the fraction of queries with rank < k; ``MedR`` is ``median(rank) + 1`` and ``MeanR`` is
``mean(rank) + 1``. With ``num_total`` (e.g. MSR-VTT's 1,000 test clips when only 968 have audio) the queries that
are absent from the matrix count as misses placed after every gallery item (rank ``num_total``): R@k is divided
by ``num_total`` and the median and mean ranks include them. Memory is O(chunk × N), never N × N beyond what the caller passes in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mcn.errors import MCNError

RECALL_KS = (1, 5, 10)
DEFAULT_CHUNK = 1024


def _check_finite(values: np.ndarray | torch.Tensor) -> None:
    finite = torch.isfinite(values).all() if isinstance(values, torch.Tensor) else np.isfinite(values).all()
    if not bool(finite):
        raise MCNError(
            "the similarity matrix holds NaN or infinite values: the checkpoint's embeddings are broken"
        )


def ranks_from_similarity(
    similarity_NM: np.ndarray, targets: np.ndarray | None = None, chunk_size: int = DEFAULT_CHUNK
) -> np.ndarray:
    """0-based pessimistic rank of each row's true column; (N,) int64. Works through ``chunk_size`` rows at a time."""
    similarity_NM = np.asarray(similarity_NM)
    if similarity_NM.ndim != 2:
        raise ValueError(f"similarity must be 2-D (queries x gallery), got shape {similarity_NM.shape}")
    num_queries = similarity_NM.shape[0]
    targets = np.arange(num_queries) if targets is None else np.asarray(targets, np.int64)
    if len(targets) != num_queries or (num_queries and targets.max() >= similarity_NM.shape[1]):
        raise ValueError("targets must give one gallery column per query row, inside the gallery")
    ranks = np.empty(num_queries, np.int64)
    for begin in range(0, num_queries, chunk_size):
        rows_CM = similarity_NM[begin : begin + chunk_size]
        _check_finite(rows_CM)
        true_C1 = rows_CM[np.arange(len(rows_CM)), targets[begin : begin + chunk_size]][:, None]
        ranks[begin : begin + len(rows_CM)] = (rows_CM >= true_C1).sum(axis=1) - 1
    return ranks


@torch.no_grad()
def ranks_from_embeddings(
    queries_ND: np.ndarray | torch.Tensor,
    gallery_MD: np.ndarray | torch.Tensor,
    targets: np.ndarray | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Ranks for raw dot-product similarity ``queries · galleryᵀ``, one (chunk × M) block at a time."""
    queries = torch.as_tensor(queries_ND, dtype=torch.float32)
    gallery = torch.as_tensor(gallery_MD, dtype=torch.float32, device=device)
    num_queries = queries.shape[0]
    targets_t = torch.arange(num_queries) if targets is None else torch.as_tensor(targets, dtype=torch.int64)
    if len(targets_t) != num_queries:
        raise ValueError("targets must give one gallery row per query")
    ranks = np.empty(num_queries, np.int64)
    for begin in range(0, num_queries, chunk_size):
        block_CM = queries[begin : begin + chunk_size].to(device) @ gallery.T
        _check_finite(block_CM)
        rows = torch.arange(block_CM.shape[0], device=block_CM.device)
        true_C1 = block_CM[rows, targets_t[begin : begin + chunk_size].to(block_CM.device)][:, None]
        ranks[begin : begin + block_CM.shape[0]] = ((block_CM >= true_C1).sum(dim=1) - 1).cpu().numpy()
    return ranks


def metrics_from_ranks(
    ranks: np.ndarray, num_total: int | None = None, ks: Sequence[int] = RECALL_KS
) -> dict:
    """``R@k``, ``MedR``, ``MeanR`` from 0-based ranks; see the module docstring for ``num_total``."""
    ranks = np.asarray(ranks, np.int64)
    if num_total is not None:
        if num_total < len(ranks):
            raise ValueError(f"num_total ({num_total}) is smaller than the number of queries ({len(ranks)})")
        ranks = np.concatenate([ranks, np.full(num_total - len(ranks), num_total, np.int64)])
    if len(ranks) == 0:
        raise MCNError("no queries to score: the benchmark matched no clip of the store")
    metrics = {f"R@{k}": float(np.mean(ranks < k)) for k in ks}
    metrics["MedR"] = float(np.median(ranks) + 1)
    metrics["MeanR"] = float(np.mean(ranks) + 1)
    return metrics


def retrieval_metrics(
    similarity: np.ndarray, num_total: int | None = None, chunk_size: int = DEFAULT_CHUNK
) -> dict:
    """Metrics of a (queries × gallery) similarity matrix whose row ``i`` matches column ``i``.

    Keys ``R@1``, ``R@5``, ``R@10``, ``MedR``, ``MeanR``. Pessimistic tie breaking (rank = number of columns
    with similarity >= the true one, minus 1). ``num_total`` counts queries missing from the matrix as misses.
    """
    return metrics_from_ranks(ranks_from_similarity(similarity, chunk_size=chunk_size), num_total)


def recall_curve(ranks: np.ndarray, max_k: int, num_total: int | None = None) -> np.ndarray:
    """R@k for k = 1 … max_k, (max_k,) float; absent queries (``num_total``) count as misses."""
    ranks = np.asarray(ranks, np.int64)
    denominator = num_total if num_total is not None else len(ranks)
    counts = np.bincount(np.minimum(ranks, max_k), minlength=max_k + 1)[:max_k]
    return np.cumsum(counts) / max(denominator, 1)


def chance_recall(k: int, gallery_size: int) -> float:
    """R@k of a random ranking: k / N."""
    return min(k, gallery_size) / gallery_size


@torch.no_grad()
def top_k_from_embeddings(
    queries_ND: np.ndarray, gallery_MD: np.ndarray, k: int, chunk_size: int = DEFAULT_CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """The k best gallery items of each query: indices (N, k) int64 and scores (N, k), best first."""
    queries = torch.as_tensor(queries_ND, dtype=torch.float32)
    gallery = torch.as_tensor(gallery_MD, dtype=torch.float32)
    k = min(k, gallery.shape[0])
    indices, scores = [], []
    for begin in range(0, queries.shape[0], chunk_size):
        values, rows = (queries[begin : begin + chunk_size] @ gallery.T).topk(k, dim=1)
        indices.append(rows.numpy())
        scores.append(values.numpy())
    return np.concatenate(indices), np.concatenate(scores)
