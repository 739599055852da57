"""Text-to-clip retrieval metrics under a named protocol, computed in chunks of query rows (library: no file I/O).

Convention: query ``i`` (row ``i``) matches gallery column ``i``; the matrix may have more columns than rows. The
rank of a query is 0-based. **Ties are broken pessimistically**: the rank is the number of gallery items whose
similarity is greater than *or equal to* the true item's, minus one (the true item itself), so a model that gives
every clip the same score gets the worst rank, never the best. This is the one deliberate difference from the
public MCN code (``metrics.compute_metrics``): it sorts each row and takes *every* position whose value equals the
true score, so a row whose true score ties with t other columns adds t + 1 entries to the rank list. Such a row
counts once per tied position below k in R@k (a constant matrix scores R@5 = 5.0) and the median is taken over
the longer list. Without ties the two agree exactly.

``R@k`` is the fraction of ranks < k, ``MedR`` is ``median(rank) + 1`` and ``MeanR`` is ``mean(rank) + 1``; what
they are taken over follows the protocol's rules (:class:`mcn.eval.protocols.RankingProtocol`): ``annotated``
adds one rank N (after every clip, N = the annotated clips) per annotated clip that is not a row. NaN or infinite
similarities are an error. Memory is O(chunk × M) beyond the matrix the caller passes in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mcn.errors import MCNError
from mcn.eval.protocols import ROWS, STRICT, RankingProtocol

RECALL_KS = (1, 5, 10)
DEFAULT_CHUNK = 1024


def _block_ranks(block_CM: torch.Tensor, targets_C: torch.Tensor) -> np.ndarray:
    """Pessimistic 0-based ranks of one block of rows; each row's true column is ``targets_C``."""
    if not bool(torch.isfinite(block_CM).all()):
        bad = int((~torch.isfinite(block_CM)).any(dim=1).sum())
        raise MCNError(
            f"the similarity matrix holds NaN or infinite values in {bad} row(s) of a block: "
            "the embeddings (or the matrix file) are broken"
        )
    rows = torch.arange(block_CM.shape[0], device=block_CM.device)
    true_C1 = block_CM[rows, targets_C.to(block_CM.device)][:, None]
    return ((block_CM >= true_C1).sum(dim=1) - 1).cpu().numpy()


def _check_shape(num_rows: int, num_columns: int) -> None:
    if num_rows > num_columns:
        raise MCNError(
            f"the similarity matrix has {num_rows} rows but {num_columns} columns: row i must match column i, "
            "so it needs at least as many columns (gallery clips) as rows (queries)"
        )


