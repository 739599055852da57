"""Online k-means over fused embeddings, with the reference's queue and fit schedule.

Reference behaviour (``train_tri_kmeans.py`` with ``fast_pytorch_kmeans.KMeans(mode="cosine")``):
- A queue holds the fused vectors of the last ``queue_steps`` steps, only the first ``queue_clips_per_video``
  clips of every video, newest first. It starts as zeros, persists across epochs, and counts as full once
  ``queue_steps`` batches went in. The points of a step are ``queue ++ batch`` once full, else the batch.
- At steps ``0, fit_every, 2*fit_every, ...`` of every epoch: a full fit on those points, warm-started from the
  current centroids, or from ``num_clusters`` random distinct points after an epoch reset. Other steps assign
  the batch to the nearest frozen centroid.
- A fit iterates at most ``max_iter`` times: assign every point by cosine similarity (``x.c / (|c| + 1e-8)``),
  recompute centroids as plain means of the raw vectors, stop once the squared centroid shift is <= ``tol``.
  The labels returned are the last assignment (made before the last centroid update, as the reference).
- An empty cluster's centroid becomes zero (the reference's NaN-to-zero; ``empty_cluster="zero"``);
  ``empty_cluster="keep"`` keeps its previous centroid instead.

Data parallelism: each rank passes its own fused rows; they are all-gathered (rank order) so the queue and
every fit see the global batch on every rank, and after each fit rank 0's centroids and labels are broadcast,
so every rank holds identical centroids even if its arithmetic differed in the last bit.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from mcn.errors import MCNError

EMPTY_CLUSTER_RULES = ("zero", "keep")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _cosine_targets(centroids_KD: torch.Tensor) -> torch.Tensor:
    return centroids_KD / (centroids_KD.norm(dim=1, keepdim=True) + 1e-8)


def assign(points_ND: torch.Tensor, centroids_KD: torch.Tensor, chunk_rows: int = 16384) -> torch.Tensor:
    """Index of the most cosine-similar centroid for every point (computed in row chunks)."""
    targets_KD = _cosine_targets(centroids_KD.float())
    labels = [
        (points_ND[i : i + chunk_rows].float() @ targets_KD.t()).argmax(dim=1)
        for i in range(0, points_ND.shape[0], chunk_rows)
    ]
    return torch.cat(labels)


def kmeans_fit(
    points_ND: torch.Tensor,
    init_KD: torch.Tensor,
    max_iter: int = 100,
    tol: float = 1e-4,
    empty_cluster: str = "zero",
    chunk_rows: int = 16384,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Cosine-assignment k-means from ``init``; returns (centroids, labels, iterations run)."""
    centroids = init_KD.float().clone()
    num_clusters = centroids.shape[0]
    labels, iterations = None, 0
    while iterations < max_iter:
        iterations += 1
        targets_KD = _cosine_targets(centroids)
        sums_KD = torch.zeros_like(centroids)
        chunks = []
        for i in range(0, points_ND.shape[0], chunk_rows):
            chunk = points_ND[i : i + chunk_rows].float()
            chunk_labels = (chunk @ targets_KD.t()).argmax(dim=1)
            # A one-hot product instead of index_add_: deterministic and on tensor cores.
            one_hot_CK = torch.nn.functional.one_hot(chunk_labels, num_clusters).to(chunk.dtype)
            sums_KD.addmm_(one_hot_CK.t(), chunk)
            chunks.append(chunk_labels)
        labels = torch.cat(chunks)
        counts_K = torch.bincount(labels, minlength=num_clusters)
        new = sums_KD / counts_K.clamp(min=1)[:, None].to(sums_KD.dtype)
        empty_K = counts_K == 0
        if empty_cluster == "keep":
            new[empty_K] = centroids[empty_K]
        shift = (new - centroids).pow(2).sum()
        centroids = new
        if shift <= tol:
            break
    return centroids, labels, iterations


