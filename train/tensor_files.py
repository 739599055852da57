"""Reading ``.pt`` / ``.pth`` files safely: tensors and plain containers only, anything else refused in one line.

Every file this project reads with ``torch.load`` (step-folder checkpoints, released MCN state dicts) goes
through :func:`load_tensor_file`, which loads with ``weights_only=True``, so a pickle that would run code is never
executed. A file that is not such a safe load, or that is truncated, raises :class:`mcn.errors.MCNError` with one
line naming the file; PyTorch's own message (which suggests turning the safety off) is not passed on.
"""

from __future__ import annotations

import logging
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from mcn.errors import MCNError

logger = logging.getLogger(__name__)


def load_tensor_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; an unsafe, damaged or foreign file is an MCNError."""
    path = Path(path)
    if not path.is_file():
        raise MCNError(f"{path} does not exist or is not a file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError:
            raise MCNError(
                f"refusing {path}: it is not a safe load (it holds objects other than tensors and plain "
                "containers, possibly code, or is not a PyTorch file); use a plain state dict of tensors"
            ) from None
        except (RuntimeError, EOFError, ValueError, OSError) as error:
            reason = type(error).__name__ + (f": {error.strerror}" if isinstance(error, OSError) else "")
            raise MCNError(f"cannot read {path}: truncated or not a PyTorch file ({reason})") from None
    for warning in caught:
        logger.warning("%s: %s", path, warning.message)
    return data