def ranks_from_similarity(similarity_NM: np.ndarray, chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
    """0-based pessimistic rank of column i in row i; (N,) int64, ``chunk_size`` rows at a time."""
    similarity_NM = np.asarray(similarity_NM)
    if similarity_NM.ndim != 2:
        raise MCNError(
            f"the similarity matrix must be 2-D (queries x gallery), got shape {similarity_NM.shape}"
        )
    _check_shape(*similarity_NM.shape)
    ranks = np.empty(similarity_NM.shape[0], np.int64)
    for begin in range(0, len(ranks), chunk_size):
        block_CM = torch.from_numpy(np.ascontiguousarray(similarity_NM[begin : begin + chunk_size]))
        ranks[begin : begin + len(block_CM)] = _block_ranks(
            block_CM, torch.arange(begin, begin + len(block_CM))
        )
    return ranks


@torch.no_grad()
def ranks_from_embeddings(
    queries_ND: np.ndarray | torch.Tensor,
    gallery_MD: np.ndarray | torch.Tensor,
    chunk_size: int = DEFAULT_CHUNK,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The ranks of the raw dot-product matrix ``queries · galleryᵀ``, one (chunk × M) block at a time."""
    queries = torch.as_tensor(queries_ND, dtype=torch.float32)
    gallery = torch.as_tensor(gallery_MD, dtype=torch.float32, device=device)
    _check_shape(queries.shape[0], gallery.shape[0])
    ranks = np.empty(queries.shape[0], np.int64)
    for begin in range(0, len(ranks), chunk_size):
        block_CM = queries[begin : begin + chunk_size].to(device) @ gallery.T
        ranks[begin : begin + len(block_CM)] = _block_ranks(
            block_CM, torch.arange(begin, begin + len(block_CM))
        )
    return ranks


def chance_recall(k: int, gallery_size: int) -> float:
    """R@k of a random ranking of ``gallery_size`` clips: k / N."""
    return min(k, gallery_size) / gallery_size


def chance_median_rank(gallery_size: int) -> float:
    """The median rank (1-based) of a random ranking of ``gallery_size`` clips: about (N + 1) / 2."""
    return (gallery_size + 1) / 2


def counted_ranks(ranks: np.ndarray, rule: str, num_annotated: int | None) -> np.ndarray:
    """The ranks a rule takes a statistic over: the rows (``rows``) or every annotated clip (``annotated``)."""
    ranks = np.asarray(ranks, np.int64)
    if rule == "rows":
        return ranks
    if num_annotated is None:
        raise MCNError(
            "the 'annotated' rule needs the number of annotated clips (give --num-total N, "
            "or a benchmark whose clip count is known)"
        )
    if num_annotated < len(ranks):
        raise MCNError(
            f"the benchmark annotates {num_annotated} clips but the matrix has {len(ranks)} rows; "
            "give --num-total >= the number of rows"
        )
    return np.concatenate([ranks, np.full(num_annotated - len(ranks), num_annotated, np.int64)])


def protocol_metrics(
    ranks: np.ndarray,
    protocol: RankingProtocol,
    num_gallery: int,
    num_annotated: int | None = None,
    ks: Sequence[int] = RECALL_KS,
) -> dict:
    """``R@k``, ``MedR``, ``MeanR`` of the rows' ranks under ``protocol``, with counts and the chance level.

    ``num_gallery`` is the matrix's column count (for the chance level); ``num_annotated`` the clips the
    benchmark annotates (needed by the ``annotated`` rules).
    """
    ranks = np.asarray(ranks, np.int64)
    if len(ranks) == 0:
        raise MCNError("no queries to score: the benchmark matched no clip of the store")
    recall_ranks = counted_ranks(ranks, protocol.denominator, num_annotated)
    order_ranks = counted_ranks(ranks, protocol.median, num_annotated)
    metrics: dict = {f"R@{k}": float(np.count_nonzero(ranks < k) / len(recall_ranks)) for k in ks}
    metrics["MedR"] = float(np.median(order_ranks) + 1)
    metrics["MeanR"] = float(np.mean(order_ranks) + 1)
    metrics.update(
        {
            "num_queries": len(ranks),
            "num_gallery": int(num_gallery),
            "num_counted": len(recall_ranks),
            "num_missing": (num_annotated - len(ranks)) if num_annotated is not None else 0,
        }
    )
    metrics.update({f"chance_R@{k}": chance_recall(k, num_gallery) for k in ks})
    metrics["chance_MedR"] = chance_median_rank(num_gallery)
    return metrics


def score_similarity(
    similarity_NM: np.ndarray,
    protocol: RankingProtocol,
    num_annotated: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    """:func:`protocol_metrics` of a (queries × gallery) matrix whose row i matches column i."""
    similarity_NM = np.asarray(similarity_NM)
    ranks = ranks_from_similarity(similarity_NM, chunk_size)
    return protocol_metrics(ranks, protocol, similarity_NM.shape[1], num_annotated)


def retrieval_metrics(
    similarity_NM: np.ndarray, num_total: int | None = None, chunk_size: int = DEFAULT_CHUNK
) -> dict:
    """R@1/5/10, MedR, MeanR of a matrix whose row i matches column i (the public API's short form).

    Without ``num_total`` everything is over the rows; with it, ``num_total - rows`` missing queries count as
    misses at rank ``num_total`` (the ``strict`` rules).
    """
    protocol = ROWS if num_total is None else STRICT
    metrics = score_similarity(similarity_NM, protocol, num_total, chunk_size)
    return {key: metrics[key] for key in ("R@1", "R@5", "R@10", "MedR", "MeanR")}


def recall_curve(ranks: np.ndarray, max_k: int, denominator: int | None = None) -> np.ndarray:
    """R@k for k = 1 … max_k, (max_k,) float; ``denominator`` defaults to the number of ranks."""
    ranks = np.asarray(ranks, np.int64)
    counts = np.bincount(np.minimum(ranks, max_k), minlength=max_k + 1)[:max_k]
    return np.cumsum(counts) / max(denominator or len(ranks), 1)


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
