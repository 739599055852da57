"""Online k-means: the fit against a naive NumPy k-means, the queue/fit schedule, resets, state, two ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mcn.train.kmeans import OnlineKMeans, assign, kmeans_fit


def naive_kmeans(points, init, max_iter=100, tol=1e-4, keep_empty=False):
    """Cosine assignment, plain means, stop on squared centroid shift <= tol; labels of the last assignment."""
    centroids = init.astype(np.float64).copy()
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        unit = centroids / (np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-8)
        labels = np.argmax(points @ unit.T, axis=1)
        new = np.zeros_like(centroids)
        for k in range(len(centroids)):
            members = points[labels == k]
            if len(members):
                new[k] = members.mean(axis=0)
            elif keep_empty:
                new[k] = centroids[k]
        shift = ((new - centroids) ** 2).sum()
        centroids = new
        if shift <= tol:
            break
    return centroids, labels, iterations


def blobs(num_points=120, dim=6, num_blobs=4, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_blobs, dim)) * 3
    return (centres[rng.integers(0, num_blobs, num_points)] + rng.normal(size=(num_points, dim))).astype(
        np.float32
    )


def test_fit_agrees_with_naive_numpy_kmeans():
    points = blobs()
    init = points[[0, 5, 9, 30, 77]]
    centroids, labels, iterations = kmeans_fit(
        torch.from_numpy(points), torch.from_numpy(init), chunk_rows=17
    )
    expected_c, expected_l, expected_it = naive_kmeans(points.astype(np.float64), init)
    np.testing.assert_allclose(centroids.numpy(), expected_c, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels.numpy(), expected_l)
    assert iterations == expected_it and 1 < iterations < 100


def test_empty_cluster_rules():
    points = np.abs(blobs(seed=1)) + 0.1  # all in the positive orthant
    init = np.concatenate(
        [points[:2], -np.ones((1, points.shape[1]), np.float32)]
    )  # nothing is near the third
    zero, labels, _ = kmeans_fit(torch.from_numpy(points), torch.from_numpy(init), max_iter=3)
    assert not (labels == 2).any() and torch.equal(zero[2], torch.zeros(points.shape[1]))
    kept, _, _ = kmeans_fit(
        torch.from_numpy(points), torch.from_numpy(init), max_iter=3, empty_cluster="keep"
    )
    torch.testing.assert_close(kept[2], torch.from_numpy(init[2]))
    expected, _, _ = naive_kmeans(points.astype(np.float64), init, max_iter=3, keep_empty=True)
    np.testing.assert_allclose(kept.numpy(), expected, rtol=1e-5, atol=1e-5)


class RecordingKMeans(OnlineKMeans):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fits: list[int] = []

    def fit(self, points_ND):
        self.fits.append(points_ND.shape[0])
        return super().fit(points_ND)


def small_kmeans(cls=OnlineKMeans, **overrides):
    kwargs = dict(
        num_clusters=3, queue_steps=2, clips_per_video=4, queue_clips_per_video=2, fit_every=2, seed=3
    )
    return cls(**{**kwargs, **overrides})


def batches(num_steps, seed=0):
    """Batches of 2 videos x 4 clips, 6-d."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 6, generator=g) + 2 for _ in range(num_steps)]


def test_queue_and_fit_schedule():
    km = small_kmeans(RecordingKMeans)
    data = batches(6)
    labels0 = km.step(data[0])  # epoch step 0: fit on the batch alone (queue not full)
    assert km.fits == [8] and labels0.shape == (8,) and labels0.dtype == torch.int64
    frozen = km.centroids.clone()
    labels1 = km.step(data[1])  # between fits: nearest frozen centroid
    assert km.fits == [8] and torch.equal(km.centroids, frozen)
    torch.testing.assert_close(labels1, assign(data[1], frozen))
    # The queue holds the first 2 clips of each video of the last 2 steps, newest first.
    first_clips = [d.reshape(2, 4, 6)[:, :2].reshape(4, 6) for d in data]
    torch.testing.assert_close(km.queue, torch.cat([first_clips[1], first_clips[0]]))
    km.step(data[2])  # step 2: a fit on queue ++ batch, warm-started
    assert km.fits == [8, 16] and km.queue_full
    km.step(data[3])
    assert km.fits == [8, 16]
    km.reset_epoch()  # new epoch: centroids forgotten, queue kept, a fit from random points at once
    assert km.centroids is None and km.queue is not None
    km.step(data[4])
    assert km.fits == [8, 16, 16]
    torch.testing.assert_close(km.queue, torch.cat([first_clips[4], first_clips[3]]))


def test_warm_start_continues_from_previous_centroids():
    km = small_kmeans(fit_every=1, max_iter=1)
    data = batches(2)
    km.step(data[0])
    previous = km.centroids.clone()
    km.step(data[1])  # the queue is not full yet: a fit on this batch, starting from the previous centroids
    expected, _, _ = kmeans_fit(data[1], previous, max_iter=1)
    torch.testing.assert_close(km.centroids, expected)


def test_state_round_trip_reproduces_the_run(tmp_path):
    data = batches(8, seed=4)
    a = small_kmeans()
    for d in data[:3]:
        a.step(d)
    torch.save(a.state_dict(), tmp_path / "km.pt")
    b = small_kmeans(seed=99)
    b.load_state_dict(torch.load(tmp_path / "km.pt", weights_only=True))
    for i, d in enumerate(data[3:]):
        if i == 2:
            a.reset_epoch()
            b.reset_epoch()  # the random init after a reset comes from the restored generator
        torch.testing.assert_close(a.step(d), b.step(d), rtol=0, atol=0)
        torch.testing.assert_close(a.centroids, b.centroids, rtol=0, atol=0)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        km = small_kmeans()
        labels = [km.step(d[rank * 4 : (rank + 1) * 4]) for d in batches(5, seed=6)]
        torch.save({"labels": torch.cat(labels), "centroids": km.centroids}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_match_one_process_on_the_global_batch(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    km = small_kmeans()
    labels = [km.step(d) for d in batches(5, seed=6)]
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for rank, result in enumerate(results):
        torch.testing.assert_close(result["centroids"], km.centroids, rtol=0, atol=0)
        expected = torch.cat([step_labels[rank * 4 : (rank + 1) * 4] for step_labels in labels])
        torch.testing.assert_close(result["labels"], expected, rtol=0, atol=0)
