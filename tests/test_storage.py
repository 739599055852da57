"""The filesystem layer: local paths, s3:// on a real S3-compatible server, fsspec URLs; atomic writes."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pyarrow as pa
import pytest

from mcn import storage
from mcn.configs import write_json_atomic
from mcn.errors import MCNError


@pytest.fixture
def spool(tmp_path, monkeypatch):
    """Uploads spool here, so that a test can see that none is left behind."""
    folder = tmp_path / "spool"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture(params=["local", "s3", "memory"])
def root(request, tmp_path):
    """A place for files: a local folder, a prefix in a fresh bucket, or an fsspec in-memory URL."""
    if request.param == "local":
        return tmp_path / "files"
    if request.param == "s3":
        return request.getfixturevalue("s3_bucket") + "/some/prefix"
    return f"memory://mcn-test-{os.getpid()}-{time.monotonic_ns()}/prefix"


def test_paths_join_and_name_the_same_way_everywhere(tmp_path):
    assert storage.join(tmp_path, "a", "b.json") == tmp_path / "a" / "b.json"
    assert storage.join("s3://bucket/prefix/", "a", "b.json") == "s3://bucket/prefix/a/b.json"
    assert storage.name("s3://bucket/prefix/a/b.json") == "b.json" and storage.name(tmp_path / "x") == "x"
    assert storage.is_remote("gs://bucket/x") and not storage.is_remote(tmp_path)
    assert (
        not storage.is_remote(f"file://{tmp_path}") and storage.local_path(f"file://{tmp_path}") == tmp_path
    )


def test_write_list_read_and_remove(root, spool):
    storage.write_bytes(storage.join(root, "b.bin"), b"bee")
    storage.write_bytes(storage.join(root, "a.bin"), b"a")
    storage.write_bytes(storage.join(root, "sub", "c.txt"), b"sea")
    write_json_atomic(storage.join(root, "d.json"), {"x": 1})
    names = [storage.name(p) for p in storage.list_files(root, "*.bin")]
    assert names == ["a.bin", "b.bin"], "sorted, only the pattern, no subfolders"
    assert [storage.name(p) for p in storage.list_files(root, recursive=True)] == [
        "a.bin",
        "b.bin",
        "d.json",
        "c.txt",
    ]
    assert storage.list_files(storage.join(root, "nothing-here")) == []
    assert storage.read_bytes(storage.join(root, "sub", "c.txt")) == b"sea"
    assert json.loads(storage.read_bytes(storage.join(root, "d.json"))) == {"x": 1}
    assert storage.size(storage.join(root, "b.bin")) == 3
    assert storage.exists(root) and storage.is_file(storage.join(root, "a.bin"))
    assert not storage.is_file(storage.join(root, "sub")) and not storage.exists(storage.join(root, "zz"))
    with storage.open_input(storage.join(root, "b.bin")) as file:
        assert file.read_at(2, 1) == b"ee", "ranged read"
    storage.copy(storage.join(root, "b.bin"), storage.join(root, "copy.bin"))
    assert storage.read_bytes(storage.join(root, "copy.bin")) == b"bee"
    storage.remove(storage.join(root, "a.bin"))
    storage.remove(storage.join(root, "a.bin"))  # a missing file is no error
    assert not storage.exists(storage.join(root, "a.bin"))
    assert list(spool.iterdir()) == []
    assert storage.list_names(root) == ["b.bin", "copy.bin", "d.json", "sub"], "folders too"
    assert storage.read_bytes(storage.join(root, "b.bin"), follow_links=False) == b"bee"
    assert storage.lexists(storage.join(root, "b.bin")) and not storage.lexists(storage.join(root, "zz"))


def test_no_follow_reads_refuse_links_fifos_and_folders(tmp_path):
    (tmp_path / "file").write_bytes(b"data")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    assert storage.read_bytes(tmp_path / "link") == b"data", "a plain read follows links"
    assert storage.lexists(tmp_path / "dangling") and not storage.exists(tmp_path / "dangling")
    assert storage.list_names(tmp_path) == ["dangling", "fifo", "file", "folder", "link"]
    for name, reason in [
        ("link", "is a symbolic link"),
        ("dangling", "is a symbolic link"),
        ("fifo", "is not a regular file"),  # and does not block waiting for a writer
        ("folder", "is not a regular file"),
    ]:
        with pytest.raises(storage.UnreadableFile, match=reason) as error:
            storage.read_bytes(tmp_path / name, follow_links=False)
        assert error.value.reason == reason
    with pytest.raises(FileNotFoundError):
        storage.open_input(tmp_path / "missing", follow_links=False)


def test_an_exception_mid_write_publishes_nothing(root, spool):
    target = storage.join(root, "shard.parquet")
    storage.write_bytes(target, b"old complete content")
    with pytest.raises(RuntimeError), storage.atomic_write(target) as file:
        file.write(b"half of the new")
        raise RuntimeError("writer failed")
    assert storage.read_bytes(target) == b"old complete content", "the old file is untouched"
    with pytest.raises(RuntimeError), storage.atomic_write(storage.join(root, "new.parquet")) as file:
        file.write(b"half")
        raise RuntimeError("writer failed")
    assert not storage.exists(storage.join(root, "new.parquet"))
    assert [storage.name(p) for p in storage.list_files(root)] == ["shard.parquet"], "no temporary visible"
    assert list(spool.iterdir()) == [], "the upload spool is removed too"


def test_local_files_are_as_readable_as_any_other(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    storage.write_bytes(tmp_path / "x.json", b"{}")
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~umask


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from mcn import storage
    with storage.atomic_write(sys.argv[1]) as file:
        file.write(b"x" * (1 << 20))
        file.flush()
        print("writing", flush=True)
        time.sleep(60)
    """
)


