"""MCN losses: masked margin softmax, cluster loss, the total, and the gradient-carrying all-gather."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mcn.train.losses import MCNLoss, cluster_loss, contrastive_loss, gather_with_grad, masked_margin_softmax


def naive_cross_entropy(rows: list[list[float]], targets: list[int]) -> float:
    return sum(math.log(sum(math.exp(v) for v in row)) - row[t] for row, t in zip(rows, targets)) / len(rows)


def test_masked_margin_softmax_matches_hand_computation():
    sim = [[1.0, 0.2, -0.5], [0.3, 2.0, 1.0], [0.5, 0.0, 0.1]]
    delta = 0.25
    shifted = [[v - (delta if i == j else 0.0) for j, v in enumerate(row)] for i, row in enumerate(sim)]
    columns = [list(col) for col in zip(*shifted)]
    expected = naive_cross_entropy(shifted, [0, 1, 2]) + naive_cross_entropy(columns, [0, 1, 2])
    got = masked_margin_softmax(torch.tensor(sim), margin=delta)
    assert math.isclose(float(got), expected, rel_tol=1e-6)
    # The default margin is the reference's 0.001.
    shifted = [[v - (0.001 if i == j else 0.0) for j, v in enumerate(row)] for i, row in enumerate(sim)]
    expected = naive_cross_entropy(shifted, [0, 1, 2]) + naive_cross_entropy(
        [list(c) for c in zip(*shifted)], [0, 1, 2]
    )
    assert math.isclose(float(masked_margin_softmax(torch.tensor(sim))), expected, rel_tol=1e-6)


def test_contrastive_loss_is_sum_of_three_pairs():
    g = torch.Generator().manual_seed(0)
    emb = {m: torch.randn(6, 4, generator=g) for m in ("video", "audio", "text")}
    v, a, t = emb["video"], emb["audio"], emb["text"]
    expected = (
        masked_margin_softmax(t @ v.t()) + masked_margin_softmax(a @ t.t()) + masked_margin_softmax(a @ v.t())
    )
    torch.testing.assert_close(contrastive_loss(emb), expected)


def test_cluster_loss_hand_case():
    centroids = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    video = torch.tensor([[1.0, 1.0], [0.5, -1.0]])
    audio = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([1, 0])
    delta = 0.1

    def term(emb):
        rows = [
            [float(e @ c) - (delta if k == y else 0.0) for k, c in enumerate(centroids)]
            for e, y in zip(emb, labels)
        ]
        return naive_cross_entropy(rows, labels.tolist())

    emb = {"video": video, "audio": audio, "text": text}
    expected = (term(video) + term(audio) + term(text)) / 3
    assert math.isclose(float(cluster_loss(emb, centroids, labels, margin=delta)), expected, rel_tol=1e-6)
    fused = (video + audio + text) / 3
    got = cluster_loss(emb, centroids, labels, margin=delta, fused_only=True)
    assert math.isclose(float(got), term(fused), rel_tol=1e-6)


def test_mcn_loss_terms_and_total():
    g = torch.Generator().manual_seed(1)
    outputs = {m: torch.randn(8, 5, generator=g, requires_grad=True) for m in ("video", "audio", "text")}
    outputs["reconstruction_loss"] = torch.tensor(0.7)
    centroids, labels = torch.randn(3, 5, generator=g), torch.randint(0, 3, (8,), generator=g)
    terms = MCNLoss(cluster_weight=2.0)(outputs, centroids, labels)
    assert set(terms) == {"contrastive_loss", "cluster_loss", "reconstruction_loss", "loss"}
    torch.testing.assert_close(terms["cluster_loss"], cluster_loss(outputs, centroids, labels))
    total = terms["contrastive_loss"] + 2.0 * terms["cluster_loss"] + 0.7
    torch.testing.assert_close(terms["loss"], total)
    terms["loss"].backward()
    assert all(outputs[m].grad is not None for m in ("video", "audio", "text"))
    no_clusters = MCNLoss()({k: v.detach() for k, v in outputs.items() if k != "reconstruction_loss"})
    assert float(no_clusters["cluster_loss"]) == 0.0 and float(no_clusters["reconstruction_loss"]) == 0.0


def test_gather_with_grad_in_one_process_is_identity_with_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    y = gather_with_grad(x)
    assert torch.equal(y, x)
    (y * 2).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 2.0))


NUM_CLIPS, IN_DIM, EMB_DIM = 8, 5, 4


def _encoders(seed: int = 0) -> torch.nn.ModuleDict:
    torch.manual_seed(seed)
    return torch.nn.ModuleDict({m: torch.nn.Linear(IN_DIM, EMB_DIM) for m in ("video", "audio", "text")})


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return {m: torch.randn(NUM_CLIPS, IN_DIM, generator=g) for m in ("video", "audio", "text")}


def _loss_and_grads(encoders, inputs) -> tuple[torch.Tensor, list[torch.Tensor]]:
    loss = contrastive_loss({m: encoders[m](x) for m, x in inputs.items()})
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in encoders.parameters()]


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        rows = NUM_CLIPS // world
        local = {m: x[rank * rows : (rank + 1) * rows] for m, x in _inputs().items()}
        encoders = _encoders()
        loss, grads = _loss_and_grads(encoders, local)
        for grad in grads:  # what DDP does: average parameter gradients over ranks
            dist.all_reduce(grad)
            grad /= world
        torch.save({"loss": loss, "grads": grads}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gather_equals_single_process_on_concatenated_batch(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    loss, grads = _loss_and_grads(_encoders(), _inputs())
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(result["loss"], loss)
        for got, expected in zip(result["grads"], grads):
            torch.testing.assert_close(got, expected)
