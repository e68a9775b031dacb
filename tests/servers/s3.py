"""A real S3 API server for tests: moto's server mode (``python -m moto.server``, the test extra's
``moto[server]``) on 127.0.0.1, spoken to over HTTP by boto3 as any S3 endpoint would be.

``moto_server`` is one server for the whole session and ``s3_bucket`` a fresh bucket in it for each
test; tests that stop the server, or make it check credentials, start their own ``MotoServer``.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

# The keys boto3 signs with when the test speaks to moto itself; moto takes any until told to
# check them (``check_credentials``).
ADMIN_KEYS = {"aws_access_key_id": "testing-admin", "aws_secret_access_key": "testing-admin-secret"}
_RUNNING = re.compile(r"Running on http://127\.0\.0\.1:(\d+)")
# werkzeug's access log line, which it colours by status.
_REQUEST = re.compile(r'"(?:\x1b\[[0-9;]*m)*(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/1\.1(?:\x1b\[[0-9;]*m)*" (\d+)')
_names = itertools.count()


@attrs.frozen
class Request:
    method: str
    path: str
    status: int


class MotoServer:
    """One moto server process; ``stop`` and ``start`` again keep its port (its buckets are lost:
    moto keeps them in memory). ``requests`` is its access log, as it answers them."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.port = 0
        self.env = env
        self.process: subprocess.Popen[str] | None = None
        self.requests: list[Request] = []
        self.admin_keys = ADMIN_KEYS  # what ``client`` signs with

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server (on its old port after a stop) and return once it listens."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
            env={**os.environ, **(self.env or {})})
        assert self.process.stdout is not None
        lines = []
        for line in self.process.stdout:  # werkzeug says where it listens, then logs each request
            lines.append(line)
            if match := _RUNNING.search(line):
                self.port = int(match[1])
                threading.Thread(target=self._log, args=(self.process.stdout,), daemon=True).start()
                return
        raise RuntimeError(f"moto did not start: {''.join(lines)}")

    def _log(self, stream: Any) -> None:
        for line in stream:  # read to the end, or a full pipe would stop the server
            if match := _REQUEST.search(line):
                self.requests.append(Request(match[1], match[2], int(match[3])))

    def stop(self) -> None:
        """Kill the server (SIGKILL: connections are cut) and wait until it is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def client(self, **keys: str) -> Any:
        """A boto3 S3 client of the server (with the admin keys unless others are given)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1", **(keys or self.admin_keys))

    def create_bucket(self) -> str:
        """A new, empty bucket; its name."""
        name = f"swarmreg-test-{next(_names)}"
        self.client().create_bucket(Bucket=name)
        return name

    def check_credentials(self) -> dict[str, str]:
        """Make moto check every later request's credentials (moto's IAM authentication); the keys
        of a new user allowed everything on S3, which the server then takes (and ``client`` signs
        with), and no others."""
        import boto3

        iam = boto3.client("iam", endpoint_url=self.endpoint_url, region_name="us-east-1", **ADMIN_KEYS)
        iam.create_user(UserName="swarmreg")
        iam.put_user_policy(UserName="swarmreg", PolicyName="s3", PolicyDocument=(
            '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'))
        key = iam.create_access_key(UserName="swarmreg")["AccessKey"]
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
        self.admin_keys = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
        return self.admin_keys

    def pending_uploads(self, bucket: str) -> list[dict[str, Any]]:
        """The bucket's multipart uploads begun and neither completed nor aborted."""
        uploads: list[dict[str, Any]] = self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return uploads

    def keys(self, bucket: str) -> dict[str, int]:
        """Every object of the bucket: key -> size."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server for the session, killed at its end."""
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_server: MotoServer) -> str:
    """A new bucket of the session's moto server."""
    return moto_server.create_bucket()