class OnlineKMeans:
    """The online clustering state of a training run. Call :meth:`step` once per training step."""

    def __init__(
        self,
        num_clusters: int = 256,
        queue_steps: int = 20,
        clips_per_video: int = 32,
        queue_clips_per_video: int = 16,
        fit_every: int = 20,
        max_iter: int = 100,
        tol: float = 1e-4,
        empty_cluster: str = "zero",
        seed: int = 1,
        chunk_rows: int = 16384,
    ) -> None:
        if empty_cluster not in EMPTY_CLUSTER_RULES:
            raise ValueError(f"empty_cluster must be one of {EMPTY_CLUSTER_RULES}, got {empty_cluster!r}")
        if not 0 < queue_clips_per_video <= clips_per_video:
            raise ValueError("queue_clips_per_video must be in 1..clips_per_video")
        if min(num_clusters, fit_every, max_iter, chunk_rows) < 1 or queue_steps < 0:
            raise ValueError(
                "num_clusters, fit_every, max_iter and chunk_rows must be >= 1, queue_steps >= 0"
            )
        self.num_clusters = num_clusters
        self.queue_steps = queue_steps
        self.clips_per_video = clips_per_video
        self.queue_clips_per_video = queue_clips_per_video
        self.fit_every = fit_every
        self.max_iter = max_iter
        self.tol = tol
        self.empty_cluster = empty_cluster
        self.chunk_rows = chunk_rows
        self.generator = torch.Generator().manual_seed(seed)
        self.centroids: torch.Tensor | None = None
        self.queue: torch.Tensor | None = None
        self.num_queued_steps = 0
        self.step_in_epoch = 0
        self.last_fit_iterations = 0

    @property
    def queue_full(self) -> bool:
        return self.queue is not None and self.num_queued_steps >= self.queue_steps

    def reset_epoch(self) -> None:
        """Forget the centroids (the next step fits from random points); the queue is kept."""
        self.centroids = None
        self.step_in_epoch = 0

    def fit(self, points_ND: torch.Tensor) -> torch.Tensor:
        """Full fit on ``points``, warm-started (or randomly initialised); returns the points' labels."""
        if self.centroids is None:
            if points_ND.shape[0] < self.num_clusters:
                raise MCNError(
                    f"cannot initialise {self.num_clusters} clusters from {points_ND.shape[0]} points; lower "
                    "kmeans.num_clusters (--num-clusters) or raise the batch"
                )
            pick = torch.randperm(points_ND.shape[0], generator=self.generator)[: self.num_clusters]
            init = points_ND[pick.to(points_ND.device)]
        else:
            init = self.centroids
        self.centroids, labels, self.last_fit_iterations = kmeans_fit(
            points_ND, init, self.max_iter, self.tol, self.empty_cluster, self.chunk_rows
        )
        return labels

    def _queue_rows(self, batch_ND: torch.Tensor) -> torch.Tensor:
        dim = batch_ND.shape[1]
        by_video = batch_ND.reshape(-1, self.clips_per_video, dim)
        return by_video[:, : self.queue_clips_per_video].reshape(-1, dim)

    def _push(self, batch_ND: torch.Tensor) -> None:
        if self.queue_steps == 0:
            return
        rows = self._queue_rows(batch_ND)
        if self.queue is None:
            self.queue = rows.new_zeros((self.queue_steps * rows.shape[0], rows.shape[1]))
        if self.queue.shape[0] != self.queue_steps * rows.shape[0]:
            raise MCNError("the global batch size must stay constant while the k-means queue is in use")
        self.queue = torch.cat([rows, self.queue[: -rows.shape[0]]])
        self.num_queued_steps = min(self.num_queued_steps + 1, self.queue_steps)

    @torch.no_grad()
    def step(self, fused_ND: torch.Tensor) -> torch.Tensor:
        """Update the clustering with this rank's fused vectors; returns their labels (N,) int64.

        Rows must be grouped by video, ``clips_per_video`` consecutive rows each.
        """
        if fused_ND.shape[0] % self.clips_per_video:
            raise ValueError(f"{fused_ND.shape[0]} rows are not whole videos of {self.clips_per_video} clips")
        local = fused_ND.detach().float()
        batch = local
        if _distributed():
            parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, local.contiguous())
            batch = torch.cat(parts)
        if self.step_in_epoch % self.fit_every == 0 or self.centroids is None:
            points = torch.cat([self.queue, batch]) if self.queue_full else batch
            labels = self.fit(points)[-batch.shape[0] :]
            if _distributed():
                labels = labels.contiguous()
                dist.broadcast(self.centroids, 0)
                dist.broadcast(labels, 0)
        else:
            labels = assign(batch, self.centroids, self.chunk_rows)
        self._push(batch)
        self.step_in_epoch += 1
        if _distributed():
            offset = dist.get_rank() * local.shape[0]
            labels = labels[offset : offset + local.shape[0]]
        return labels

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only (safe for ``torch.load(weights_only=True)``)."""
        state = {
            "num_queued_steps": torch.tensor(self.num_queued_steps),
            "step_in_epoch": torch.tensor(self.step_in_epoch),
            "generator_state": self.generator.get_state(),
        }
        if self.centroids is not None:
            state["centroids"] = self.centroids
        if self.queue is not None:
            state["queue"] = self.queue
        return state

    def load_state_dict(
        self, state: dict[str, torch.Tensor], device: torch.device | str | None = None
    ) -> None:
        self.num_queued_steps = int(state["num_queued_steps"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.generator.set_state(state["generator_state"])
        device = device if device is not None else "cpu"
        self.centroids = state["centroids"].to(device) if "centroids" in state else None
        self.queue = state["queue"].to(device) if "queue" in state else None
