"""One filesystem layer for every path of a store, a run or a benchmark: local, object store, or any fsspec URL.

A path is a local path (``str`` or :class:`~pathlib.Path`) or a URL string. The schemes :mod:`pyarrow.fs` knows
(``s3://``, ``gs://``, ``hdfs://``, …) go to pyarrow; any other scheme fsspec knows (``memory://``, or one whose
fsspec package is installed) goes to fsspec through pyarrow's adapter. Remote filesystems are configured the standard way of their service, never here: S3 by
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` (and the rest of the AWS
credential chain), Google Cloud Storage by its application default credentials.

Writes are atomic everywhere (:func:`atomic_write`): a local file is written under a temporary name in the same
folder, fsynced and renamed; an object is uploaded from a complete local spool file in one call, so that the
object store publishes it only as a whole (a completed single PUT or multipart upload). A killed writer leaves
a temporary file that :func:`remove_temporaries` clears, or an unfinished upload that no listing shows.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import re
import secrets
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs

from mcn.errors import MCNError

StorePath = str | Path
TEMPORARY_MARK = ".tmp-"  # a temporary file is ".<name>.tmp-<pid>-<random>"

_MANGLED_URL = re.compile(r"^[a-z][a-z0-9+.-]+:/[^/]")
_filesystems: dict[tuple[int, str, str], pafs.FileSystem] = {}


def is_remote(path: StorePath) -> bool:
    """Whether ``path`` is a URL of a remote filesystem (``file://`` URLs are local paths)."""
    text = str(path)
    if isinstance(path, PurePath) and _MANGLED_URL.match(text):
        raise MCNError(f"{text}: a URL made into a pathlib.Path loses its '//'; pass URLs as strings")
    return "://" in text and not text.startswith("file://")


def local_path(path: StorePath) -> Path:
    """A local path (``file://`` URLs included) as a :class:`Path`."""
    assert not is_remote(path), path
    text = str(path)
    return Path(text[len("file://") :] if text.startswith("file://") else text)


def join(root: StorePath, *parts: str) -> StorePath:
    """``root / part / …``: a :class:`Path` for a local root, a URL string for a remote one."""
    if not is_remote(root):
        return local_path(root).joinpath(*parts)
    return "/".join([str(root).rstrip("/"), *parts])


def name(path: StorePath) -> str:
    """The last component of a path or URL."""
    return str(path).rstrip("/").rsplit("/", 1)[-1] if is_remote(path) else local_path(path).name


def resolve(path: StorePath) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding ``path`` and the path on it (one filesystem per bucket and process)."""
    if not is_remote(path):
        return pafs.LocalFileSystem(), str(local_path(path).absolute())
    url = str(path)
    scheme, rest = url.split("://", 1)
    authority, _, key = rest.partition("/")
    cache_key = (os.getpid(), scheme, authority)  # a forked process makes its own clients
    filesystem = _filesystems.get(cache_key)
    if filesystem is None:
        filesystem = _open_filesystem(url)
        _filesystems[cache_key] = filesystem
    if isinstance(filesystem, pafs.PyFileSystem):  # fsspec: its own spelling of the path
        import fsspec

        return filesystem, fsspec.core.url_to_fs(url)[1]
    return filesystem, f"{authority}/{key}".rstrip("/")


def _open_filesystem(url: str) -> pafs.FileSystem:
    try:
        filesystem, _ = pafs.FileSystem.from_uri(url)
        return filesystem
    except pa.ArrowInvalid:
        pass  # a scheme pyarrow does not know: ask fsspec
    import fsspec

    try:
        fsspec_fs, _ = fsspec.core.url_to_fs(url)
    except (ValueError, ImportError) as error:
        raise MCNError(f"{url}: no filesystem for this URL ({error}); install its fsspec package") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec_fs))


class UnreadableFile(MCNError):
    """A local path that a no-follow open refuses: a symbolic link, a folder, a FIFO, a device, or a file the
    system will not open. ``reason`` is one line that completes ``f"{path} {reason}"``."""

    def __init__(self, path: StorePath, reason: str):
        super().__init__(f"{path} {reason}")
        self.path = path
        self.reason = reason


def _info(path: StorePath) -> pafs.FileInfo:
    filesystem, where = resolve(path)
    return filesystem.get_file_info(where)


def exists(path: StorePath) -> bool:
    """Whether a file, a folder or (object stores) any object under the prefix ``path`` exists."""
    return _info(path).type != pafs.FileType.NotFound


def lexists(path: StorePath) -> bool:
    """Like :func:`exists`, but a local symbolic link exists whatever it points to (it is not followed)."""
    return os.path.lexists(local_path(path)) if not is_remote(path) else exists(path)


def is_file(path: StorePath) -> bool:
    return _info(path).type == pafs.FileType.File


def is_dir(path: StorePath) -> bool:
    """A folder (a local link to one counts); on an object store, a prefix that holds objects, or a bucket."""
    return _info(path).type == pafs.FileType.Directory


def is_link(path: StorePath) -> bool:
    """Whether a local path is a symbolic link; object stores hold none."""
    return not is_remote(path) and local_path(path).is_symlink()


def relative(path: StorePath, root: StorePath) -> str:
    """``path`` below ``root`` as a '/'-separated relative path (``path`` must be below ``root``)."""
    if not is_remote(root):
        return local_path(path).relative_to(local_path(root)).as_posix()
    prefix = str(root).rstrip("/") + "/"
    assert str(path).startswith(prefix), (path, root)
    return str(path)[len(prefix) :]


def size(path: StorePath) -> int:
    info = _info(path)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"{path} is not a file")
    return int(info.size)


def modified_ns(path: StorePath) -> int | None:
    """A local file's modification time; None for remote files (asking would cost a request)."""
    return None if is_remote(path) else local_path(path).stat().st_mtime_ns


def file_stat(path: StorePath) -> tuple[int, int | None] | None:
    """Size and modification time (ns; None where the filesystem keeps none) of a file, or None when there is
    no file at ``path`` or it cannot be asked about (a denied or failed request: reading it will say why)."""
    try:
        info = _info(path)
    except OSError:
        return None
    if info.type != pafs.FileType.File:
        return None
    return int(info.size), info.mtime_ns


def list_files(folder: StorePath, pattern: str = "*", recursive: bool = False) -> list[StorePath]:
    """Files in ``folder`` (and its subfolders if ``recursive``) whose name matches ``pattern``, sorted.

    A folder that does not exist holds no files.
    """
    filesystem, where = resolve(folder)
    infos = filesystem.get_file_info(pafs.FileSelector(where, allow_not_found=True, recursive=recursive))
    relative = sorted(
        i.path[len(where) :].lstrip("/")
        for i in infos
        if i.type == pafs.FileType.File and fnmatch.fnmatchcase(i.base_name, pattern)
    )
    return [join(folder, *r.split("/")) for r in relative]


def total_bytes(folder: StorePath) -> int:
    """The size of every file below ``folder``; local links are counted as links, never followed."""
    if not is_remote(folder):
        total = 0
        for parent, _, files in os.walk(local_path(folder)):
            total += sum(os.lstat(os.path.join(parent, f)).st_size for f in files)
        return total
    filesystem, where = resolve(folder)
    infos = filesystem.get_file_info(pafs.FileSelector(where, allow_not_found=True, recursive=True))
    return sum(int(i.size) for i in infos if i.type == pafs.FileType.File)


def list_names(folder: StorePath) -> list[str]:
    """Names of everything directly in ``folder``, sorted: files, folders and (local) links, which are not
    followed; an object store's "folders" are the prefixes below it. A folder that does not exist holds none."""
    if not is_remote(folder):
        folder = local_path(folder)
        return sorted(os.listdir(folder)) if folder.is_dir() else []
    filesystem, where = resolve(folder)
    infos = filesystem.get_file_info(pafs.FileSelector(where, allow_not_found=True))
    return sorted(i.base_name for i in infos)


def open_input(path: StorePath, follow_links: bool = True) -> pa.NativeFile:
    """A random-access file: ``read_at(nbytes, offset)`` fetches only that range (one ranged GET remotely).

    With ``follow_links=False`` a local path must be a regular file itself: a symbolic link, a FIFO or a device
    raises :class:`UnreadableFile` without being followed or blocking (object stores hold no links). A missing
    file raises ``FileNotFoundError``.
    """
    if not follow_links and not is_remote(path):
        return _open_regular(local_path(path))
    filesystem, where = resolve(path)
    return filesystem.open_input_file(where)


def _open_regular(path: Path) -> pa.NativeFile:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnreadableFile(path, "is a symbolic link") from None
        raise UnreadableFile(path, f"cannot be opened ({error.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnreadableFile(path, "is not a regular file")
    return pa.PythonFile(os.fdopen(fd, "rb", buffering=0), mode="r")


def read_bytes(path: StorePath, follow_links: bool = True) -> bytes:
    with open_input(path, follow_links) as file:
        return file.read()


def remove(path: StorePath) -> None:
    """Delete a file if it exists."""
    if not is_remote(path):
        local_path(path).unlink(missing_ok=True)
        return
    filesystem, where = resolve(path)
    with contextlib.suppress(FileNotFoundError):
        filesystem.delete_file(where)


def remove_temporaries(folder: StorePath) -> list[str]:
    """Delete what killed writers left in ``folder`` (only local folders have any); returns their names."""
    if is_remote(folder) or not local_path(folder).is_dir():
        return []
    stray = [p for p in local_path(folder).iterdir() if p.name.startswith(".") and TEMPORARY_MARK in p.name]
    for path in stray:
        path.unlink(missing_ok=True)
    return [p.name for p in stray]


@contextlib.contextmanager
def atomic_write(path: StorePath) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` complete, or not at all (an exception or a kill publishes nothing).

    Local: a temporary file in the same folder (so that rename is atomic), fsynced, renamed over ``path``, and
    the folder fsynced. Remote: a local spool file (``TMPDIR``), uploaded in one call when complete; pyarrow's
    object stores (S3, GCS) publish it only when the upload completes, fsspec ones as their upload does.
    """
    remote = is_remote(path)
    if remote:
        folder = None
        fd, tmp = tempfile.mkstemp(prefix="mcn-upload-")
    else:
        folder = local_path(path).parent
        folder.mkdir(parents=True, exist_ok=True)
        tmp = str(folder / f".{name(path)}{TEMPORARY_MARK}{os.getpid()}-{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any file
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            if not remote:
                os.fsync(file.fileno())
        if remote:
            _upload(tmp, path)
        else:
            os.replace(tmp, path)
            _fsync_folder(folder)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _upload(local_file: str, path: StorePath) -> None:
    filesystem, where = resolve(path)
    # pyarrow's object streams publish whatever was written when they are closed, also by an exception, so
    # nothing may raise between opening the stream and its last byte: the whole memory-mapped spool goes in
    # one write call, with Ctrl-C (KeyboardInterrupt) held back until the upload is complete. A failed
    # upload request fails the close instead of completing the object.
    with (
        _interrupts_deferred(),
        pa.memory_map(local_file) as source,
        filesystem.open_output_stream(where) as sink,
    ):
        sink.write(source.read_buffer())


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) back until the block is done, then deliver it (only the main thread gets one)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy(source: StorePath, target: StorePath, chunk_bytes: int = 64 << 20) -> None:
    """Copy one file (either end may be remote); the target appears complete or not at all."""
    with open_input(source) as reader, atomic_write(target) as writer:
        while chunk := reader.read(chunk_bytes):
            writer.write(chunk)


def write_bytes(path: StorePath, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path) as file:
        file.write(data)


FETCH_REASONS = ("not_found", "denied", "timeout", "too_large", "error")
FETCH_CHUNK_BYTES = 8 << 20  # one request's worth: memory stays at a chunk, whatever the object's size


class FetchError(MCNError):
    """A remote file that cannot be read: ``reason`` is one of :data:`FETCH_REASONS`, ``detail`` one line."""

    def __init__(self, path: StorePath, reason: str, detail: str):
        assert reason in FETCH_REASONS, reason
        super().__init__(f"{path}: {reason}: {detail}")
        self.path = str(path)
        self.reason = reason
        self.detail = detail

    def __reduce__(self):
        return FetchError, (self.path, self.reason, self.detail)


def _fetch_error(path: StorePath, error: OSError) -> FetchError:
    text = " ".join(str(error).split())
    lowered = text.lower()
    if isinstance(error, FileNotFoundError):
        return FetchError(path, "not_found", "no such object")
    # pyarrow's S3 errors are plain OSErrors that name the AWS error (ACCESS_DENIED) or the HTTP status.
    if isinstance(error, PermissionError) or "access_denied" in lowered or "response code: 403" in lowered:
        return FetchError(path, "denied", text)
    if isinstance(error, TimeoutError) or "timed out" in lowered or "timeout" in lowered:
        return FetchError(path, "timeout", text)
    return FetchError(path, "error", text)


def _copy_within(path: StorePath, sink: BinaryIO, max_bytes: int, timeout_s: float) -> None:
    """Copy the file at ``path`` into ``sink`` in chunks; at most ``max_bytes``, and a stall of more than
    ``timeout_s`` with no byte arriving is a timeout. The copy runs in a helper thread, so that a hung request
    costs that thread, not the caller; the thread stops at its next chunk once the caller has given up."""
    state: dict = {"bytes": 0, "stop": False}

    def copy() -> None:
        try:
            filesystem, where = resolve(path)
            with filesystem.open_input_stream(where) as source:
                while not state["stop"] and (chunk := source.read(FETCH_CHUNK_BYTES)):
                    state["bytes"] += len(chunk)
                    if state["bytes"] > max_bytes:
                        state["error"] = FetchError(
                            path, "too_large", f"more than the {max_bytes} bytes allowed"
                        )
                        return
                    sink.write(chunk)
        except OSError as error:
            state["error"] = _fetch_error(path, error)
        except BaseException as error:  # handed to the caller, raised there
            state["error"] = error

    reader = threading.Thread(target=copy, name="mcn-fetch", daemon=True)
    reader.start()
    seen = -1
    while reader.is_alive():
        reader.join(timeout_s)
        if reader.is_alive() and state["bytes"] == seen:
            state["stop"] = True
            raise FetchError(path, "timeout", f"no data for {timeout_s:g} s")
        seen = state["bytes"]
    if "error" in state:
        raise state["error"]


def read_limited(path: StorePath, max_bytes: int, timeout_s: float) -> bytes:
    """The bytes of a (remote) file of at most ``max_bytes``, with no stall longer than ``timeout_s``; any
    problem is a :class:`FetchError`."""
    with tempfile.SpooledTemporaryFile(max_size=max_bytes + FETCH_CHUNK_BYTES) as sink:
        _copy_within(path, sink, max_bytes, timeout_s)
        sink.seek(0)
        return sink.read()


@contextlib.contextmanager
def fetch_to_temporary(path: StorePath, max_bytes: int, timeout_s: float) -> Iterator[Path]:
    """A local copy of a (remote) file, for readers that need a local path (decoders): a temporary file in
    ``TMPDIR`` with the file's extension, of at most ``max_bytes``, with no stall in the transfer longer than
    ``timeout_s``. The file is removed when the block ends, whatever ends it, a failed fetch included; any
    problem fetching is a :class:`FetchError`."""
    fd, tmp = tempfile.mkstemp(prefix="mcn-fetch-", suffix=os.path.splitext(name(path))[1])
    try:
        with os.fdopen(fd, "wb") as sink:
            _copy_within(path, sink, max_bytes, timeout_s)
        yield Path(tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