def test_a_killed_local_writer_leaves_only_a_temporary_that_cleanup_removes(tmp_path):
    target = tmp_path / "shards" / "shard-000000.parquet"
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert not target.exists()
    leftovers = list(target.parent.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".shard-000000.parquet.tmp-")
    assert storage.list_files(target.parent) == [leftovers[0]], "listing shows the temporary file..."
    assert storage.list_files(target.parent, "shard-*.parquet") == [], "...but never under a shard name"
    assert storage.remove_temporaries(target.parent) == [leftovers[0].name]
    assert list(target.parent.iterdir()) == []


class StallingProxy:
    """A TCP proxy to the S3 server that stops forwarding uploads after ``limit`` bytes (a hung upload)."""

    def __init__(self, server_url: str, limit: int):
        host, port = server_url.removeprefix("http://").split(":")
        self.upstream, self.limit, self.forwarded = (host, int(port)), limit, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stalled = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            client, _ = self.listener.accept()
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source, target, upload):
        while data := source.recv(1 << 16):
            if upload:
                self.forwarded += len(data)
                if self.forwarded > self.limit:
                    self.stalled.set()
                    time.sleep(3600)
            target.sendall(data)


@pytest.mark.slow
def test_a_writer_killed_mid_upload_publishes_nothing(s3_bucket, s3_server, tmp_path):
    import boto3

    proxy = StallingProxy(s3_server, limit=12 << 20)  # a part or two of a 40 MB upload gets through
    target = f"{s3_bucket}/store/shards/shard-000000.parquet"
    script = textwrap.dedent(
        """
        import sys
        from mcn import storage
        with storage.atomic_write(sys.argv[1]) as file:
            file.write(b"x" * (40 << 20))
        """
    )
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url, "TMPDIR": str(tmp_path)}
    writer = subprocess.Popen([sys.executable, "-c", script, target], env=env)
    assert proxy.stalled.wait(timeout=120), "the upload never started"
    time.sleep(0.5)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    client = boto3.client("s3")
    bucket = s3_bucket.removeprefix("s3://")
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0, "no object, partial or not"
    assert not storage.exists(target)
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["Key"] for u in uploads] == ["store/shards/shard-000000.parquet"], "it was killed mid-upload"


def test_unknown_schemes_are_a_clear_error():
    with pytest.raises(MCNError, match="no filesystem for this URL"):
        storage.read_bytes("nosuchscheme://bucket/x")


