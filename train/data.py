"""The training reader: a store's videos in a fixed, resumable order, cut into clips by worker processes.

Order of operations (every step deterministic given the seed, the epoch and the world size):

1. shard list: the manifest's shards in order, each shard's videos in row-group order; videos without
   captions are left out (and counted) so that every rank sees the same number of batches; a video whose
   caption times are invalid (``mcn.store.invalid_captions``, the rule extraction and verify apply) is an error
   that names it;
2. seeded shuffle per epoch: a permutation drawn from ``(seed, epoch)``; the tail that does not fill a whole
   global batch is dropped (as the reference's ``drop_last=True``);
3. split by rank: global batch ``b`` is ``order[b*G:(b+1)*G]``; rank ``r`` takes its ``r``-th slice of
   ``G / world_size`` videos, so the ranks together see exactly the single-process batch;
4. split by worker: batch ``b`` of an epoch is built by DataLoader worker ``(b - first) % num_workers`` and the
   DataLoader returns workers' outputs round-robin, so the batch sequence does not depend on the worker count;
   the workers persist across epochs (keeping their cached shard footers and word table) and read the epoch and
   first batch of each pass from shared memory;
5. decode: one video = one Parquet row group, read on its own; clips are drawn with a generator seeded by
   ``(seed, epoch, video)``, so a video's clips do not depend on who decodes it or when;
6. collate: the clips of the batch's videos are flattened into ``N = videos x clips`` rows.

``state_dict()`` holds the epoch and the number of batches consumed; a loader rebuilt with the same store, seed
and world size and given that state continues with exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mcn import storage
from mcn.errors import MCNError
from mcn.storage import StorePath
from mcn.store import SHARD_DIR, StoreReader, WordTable, read_shard_video, read_words, shard_captions
from mcn.train.clips import ClipOptions, sample_video_clips

DECODE_FIELDS = ("feat_2d", "feat_3d", "logmel", "captions")


@dataclass(frozen=True)
class VideoIndex:
    """Where each trainable video lives: parallel lists over the store's captioned videos."""

    video_ids: list[str]
    shard_paths: list[StorePath]  # one per shard
    shard_of: np.ndarray  # (V,) int32 index into shard_paths
    row_group_of: np.ndarray  # (V,) int32
    num_skipped: int  # videos without captions

    def __len__(self) -> int:
        return len(self.video_ids)


def build_index(store: StorePath) -> VideoIndex:
    """The store's videos in shard order, without those that have no captions (``store`` may be a URL)."""
    reader = StoreReader(store)
    video_ids: list[str] = []
    shard_paths: list[StorePath] = []
    shard_of: list[int] = []
    row_group_of: list[int] = []
    num_skipped = 0
    invalid: list[str] = []
    for shard in reader.manifest["shards"]:
        path = storage.join(reader.root, SHARD_DIR, shard["name"])
        counts, problems = shard_captions(path)
        if len(counts) != len(shard["video_ids"]):
            raise MCNError(
                f"{path} holds {len(counts)} videos but the manifest lists {len(shard['video_ids'])}; "
                f"`mcn store verify {reader.root}` says how to repair the store"
            )
        invalid += [f"{shard['video_ids'][row]!r} ({problem})" for row, problem in problems.items()]
        shard_paths.append(path)
        for row_group, (video_id, count) in enumerate(zip(shard["video_ids"], counts)):
            if count == 0:
                num_skipped += 1
                continue
            video_ids.append(video_id)
            shard_of.append(len(shard_paths) - 1)
            row_group_of.append(row_group)
    if invalid:
        raise MCNError(
            f"{len(invalid)} videos of {reader.root} have invalid caption times: {'; '.join(invalid[:5])}"
            f"{'; ...' if len(invalid) > 5 else ''}; `mcn store verify {reader.root}` says how to repair the store"
        )
    return VideoIndex(
        video_ids,
        shard_paths,
        np.asarray(shard_of, np.int32),
        np.asarray(row_group_of, np.int32),
        num_skipped,
    )


