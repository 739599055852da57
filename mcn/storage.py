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
:func:`move` renames a local file; on an object store it copies the object (server side), then deletes it.

:func:`acquire_lock` is an exclusive lock for one writer of a folder: ``flock`` on a local file, or on S3 an
object created with a conditional write (``If-None-Match: *``) and kept alive by a heartbeat (see
:class:`ObjectLock`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import fnmatch
import io
import json
import logging
import os
import re
import secrets
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePath
from typing import BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs

from mcn.errors import MCNError

logger = logging.getLogger(__name__)

StorePath = str | Path
TEMPORARY_MARK = ".tmp-"  # a temporary file is ".<name>.tmp-<pid>-<random>"

_MANGLED_URL = re.compile(r"^[a-z][a-z0-9+.-]+:/[^/]")
_filesystems: dict[tuple[int, str, str], pafs.FileSystem] = {}


# The object-store settings a process on another machine needs to reach the same buckets: values, not paths (a
# variable naming a file, AWS_CA_BUNDLE or AWS_SHARED_CREDENTIALS_FILE, names one on this machine; each node
# keeps its own). Jobs pass the set ones on to their workers on other nodes.
STORE_ENV_VARS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


def store_env() -> dict[str, str]:
    """This process's :data:`STORE_ENV_VARS` that are set."""
    return {name: os.environ[name] for name in STORE_ENV_VARS if name in os.environ}


def cache_folder() -> Path:
    """The local folder for caches (assembled models, search indexes of read-only stores): ``$MCN_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/mcn``, else ``~/.cache/mcn`` (an empty variable counts as unset)."""
    if os.environ.get("MCN_CACHE_DIR"):
        return Path(os.environ["MCN_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "mcn"


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


def move(source: StorePath, target: StorePath) -> None:
    """Move a file (both paths on one filesystem). Local: a rename of the entry itself, so a link is moved, not
    followed. Object store: a server-side copy, then the source is deleted (a kill between the two leaves both)."""
    if not is_remote(source):
        os.rename(local_path(source), local_path(target))
        return
    filesystem, where = resolve(source)
    _, target_where = resolve(target)
    filesystem.copy_file(where, target_where)
    filesystem.delete_file(where)


# ---- one writer at a time -----------------------------------------------------------------------------------
LOCK_LEASE_S = 120.0  # an object lock whose heartbeat is older than this is taken over


class LockBusy(MCNError):
    """The lock is held by another live writer; ``holder`` is what that writer recorded (may be empty)."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


class FileLock:
    """``flock`` on a local lock file, held until :meth:`release` (the system drops it when the process ends)."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    def check(self) -> None:
        """A local lock cannot be lost while it is held."""

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def check_lockable(path: StorePath) -> None:
    """Raise unless :func:`acquire_lock` can lock ``path``: a local path or an ``s3://`` URL."""
    if is_remote(path) and not str(path).startswith("s3://"):
        raise MCNError(
            f"{path}: this filesystem offers no exclusive create, which a writer's lock needs; write to a "
            "local folder or an s3:// bucket (then copy the result, e.g. with `mcn store copy`)"
        )


def acquire_lock(path: StorePath, busy: str, lease_s: float = LOCK_LEASE_S) -> FileLock | ObjectLock:
    """Take the exclusive lock ``path`` (a local file or an S3 object), or raise :class:`LockBusy` with the
    message ``busy`` when another writer holds it. A local lock file is never followed through a link."""
    check_lockable(path)
    if is_remote(path):
        return ObjectLock(str(path), busy, lease_s)
    path = local_path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise MCNError(
                f"{path} is a symbolic link; a store holds no links: remove it and rerun"
            ) from None
        raise MCNError(f"cannot open the lock file {path} ({error.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise MCNError(f"{path} is not a regular file; remove it and rerun")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockBusy(busy, {}) from None
    return FileLock(path, fd)


def _this_process() -> dict:
    import socket

    import psutil

    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            boot_id = file.read().strip()
    except OSError:
        boot_id = ""
    return {
        "host": socket.gethostname(),
        "boot_id": boot_id,
        "pid": os.getpid(),
        "pid_started": psutil.Process().create_time(),
    }


def _process_ended(holder: dict) -> bool:
    """Whether ``holder`` names a process of this machine (same host and boot) that no longer runs."""
    import psutil

    here = _this_process()
    if not holder.get("boot_id") or (holder.get("host"), holder.get("boot_id")) != (
        here["host"],
        here["boot_id"],
    ):
        return False
    try:
        return abs(psutil.Process(int(holder["pid"])).create_time() - float(holder["pid_started"])) > 0.01
    except psutil.NoSuchProcess:
        return True
    except (KeyError, TypeError, ValueError, psutil.Error):
        return False


class ObjectLock:
    """An exclusive lock in an S3 bucket: the lock object is created only if absent (a conditional PUT,
    ``If-None-Match: *``), so exactly one of two racing writers gets it. It records its holder (host, boot,
    process) and a heartbeat thread rewrites it every ``lease_s / 4`` (``If-Match`` its last ETag).

    A lock left behind is taken over (``If-Match`` its ETag, so again by one writer only) when its process has
    ended on this machine, or when the bucket's clock says it has not been rewritten for ``lease_s``: a killed
    writer elsewhere delays the next one by at most the lease. A writer whose lock was taken over (it stalled
    for longer than the lease) is told so by :meth:`check` and must stop writing.
    """

    def __init__(self, url: str, busy: str, lease_s: float = LOCK_LEASE_S):
        import boto3

        self.url, self.lease_s = url, lease_s
        self.bucket, _, self.key = url[len("s3://") :].partition("/")
        self._client = boto3.client("s3", region_name=os.environ.get("AWS_REGION") or None)
        self._record = {**_this_process(), "token": secrets.token_hex(16), "lease_s": lease_s}
        self._etag = self._create(busy)
        self._lost = False
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="mcn-lock-heartbeat", daemon=True)
        self._heartbeat.start()

    def _put(self, **condition: str) -> str:
        body = json.dumps({**self._record, "written": time.time()}).encode()
        return self._client.put_object(Bucket=self.bucket, Key=self.key, Body=body, **condition)["ETag"]

    def _create(self, busy: str) -> str:
        from botocore.exceptions import ClientError

        try:
            return self._put(IfNoneMatch="*")
        except ClientError as error:
            if not _precondition_failed(error):
                raise MCNError(f"cannot take the lock {self.url} ({_client_error(error)})") from None
        try:
            found = self._client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as error:
            raise MCNError(f"cannot read the lock {self.url} ({_client_error(error)}); rerun") from None
        try:
            holder = json.loads(found["Body"].read())
            holder = holder if isinstance(holder, dict) else {}
        except ValueError:
            holder = {}
        server_now = found["ResponseMetadata"]["HTTPHeaders"].get("date")
        age = _age_s(found["LastModified"], server_now)
        lease = float(holder.get("lease_s") or self.lease_s)
        ended = _process_ended(holder)
        who = f"process {holder.get('pid')} on {holder.get('host')}" if holder else "an unknown writer"
        if not (ended or age > lease):
            raise LockBusy(
                f"{busy} (the lock {self.url} is held by {who}, last renewed {age:.0f} s ago; a lock that is "
                f"not renewed for {lease:.0f} s is taken over)",
                holder,
            )
        try:
            etag = self._put(IfMatch=found["ETag"])
        except ClientError as error:
            if _precondition_failed(error):  # another writer took it over first
                raise LockBusy(f"{busy} (the lock {self.url} was just taken by another writer)", {}) from None
            raise MCNError(f"cannot take the lock {self.url} ({_client_error(error)})") from None
        logger.warning(
            "took over the lock %s of %s (%s)",
            self.url,
            who,
            "its process has ended" if ended else f"not renewed for {age:.0f} s",
        )
        return etag

    def _beat(self) -> None:
        from botocore.exceptions import ClientError

        while not self._stop.wait(self.lease_s / 4):
            try:
                self._etag = self._put(IfMatch=self._etag)
            except ClientError as error:
                if _precondition_failed(error) or error.response.get("Error", {}).get("Code") == "NoSuchKey":
                    self._lost = True
                    logger.error("the lock %s was taken over by another writer", self.url)
                    return
                logger.warning("could not renew the lock %s (%s); retrying", self.url, _client_error(error))
            except Exception as error:  # a network failure: try again at the next beat
                logger.warning("could not renew the lock %s (%s); retrying", self.url, error)

    def check(self) -> None:
        """Raise when another writer has taken the lock over."""
        if self._lost:
            raise MCNError(
                f"the lock {self.url} was taken over by another writer (this one stalled for more than "
                f"{self.lease_s:.0f} s); stopped without writing more"
            )

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._heartbeat.join()
        if self._lost:
            return
        from botocore.exceptions import ClientError

        try:
            self._client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self._etag)
        except ClientError as error:
            if _precondition_failed(error):
                return  # no longer ours
            with contextlib.suppress(Exception):  # a store without conditional deletes
                self._client.delete_object(Bucket=self.bucket, Key=self.key)
        except Exception as error:  # left behind: taken over once its process has ended or its lease ran out
            logger.warning("could not remove the lock %s (%s)", self.url, error)


def _precondition_failed(error: Exception) -> bool:
    response = getattr(error, "response", {}) or {}
    return response.get("Error", {}).get("Code") in (
        "PreconditionFailed",
        "ConditionalRequestConflict",
    ) or response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412)


def _client_error(error: Exception) -> str:
    response = getattr(error, "response", {}) or {}
    details = response.get("Error", {})
    return f"{details.get('Code', type(error).__name__)}: {details.get('Message', error)}"


def _age_s(last_modified, server_date: str | None) -> float:
    """Seconds between an object's modification and the server's clock (this machine's clock without one)."""
    from email.utils import parsedate_to_datetime

    now = parsedate_to_datetime(server_date).timestamp() if server_date else time.time()
    return max(0.0, now - last_modified.timestamp())


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


def write_csv(path: StorePath, rows: Iterable[Sequence[object]]) -> None:
    """Write ``rows`` (the header first) to ``path`` as a UTF-8 CSV file, atomically."""
    text = io.StringIO(newline="")
    csv.writer(text).writerows(rows)
    write_bytes(path, text.getvalue().encode("utf-8"))


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
