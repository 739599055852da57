"""Settings and fixtures for the whole test session."""

import json
import os
import signal
import socket
import uuid

import pytest

# Every Ray the tests start (local `ray.init`, `ray start --head` clusters, `ray job submit`) runs without token
# authentication: a process caches the token of the first Ray it meets, and the default token file in ~/.ray is
# shared with every other Ray on the machine, so mixing authenticated and unauthenticated clusters in one pytest
# process makes actors die at start. The test clusters listen on 127.0.0.1 only.
os.environ["RAY_AUTH_MODE"] = "disabled"

AWS_SETTINGS_IGNORED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION")


@pytest.fixture(scope="session")
def s3_server() -> str:
    """A real S3-compatible server (moto) on 127.0.0.1 for the test session; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket on the test server, the standard AWS_* variables pointing at it: its ``s3://`` URL.

    The variables are set in ``os.environ``, so processes the test starts reach the same bucket.
    """
    import boto3  # comes with moto; creates the bucket independently of the code under test

    for name in AWS_SETTINGS_IGNORED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "mcn-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "mcn-test-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    bucket = f"mcn-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}"


def deny_s3(bucket_url: str, prefix: str, action: str) -> None:
    """A bucket policy on the test server that refuses ``action`` (``s3:GetObject``: reads, HEAD still
    answers; ``s3:PutObject``: uploads, each part of one) on the objects below ``prefix``."""
    import boto3

    bucket = bucket_url.removeprefix("s3://")
    statement = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": action,
        "Resource": f"arn:aws:s3:::{bucket}/{prefix}*",
    }
    policy = {"Version": "2012-10-17", "Statement": [statement]}
    boto3.client("s3").put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


@pytest.fixture
def s3_deny_reads():
    """``s3_deny_reads(bucket_url, prefix)``: the test server refuses reads of the objects below ``prefix``."""
    return lambda bucket_url, prefix: deny_s3(bucket_url, prefix, "s3:GetObject")


@pytest.fixture
def s3_deny_writes():
    """``s3_deny_writes(bucket_url, prefix)``: the test server refuses uploads below ``prefix``."""
    return lambda bucket_url, prefix: deny_s3(bucket_url, prefix, "s3:PutObject")


@pytest.fixture
def ctrl_c_delivered():
    """SIGINT handled as in an interactive shell, by this process and the processes it starts, also where the
    suite itself runs with SIGINT ignored (as anything started with ``&`` from a script does): the tests of
    Ctrl-C need it to arrive."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
