"""Decoding in a child process that is killed when it stalls: frame windows stream back over a pipe.

A decoder inside the calling process cannot be stopped when it hangs on a broken file; a child process can. The
children come from a fork server that has imported decord once, so a video pays for a fork, not for the imports.
The child sends each window as a small header and the raw bytes of its two arrays, then "done" or an error; the
parent fills each window straight from the pipe and raises ``DecodeError("timeout")`` when nothing arrives within
``config.timeout_s``.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

import numpy as np

from mcn.extract.decode_types import DecodeConfig, DecodeError, FrameWindow, VideoInfo
from mcn.extract.decode_worker import limit_malloc_arenas

Source = Callable[[str, VideoInfo, DecodeConfig], Iterator[FrameWindow]]


def iter_windows_in_child(
    path: str, info: VideoInfo, config: DecodeConfig, source: Source
) -> Iterator[FrameWindow]:
    """Run ``source(path, info, config)`` in a child process and stream its windows back over a pipe.

    ``source`` must be picklable by reference (a module-level function); it is a parameter so that tests can
    substitute a decoder that hangs.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["mcn.extract.decode_child", "decord"])  # imported once, not per video
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=run_child, args=(sender, path, info, config, source), daemon=True)
    child.start()
    sender.close()

    def receive(timeout_s: float, into: bytearray | None = None):
        if not receiver.poll(timeout_s):
            raise DecodeError("timeout", f"no frames from the decoder within {timeout_s:g} s: {path}")
        try:
            return receiver.recv_bytes_into(into) if into is not None else receiver.recv()
        except EOFError:
            child.join(5.0)
            raise DecodeError("corrupt", f"the decoder exited with code {child.exitcode} on {path}") from None

    try:
        while True:
            message = receive(config.timeout_s)
            if message[0] == "done":
                return
            if message[0] == "error":
                raise DecodeError(message[1], message[2])
            _, start_s, shape_2d, shape_3d = message
            arrays = []
            for shape in (shape_2d, shape_3d):
                buffer = bytearray(int(np.prod(shape)))
                receive(config.timeout_s, into=buffer)
                arrays.append(np.frombuffer(buffer, dtype=np.uint8).reshape(shape))
            yield FrameWindow(start_s=start_s, frames_2d_THWC=arrays[0], frames_3d_THWC=arrays[1])
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receiver.close()


def run_child(sender: Connection, path: str, info: VideoInfo, config: DecodeConfig, source: Source) -> None:
    """Child-process entry: stream ``source``'s windows as (header, 2D bytes, 3D bytes), then "done" or an error."""
    limit_malloc_arenas()
    try:
        for window in source(path, info, config):
            sender.send(("window", window.start_s, window.frames_2d_THWC.shape, window.frames_3d_THWC.shape))
            sender.send_bytes(np.ascontiguousarray(window.frames_2d_THWC).reshape(-1))
            sender.send_bytes(np.ascontiguousarray(window.frames_3d_THWC).reshape(-1))
        sender.send(("done",))
    except DecodeError as error:
        sender.send(("error", error.reason, error.detail))
    except Exception as error:  # a decoder failure the source does not know; the parent records it as corrupt
        sender.send(("error", "corrupt", f"{path}: {type(error).__name__}: {error}"))
    finally:
        sender.close()
