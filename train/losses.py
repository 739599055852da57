"""MCN losses: masked-margin contrastive loss over the global batch, clustering loss, total.

Follows the reference's ``loss.py`` (MMS_loss) and ``train_tri_kmeans.py`` (``cluster_contrast``): margins are
subtracted from raw dot products, there is no temperature, and every cross-entropy is a mean over rows.
Similarities are computed in the autocast dtype (as the reference's fp16 AMP) and the margin and softmax in
float32.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_autograd
import torch.nn.functional as F
from torch import nn

# Recent PyTorch marks this autograd all-gather deprecated in favour of a private module whose gradient support
# varies across the supported versions (>= 2.4); the call is the same in all of them.
warnings.filterwarnings(
    "ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated", category=FutureWarning
)


def gather_with_grad(x_ND: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` over all ranks (rank order), keeping the gradient path; identity in one process.

    The backward of ``torch.distributed.nn.functional.all_gather`` reduce-scatters the gathered gradient, so
    each rank gets the sum over ranks of the gradient of its own rows: with DDP's gradient averaging, parameter
    gradients then equal those of one process computing the same loss on the concatenated batch. Every rank
    must pass the same number of rows.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x_ND
    return torch.cat(dist_autograd.all_gather(x_ND), dim=0)


def masked_margin_softmax(sim_NN: torch.Tensor, margin: float = 0.001) -> torch.Tensor:
    """``CE(rows of S - margin*I, diag) + CE(columns of S - margin*I, diag)``, each averaged over N."""
    sim_NN = sim_NN.float()
    num = sim_NN.shape[0]
    sim_NN = sim_NN - margin * torch.eye(num, device=sim_NN.device, dtype=sim_NN.dtype)
    target = torch.arange(num, device=sim_NN.device)
    return F.cross_entropy(sim_NN, target) + F.cross_entropy(sim_NN.t(), target)


def contrastive_loss(embeddings: dict[str, torch.Tensor], margin: float = 0.001) -> torch.Tensor:
    """``MMS(T V^T) + MMS(A T^T) + MMS(A V^T)`` over the global batch (all ranks' clips)."""
    video = gather_with_grad(embeddings["video"])
    audio = gather_with_grad(embeddings["audio"])
    text = gather_with_grad(embeddings["text"])
    return (
        masked_margin_softmax(text @ video.t(), margin)
        + masked_margin_softmax(audio @ text.t(), margin)
        + masked_margin_softmax(audio @ video.t(), margin)
    )


def _margin_cross_entropy(
    emb_ND: torch.Tensor, centroids_KD: torch.Tensor, labels_N: torch.Tensor, margin: float
):
    logits_NK = (emb_ND @ centroids_KD.to(emb_ND.dtype).t()).float()
    logits_NK = logits_NK - margin * F.one_hot(labels_N, logits_NK.shape[1]).to(logits_NK.dtype)
    return F.cross_entropy(logits_NK, labels_N)


def cluster_loss(
    embeddings: dict[str, torch.Tensor],
    centroids: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.001,
    fused_only: bool = False,
) -> torch.Tensor:
    """Cross-entropy of ``E C^T - margin*onehot(y)`` against y, averaged over video, audio and text.

    ``fused_only`` is the reference's ``mean=1`` variant: one term on F = (V + A + T) / 3, with gradient.
    Labels belong to this rank's clips; centroids are the same on every rank.
    """
    if fused_only:
        fused = (embeddings["video"] + embeddings["audio"] + embeddings["text"]) / 3
        return _margin_cross_entropy(fused, centroids, labels, margin)
    terms = [
        _margin_cross_entropy(embeddings[m], centroids, labels, margin) for m in ("video", "audio", "text")
    ]
    return sum(terms) / 3


def fused_embedding(embeddings: dict[str, torch.Tensor]) -> torch.Tensor:
    """``F = (V + A + T) / 3``, detached: the points the online k-means clusters."""
    return ((embeddings["video"] + embeddings["audio"] + embeddings["text"]) / 3).detach()


class MCNLoss(nn.Module):
    """``loss = contrastive_loss + cluster_weight * cluster_loss + reconstruction_loss``.

    ``reconstruction_loss`` is taken from the model's outputs (already weighted there, 0 when disabled);
    ``cluster_loss`` is 0 when no centroids are given.
    """

    def __init__(
        self, margin: float = 0.001, cluster_weight: float = 1.0, cluster_fused_only: bool = False
    ) -> None:
        super().__init__()
        self.margin = margin
        self.cluster_weight = cluster_weight
        self.cluster_fused_only = cluster_fused_only

    def forward(
        self,
        outputs: dict[str, torch.Tensor],
        centroids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        zero = outputs["video"].new_zeros((), dtype=torch.float32)
        terms = {"contrastive_loss": contrastive_loss(outputs, self.margin)}
        if centroids is not None:
            terms["cluster_loss"] = cluster_loss(
                outputs, centroids, labels, self.margin, self.cluster_fused_only
            )
        else:
            terms["cluster_loss"] = zero
        terms["reconstruction_loss"] = outputs.get("reconstruction_loss", zero)
        terms["loss"] = (
            terms["contrastive_loss"]
            + self.cluster_weight * terms["cluster_loss"]
            + terms["reconstruction_loss"]
        )
        return terms