def test_remote_reads_are_ranged(s3_bucket):
    data = bytes(range(256)) * 4096  # 1 MiB
    storage.write_bytes(f"{s3_bucket}/blob", data)
    with storage.open_input(f"{s3_bucket}/blob") as file:
        assert file.size() == len(data)
        assert file.read_at(16, 1000) == data[1000:1016]
        file.seek(len(data) - 10)
        assert file.read_buffer(10) == pa.py_buffer(data[-10:])


class InterruptedWhileUploading:
    """A filesystem whose uploads get a Ctrl-C right after they start."""

    def __init__(self, filesystem):
        self.filesystem = filesystem

    def open_output_stream(self, where):
        stream = self.filesystem.open_output_stream(where)
        signal.raise_signal(signal.SIGINT)
        return stream


def test_ctrl_c_during_an_upload_comes_after_it(ctrl_c_delivered, s3_bucket, monkeypatch):
    target = f"{s3_bucket}/manifest.json"
    real_resolve = storage.resolve

    def resolve(path):
        filesystem, where = real_resolve(path)
        return InterruptedWhileUploading(filesystem), where

    monkeypatch.setattr(storage, "resolve", resolve)
    with pytest.raises(KeyboardInterrupt), storage.atomic_write(target) as file:
        file.write(b'{"complete": true}')
    monkeypatch.undo()
    assert storage.read_bytes(target) == b'{"complete": true}', "the object is whole, not empty"


def test_urls_made_into_paths_are_refused():
    from pathlib import Path

    with pytest.raises(MCNError, match="pass URLs as strings"):
        storage.read_bytes(Path("s3://bucket/store/manifest.json"))


def test_a_fetched_copy_is_local_whole_and_removed_afterwards(s3_bucket, spool):
    data = os.urandom(3 << 20)
    storage.write_bytes(f"{s3_bucket}/videos/v.mp4", data)
    with storage.fetch_to_temporary(f"{s3_bucket}/videos/v.mp4", max_bytes=4 << 20, timeout_s=30) as local:
        assert local.parent == spool and local.suffix == ".mp4"
        assert local.read_bytes() == data
    assert list(spool.iterdir()) == []
    with pytest.raises(RuntimeError), storage.fetch_to_temporary(f"{s3_bucket}/videos/v.mp4", 4 << 20, 30):
        raise RuntimeError("the decoder failed")
    assert list(spool.iterdir()) == [], "removed when the block fails too"
    assert storage.read_limited(f"{s3_bucket}/videos/v.mp4", 4 << 20, 30) == data


def test_failed_fetches_name_their_reason_and_leave_nothing(s3_bucket, s3_deny_reads, spool):
    storage.write_bytes(f"{s3_bucket}/videos/big.mp4", b"x" * 1000)
    storage.write_bytes(f"{s3_bucket}/private/v.mp4", b"secret")
    s3_deny_reads(s3_bucket, "private/")
    cases = [
        (f"{s3_bucket}/videos/missing.mp4", "not_found"),
        ("s3://mcn-test-no-such-bucket/v.mp4", "not_found"),
        (f"{s3_bucket}/private/v.mp4", "denied"),
        (f"{s3_bucket}/videos/big.mp4", "too_large"),
    ]
    for url, reason in cases:
        with pytest.raises(storage.FetchError) as error, storage.fetch_to_temporary(url, 999, 30):
            raise AssertionError("the block must not run")
        assert error.value.reason == reason, (url, error.value)
        with pytest.raises(storage.FetchError, match=reason):
            storage.read_limited(url, 999, 30)
        assert list(spool.iterdir()) == [], url
    assert storage.file_stat(f"{s3_bucket}/private/v.mp4")[0] == 6
    assert storage.file_stat(f"{s3_bucket}/videos/missing.mp4") is None


class StalledStream:
    """An input stream that sends one chunk, then hangs."""

    def __init__(self):
        self.reads = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self, nbytes):
        self.reads += 1
        if self.reads > 1:
            time.sleep(3600)
        return b"first chunk"


class StallingFilesystem:
    def open_input_stream(self, where):
        return StalledStream()


