"""Decoding in a child process that is killed when it stalls: frame windows stream back over a pipe.

A decoder inside the calling process cannot be stopped when it hangs on a broken file; a child process can. The
children come from a fork server that has imported decord (and compiled the block-mean kernel) and the parent's
main module once, so a video pays for a fork, not for the imports.

Protocol on one pipe: a small pickled header per window (start, the two array shapes), then the raw bytes of the
two arrays, which the parent reads with ``readv`` straight into the window's numpy arrays (no intermediate
buffers); at the end "done" with the child's CPU seconds, or an error. The parent raises
``DecodeError("timeout")`` when nothing arrives within ``config.timeout_s``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import select
import sys
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

import numpy as np

from mcn.extract.decode_types import DecodeConfig, DecodeError, DecoderUsage, FrameWindow, VideoInfo
from mcn.extract.decode_worker import limit_malloc_arenas

Source = Callable[[str, VideoInfo, DecodeConfig], Iterator[FrameWindow]]
_MAIN_LOCK = threading.Lock()


def iter_windows_in_child(
    path: str, info: VideoInfo, config: DecodeConfig, source: Source, usage: DecoderUsage | None = None
) -> Iterator[FrameWindow]:
    """Run ``source(path, info, config)`` in a child process and stream its windows back over a pipe.

    ``source`` must be picklable by reference (a function of an importable module, not of the main script); it
    is a parameter so that tests can substitute a decoder that hangs. ``usage`` receives the child's CPU seconds when the windows end.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["mcn.extract.decode_child", "decord"])  # imported once, not per video
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=run_child, args=(sender, path, info, config, source), daemon=True)
    with _main_script_hidden():
        child.start()
    sender.close()

    def receive():
        if not receiver.poll(config.timeout_s):
            raise DecodeError("timeout", f"no frames from the decoder within {config.timeout_s:g} s: {path}")
        try:
            return receiver.recv()
        except EOFError:
            raise _exited(child, path) from None

    try:
        while True:
            message = receive()
            if message[0] == "done":
                if usage is not None:
                    usage.cpu_s = message[1]
                return
            if message[0] == "error":
                raise DecodeError(message[1], message[2])
            _, start_s, shape_2d, shape_3d = message
            arrays = [np.empty(shape, dtype=np.uint8) for shape in (shape_2d, shape_3d)]
            for array in arrays:
                _read_into(receiver.fileno(), memoryview(array.reshape(-1)), config.timeout_s, child, path)
            yield FrameWindow(start_s=start_s, frames_2d_THWC=arrays[0], frames_3d_THWC=arrays[1])
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receiver.close()


@contextlib.contextmanager
def _main_script_hidden() -> Iterator[None]:
    """While a child starts, keep multiprocessing from telling it to re-import the parent's main script.

    A forkserver child runs the parent's ``__main__`` file again (as ``__mp_main__``) before its target; in a
    Ray worker that is Ray's worker module, about 0.5 CPU-seconds per video, more than decoding a short video.
    The fork server's own way to import it once (``set_forkserver_preload(["__main__"])``) does not pass the
    path on in Python 3.11. Nothing the child runs lives in ``__main__`` (``source`` must be importable).
    """
    main = sys.modules["__main__"]
    with _MAIN_LOCK:
        saved = {name: main.__dict__[name] for name in ("__spec__", "__file__") if name in main.__dict__}
        main.__spec__ = None
        main.__dict__.pop("__file__", None)
        try:
            yield
        finally:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


def _exited(child, path: str) -> DecodeError:
    child.join(5.0)
    return DecodeError("corrupt", f"the decoder exited with code {child.exitcode} on {path}")


def _read_into(fd: int, view: memoryview, timeout_s: float, child, path: str) -> None:
    """Fill ``view`` from the pipe, waiting at most ``timeout_s`` for each read."""
    filled = 0
    while filled < len(view):
        ready, _, _ = select.select([fd], [], [], timeout_s)
        if not ready:
            raise DecodeError("timeout", f"no frames from the decoder within {timeout_s:g} s: {path}")
        count = os.readv(fd, [view[filled:]])
        if count == 0:
            raise _exited(child, path)
        filled += count


def _write_all(fd: int, array: np.ndarray) -> None:
    view = memoryview(np.ascontiguousarray(array).reshape(-1))
    while len(view):
        view = view[os.write(fd, view) :]


def run_child(sender: Connection, path: str, info: VideoInfo, config: DecodeConfig, source: Source) -> None:
    """Child-process entry: stream ``source``'s windows as (header, 2D bytes, 3D bytes), then "done" or an error."""
    limit_malloc_arenas()
    try:
        for window in source(path, info, config):
            sender.send(("window", window.start_s, window.frames_2d_THWC.shape, window.frames_3d_THWC.shape))
            _write_all(sender.fileno(), window.frames_2d_THWC)
            _write_all(sender.fileno(), window.frames_3d_THWC)
        own = resource.getrusage(resource.RUSAGE_SELF)
        sender.send(("done", own.ru_utime + own.ru_stime))
    except DecodeError as error:
        sender.send(("error", error.reason, error.detail))
    except Exception as error:  # a decoder failure the source does not know; the parent records it as corrupt
        sender.send(("error", "corrupt", f"{path}: {type(error).__name__}: {error}"))
    finally:
        sender.close()