def epoch_order(num_videos: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's permutation of video positions (same on every rank)."""
    return np.random.default_rng([seed, epoch]).permutation(num_videos)


def collate_videos(items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack per-video clip arrays and flatten videos x clips into rows (N = B * C)."""
    batch = {}
    for name in ("video", "audio", "nframes", "text", "start", "end"):
        stacked = np.stack([item[name] for item in items])
        batch[name] = torch.from_numpy(stacked.reshape(-1, *stacked.shape[2:]))
    batch["video_index"] = torch.as_tensor([int(item["video_index"]) for item in items], dtype=torch.int64)
    return batch


class ClipBatches(IterableDataset):
    """Batches of one rank for one epoch, from a given batch on; each DataLoader worker builds every n-th batch.

    The pass to make (:meth:`start_at`) is kept in a shared-memory tensor, so DataLoader workers that live
    across epochs see the new one each time the DataLoader is iterated.
    """

    def __init__(
        self,
        index: VideoIndex,
        store: StorePath,
        options: ClipOptions,
        videos_per_rank: int,
        rank: int,
        world_size: int,
        seed: int,
    ):
        self.index = index
        self.store = storage.join(store)
        self.options = options
        self.videos_per_rank = videos_per_rank
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self._next_pass = torch.zeros(2, dtype=torch.int64).share_memory_()  # (epoch, first batch)
        self._words: WordTable | None = None

    def start_at(self, epoch: int, first_batch: int) -> None:
        """Make the next iteration epoch ``epoch`` from batch ``first_batch`` on, in every worker."""
        self._next_pass[0], self._next_pass[1] = epoch, first_batch

    @property
    def global_batch(self) -> int:
        return self.videos_per_rank * self.world_size

    def num_batches(self) -> int:
        return len(self.index) // self.global_batch

    def decode(self, position: int, epoch: int) -> dict[str, np.ndarray]:
        if self._words is None:
            self._words = read_words(self.store)
        shard = self.index.shard_paths[self.index.shard_of[position]]
        record = read_shard_video(shard, int(self.index.row_group_of[position]), DECODE_FIELDS)
        rng = np.random.default_rng([self.seed, epoch, int(position)])
        item = sample_video_clips(record, self._words, self.options, rng)
        item["video_index"] = np.int64(position)
        return item

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = get_worker_info()
        worker_id, num_workers = (0, 1) if worker is None else (worker.id, worker.num_workers)
        epoch, first_batch = (int(value) for value in self._next_pass)
        order = epoch_order(len(self.index), self.seed, epoch)
        for batch in range(first_batch + worker_id, self.num_batches(), num_workers):
            begin = batch * self.global_batch + self.rank * self.videos_per_rank
            positions = order[begin : begin + self.videos_per_rank]
            yield collate_videos([self.decode(int(p), epoch) for p in positions])


class TrainLoader:
    """Epoch-wise iterator over this rank's batches with a resumable position.

    ``for batch in loader`` yields the rest of the current epoch and then moves to the next epoch; the
    position advances as batches are handed out, so ``state_dict()`` taken after a training step resumes
    right after that step's batch.
    """

    def __init__(
        self,
        store: StorePath,
        options: ClipOptions,
        global_batch_videos: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        prefetch_factor: int = 2,
        pin_memory: bool = False,
        index: VideoIndex | None = None,
    ):
        if global_batch_videos % world_size:
            raise MCNError(
                f"batch of {global_batch_videos} videos does not split over {world_size} ranks; "
                "use a multiple of the number of processes"
            )
        self.index = index if index is not None else build_index(store)
        self.dataset = ClipBatches(
            self.index, store, options, global_batch_videos // world_size, rank, world_size, seed
        )
        if self.dataset.num_batches() == 0:
            raise MCNError(
                f"the store has {len(self.index)} videos with captions, fewer than one batch of "
                f"{global_batch_videos}; lower the batch size (--batch-videos) or add videos"
            )
        extra = {"prefetch_factor": prefetch_factor, "persistent_workers": True} if num_workers else {}
        self.dataloader = DataLoader(
            self.dataset,
            batch_size=None,
            num_workers=min(num_workers, self.dataset.num_batches()),  # more would have nothing to build
            pin_memory=pin_memory,
            **extra,
        )
        self.epoch = 0
        self.batches_done = 0  # of the current epoch

    @property
    def batches_per_epoch(self) -> int:
        return self.dataset.num_batches()

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.batches_done >= self.batches_per_epoch:
            self.epoch, self.batches_done = self.epoch + 1, 0
        self.dataset.start_at(self.epoch, self.batches_done)
        for batch in self.dataloader:  # the workers start on the first pass and stay for the next ones
            self.batches_done += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "seed": self.dataset.seed,
            "world_size": self.dataset.world_size,
            "num_videos": len(self.index),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in ("seed", "world_size", "num_videos"):
            mine = self.state_dict()[key]
            if int(state[key]) != mine:
                raise MCNError(
                    f"cannot resume the data order: the checkpoint has {key}={state[key]}, this run has {mine}; "
                    "resume with the same store, seed and number of processes"
                )
        self.epoch, self.batches_done = int(state["epoch"]), int(state["batches_done"])
