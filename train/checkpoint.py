"""Checkpoints: one ``step-N/`` folder with everything needed to resume, and a ``latest`` pointer switched atomically.

Layout::

    RUN/checkpoints/
      step-000200/
        model.pt        the model's state dict (tensors only)
        trainer.pt      optimizer, scheduler, grad scaler, k-means (queue included), loader position, counters
        rng-rank-R.pt   each rank's Python / NumPy / torch / CUDA random states
        config.json     the resolved TrainConfig
        meta.json       format version, step, epoch
      latest            text file naming the newest complete step folder

Every ``.pt`` file holds only tensors and plain containers of numbers and strings, so everything loads with
``torch.load(weights_only=True)`` (:func:`mcn.train.tensor_files.load_tensor_file`: a file that does not is
refused in one line). A folder is written under a temporary name and renamed when complete, then ``latest`` is
replaced by rename, then folders beyond the newest ``keep_last`` are deleted.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mcn import storage
from mcn.configs import config_from_dict, config_to_dict, write_json_atomic
from mcn.errors import MCNError
from mcn.train.config import TrainConfig
from mcn.train.model import MCNModel, ModelConfig
from mcn.train.tensor_files import load_tensor_file

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"


def step_name(step: int) -> str:
    return f"step-{step:06d}"


def rng_state() -> dict[str, Any]:
    """This process's random states as tensors and plain containers."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    numpy = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy["bit_generator"],
            "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": numpy["pos"]},
            "has_gauss": numpy["has_gauss"],
            "gauss": numpy["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def staging_dir(run_dir: str | Path, step: int) -> Path:
    """The temporary folder a checkpoint is written into before :func:`publish` renames it."""
    return checkpoint_root(run_dir) / f".{step_name(step)}.tmp"


def write_rank_state(folder: Path, rank: int) -> None:
    torch.save(rng_state(), folder / f"rng-rank-{rank}.pt")


def write_main_state(
    folder: Path, model_state: dict, trainer_state: dict, config: dict, step: int, epoch: int
) -> None:
    torch.save(model_state, folder / "model.pt")
    torch.save(trainer_state, folder / "trainer.pt")
    write_json_atomic(folder / "config.json", config)
    write_json_atomic(folder / "meta.json", {"format_version": FORMAT_VERSION, "step": step, "epoch": epoch})


def publish(run_dir: str | Path, step: int, keep_last: int) -> Path:
    """Rename the staged folder to ``step-N``, point ``latest`` at it, delete folders beyond ``keep_last``."""
    root = checkpoint_root(run_dir)
    final = root / step_name(step)
    if final.exists():
        shutil.rmtree(final)
    staging_dir(run_dir, step).rename(final)
    storage.write_bytes(root / LATEST, f"{final.name}\n".encode())
    finished = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in finished[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete step folder of a run, or None when it has none."""
    root = checkpoint_root(run_dir)
    pointer = root / LATEST
    if not pointer.exists():
        return None
    folder = root / pointer.read_text().strip()
    return folder if (folder / "meta.json").exists() else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A step folder from a step folder, a run folder (its latest) or a run's checkpoints folder."""
    path = Path(path)
    if not path.exists():
        raise MCNError(f"checkpoint {path} does not exist")
    if (path / "meta.json").exists():
        return path
    for run_dir in (path, path.parent):
        found = latest_checkpoint(run_dir)
        if found is not None:
            return found
    raise MCNError(
        f"{path} holds no checkpoint (expected a step-N folder or a run folder with {CHECKPOINT_DIR}/{LATEST})"
    )


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MCNError(f"{path} is missing; the checkpoint folder is incomplete") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MCNError(f"{path} is not valid JSON; the checkpoint folder is damaged") from None
    if not isinstance(data, dict):
        raise MCNError(f"{path} does not hold a JSON object; the checkpoint folder is damaged")
    return data


def read_meta(folder: Path) -> dict:
    meta = _read_json(folder / "meta.json")
    if meta.get("format_version") != FORMAT_VERSION:
        raise MCNError(
            f"{folder} has checkpoint format {meta.get('format_version')}; this mcn reads {FORMAT_VERSION}"
        )
    return meta


def load_training_state(folder: Path, rank: int, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Everything a resumed run needs: model, trainer state, this rank's random states, meta and config."""
    meta = read_meta(folder)
    rng_file = folder / f"rng-rank-{rank}.pt"
    if not rng_file.exists():
        raise MCNError(
            f"{folder} has no random state for rank {rank}; resume with the same number of processes"
        )
    return {
        "model": load_tensor_file(folder / "model.pt", map_location),
        "trainer": load_tensor_file(folder / "trainer.pt", map_location),
        "rng": load_tensor_file(rng_file),
        "meta": meta,
        "config": _read_json(folder / "config.json"),
    }


def model_config_of(folder: Path) -> ModelConfig:
    config = _read_json(folder / "config.json")
    if not isinstance(config.get("model"), dict):
        raise MCNError(f"{folder / 'config.json'} has no model section; the checkpoint folder is damaged")
    return config_from_dict(ModelConfig, config["model"])


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[MCNModel, ModelConfig]:
    """A model in eval mode from a step folder, a run folder (its latest step) or a reference MCN ``.pth``."""
    path = Path(path)
    if path.is_file():
        model = MCNModel.load_reference_checkpoint(path)
    else:
        folder = resolve_checkpoint(path)
        read_meta(folder)
        state = load_tensor_file(folder / "model.pt")
        model = MCNModel(model_config_of(folder))
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError):
            raise MCNError(
                f"{folder / 'model.pt'} does not hold the weights of the model its config.json describes"
            ) from None
    return model.to(device).eval(), model.config


def save_model_only(model: MCNModel, folder: str | Path, config: dict) -> Path:
    """A step folder holding only weights and config (loadable by :func:`load_model`, not resumable)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "model.pt")
    write_json_atomic(folder / "config.json", config)
    write_json_atomic(
        folder / "meta.json", {"format_version": FORMAT_VERSION, "step": 0, "epoch": 0, "model_only": True}
    )
    return folder


def convert_checkpoint(source: str | Path, target: str | Path, to: str | None = None) -> str:
    """Convert between a reference MCN ``.pth`` state dict and an mcn step folder; returns the direction used."""
    source, target = Path(source), Path(target)
    direction = to or ("mcn" if source.is_file() else "reference")
    if direction not in ("reference", "mcn"):
        raise MCNError(f"--to must be 'reference' or 'mcn', got {direction!r}")
    model, _ = load_model(source)
    if direction == "reference":
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.reference_state_dict(), target)
    else:
        save_model_only(model, target, config_to_dict(TrainConfig(model=model.config)))
    return direction