def test_a_stalled_fetch_is_a_timeout(spool, monkeypatch):
    monkeypatch.setattr(storage, "resolve", lambda path: (StallingFilesystem(), "bucket/v.mp4"))
    with (
        pytest.raises(storage.FetchError) as error,
        storage.fetch_to_temporary("s3://bucket/v.mp4", 1 << 20, 0.3),
    ):
        raise AssertionError("the block must not run")
    assert error.value.reason == "timeout" and "no data for 0.3 s" in error.value.detail
    assert list(spool.iterdir()) == []


def _lock_record(url: str) -> dict:
    import boto3

    bucket, _, key = url[len("s3://") :].partition("/")
    return json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def _put_lock(url: str, record: dict) -> None:
    import boto3

    bucket, _, key = url[len("s3://") :].partition("/")
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=json.dumps(record).encode())


def _takes_the_lock(url: str, field: str, expected: object) -> None:
    """This process takes the object lock at ``url``, whose record then says ``field`` = ``expected``."""
    lock = storage.acquire_lock(url, "busy")
    try:
        assert _lock_record(url)[field] == expected
    finally:
        lock.release()


@pytest.mark.parametrize("where", ["local", "bucket"])
def test_one_writer_holds_a_lock_and_the_next_gets_it_after_release(where, tmp_path, request):
    path = tmp_path / ".lock" if where == "local" else f"{request.getfixturevalue('s3_bucket')}/store/.lock"
    first = storage.acquire_lock(path, "busy: try later")
    with pytest.raises(storage.LockBusy, match="busy: try later"):
        storage.acquire_lock(path, "busy: try later")
    first.check()
    first.release()
    second = storage.acquire_lock(path, "busy: try later")
    second.release()
    if where == "bucket":
        assert not storage.exists(path), "a released object lock is deleted"


def test_an_object_lock_of_an_ended_process_is_taken_over_at_once(s3_bucket):
    url = f"{s3_bucket}/store/.lock"
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    holder = {**storage._this_process(), "pid": ended.pid, "pid_started": time.time(), "lease_s": 3600}
    ended.wait()
    _put_lock(url, holder)
    _takes_the_lock(url, "pid", os.getpid())


def test_an_object_lock_of_another_machine_waits_for_its_lease(s3_bucket):
    url = f"{s3_bucket}/store/.lock"
    elsewhere = {"host": "other-node", "boot_id": "x", "pid": 1, "pid_started": 0.0, "lease_s": 1.0}
    _put_lock(url, elsewhere)
    with pytest.raises(storage.LockBusy, match="held by process 1 on other-node"):
        storage.acquire_lock(url, "busy")
    time.sleep(2.5)  # the bucket's clock counts whole seconds
    _takes_the_lock(url, "host", socket.gethostname())


def test_an_object_lock_is_renewed_and_knows_when_it_was_taken_over(s3_bucket):
    url = f"{s3_bucket}/store/.lock"
    lock = storage.acquire_lock(url, "busy", lease_s=0.4)
    try:
        first = _lock_record(url)["written"]
        time.sleep(0.6)
        assert _lock_record(url)["written"] > first, "the heartbeat rewrites the lock"
        lock.check()
        _put_lock(url, {"host": "other-node", "pid": 1, "lease_s": 60})  # another writer took it over
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not lock._lost:
            time.sleep(0.05)
        with pytest.raises(MCNError, match="taken over by another writer"):
            lock.check()
    finally:
        lock.release()
    assert _lock_record(url)["host"] == "other-node", "a lost lock is not deleted by its old holder"


def test_filesystems_without_exclusive_create_cannot_be_locked():
    with pytest.raises(MCNError, match="no exclusive create"):
        storage.acquire_lock("memory://bucket/store/.lock", "busy")


def test_of_writers_racing_for_an_object_lock_exactly_one_gets_it(s3_bucket):
    url = f"{s3_bucket}/store/.lock"
    start, results = threading.Barrier(6), []

    def race() -> None:
        start.wait()
        try:
            results.append(storage.acquire_lock(url, "busy"))
        except storage.LockBusy:
            results.append(None)

    threads = [threading.Thread(target=race) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    held = [lock for lock in results if lock is not None]
    assert len(results) == 6 and len(held) == 1, results
    held[0].release()
