"""One S3 bucket through boto3, whose blocking calls run in worker threads; what botocore raises
becomes a SwarmregError that names the bucket and the reason, never a credential or a key.

boto3 is imported in the first worker thread that needs it (it takes a fifth of a second, and
every command that reads the configuration imports the backend types); its client is made there
too, since resolving credentials from the environment may ask an instance-metadata endpoint.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import attrs
import trio

from swarmreg.errors import BACKEND_ERROR, BACKEND_UNAVAILABLE, SwarmregError
from swarmreg.redaction import secret_field
from swarmreg.sizes import ByteSize

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)
T = TypeVar("T")

MiB = 1 << 20
# S3's limits on a multipart upload: every part but the last at least 5 MiB, at most 5 GiB.
MIN_PART_SIZE = ByteSize(5 * MiB)
MAX_PART_SIZE = ByteSize(5 << 30)
# How long an upload that failed or was cancelled may spend telling S3 to drop its parts.
ABORT_DEADLINE = 30.0
# After S3 answered 404 for a key, the bucket itself is checked (a HEAD of a missing bucket is
# a plain 404 too) unless a call found the bucket this recently.
BUCKET_SEEN_FOR = 60.0
# Error codes S3 answers when it does not take the credentials, or does not allow the call.
_REFUSED = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken",
                      "InvalidToken", "TokenRefreshRequired", "AuthorizationHeaderMalformed",
                      "InvalidClientTokenId", "403"})
_BUSY = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500"})
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")
_PREFIX_PART = re.compile(r"[A-Za-z0-9!_.*'()-]+")
_ENDPOINT = re.compile(r"https?://[^\s/?#@]+(?:/[^\s?#]*)?")


def _bucket(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if not _BUCKET_NAME.fullmatch(value):
        raise ValueError(f"'bucket' must be an S3 bucket name (3 to 255 letters, digits, '.', '_' or '-'), "
                         f"got {value!r}")


def _prefix(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    parts = value.split("/") if value else []
    if any(not _PREFIX_PART.fullmatch(part) or part in (".", "..") for part in parts):
        raise ValueError("'prefix' must be key parts joined by '/' (letters, digits and !_.*'()-; no empty, "
                         f"'.' or '..' part, no leading or trailing '/'), got {value!r}")


def _endpoint(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if value and not _ENDPOINT.fullmatch(value):
        raise ValueError(f"'endpoint_url' must be an http:// or https:// URL without credentials, got {value!r}")


def _region(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_-]{0,64}", value):
        raise ValueError(f"'region' must be a region name such as 'eu-west-1', got {value!r}")


def _key_pair(instance: S3Options, _attribute: attrs.Attribute[str], _value: str) -> None:
    if bool(instance.access_key_id) != bool(instance.secret_access_key):
        raise ValueError("'access_key_id' and 'secret_access_key': set both or neither")
    if instance.session_token and not instance.access_key_id:
        raise ValueError("'session_token' goes with 'access_key_id' and 'secret_access_key'")
    if instance.access_key_id and instance.credentials_file:
        raise ValueError("'access_key_id' and 'credentials_file': set one of them, not both")


@attrs.frozen
class S3Options:
    """``[[backends]] type = "s3"``: the bucket, where in it, how to reach it and with which
    credentials (docs/storage.md: the key layout, the credentials' precedence)."""

    bucket: str = attrs.field(validator=_bucket)
    # Keys start with "<prefix>/" ("": at the bucket's root).
    prefix: str = attrs.field(default="", validator=_prefix)
    # "": AWS's endpoint for the region; else an S3-compatible server (MinIO, Ceph, moto).
    endpoint_url: str = attrs.field(default="", validator=_endpoint)
    # "": boto3's (AWS_REGION, AWS_DEFAULT_REGION, the shared config file, else us-east-1).
    region: str = attrs.field(default="", validator=_region)
    # "path": http://endpoint/bucket/key, as most S3-compatible servers want; "auto": botocore's choice.
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    # Blobs larger than this go up in parts of this size (multipart upload); reads are ranged GETs
    # of this size. One part is what an upload holds in memory.
    part_size: ByteSize = attrs.field(default=ByteSize(8 * MiB), validator=[
        attrs.validators.ge(MIN_PART_SIZE), attrs.validators.le(MAX_PART_SIZE)])
    # Calls to S3 at once (worker threads, and botocore's connection pool).
    connections: int = attrs.field(default=16, validator=[attrs.validators.ge(1), attrs.validators.le(256)])
    connect_timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    read_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    # Tries of each call (botocore's "standard" retry mode: a refused connection, a timeout, a 5xx).
    attempts: int = attrs.field(default=3, validator=[attrs.validators.ge(1), attrs.validators.le(20)])
    # Credentials, first set wins: these keys; a shared-credentials file (profile: `profile`, else
    # "default"); else boto3's chain (AWS_ACCESS_KEY_ID..., AWS_PROFILE or `profile`, ~/.aws, the
    # instance's role).
    access_key_id: str = secret_field(default="")
    secret_access_key: str = secret_field(default="", validator=_key_pair)
    session_token: str = secret_field(default="")
    credentials_file: str = ""
    profile: str = ""


class S3Bucket:
    """The bucket of ``options``: ``request`` runs one S3 operation in a worker thread (at most
    ``options.connections`` at once). Safe to share between tasks."""

    def __init__(self, options: S3Options) -> None:
        self.options = options
        self.name = options.bucket
        self.limiter = trio.CapacityLimiter(options.connections)
        self._client: S3Client | None = None
        self._lock = threading.Lock()
        self._bucket_seen = -math.inf

    async def request(self, operation: str, *, abandon: bool = True, **params: Any) -> dict[str, Any]:
        """The boto3 client's ``operation`` on this bucket with ``params``, in a worker thread; its
        answer. A 404 for the ``Key`` raises NotFound (once the bucket is known to exist).
        ``abandon``: as in ``run``."""
        key = params.get("Key", "")
        try:
            answer: dict[str, Any] = await self.run(
                f"{operation} {key}".rstrip(), lambda: getattr(self.client(), operation)(Bucket=self.name, **params),
                abandon=abandon)
        except NotFound:
            if key and trio.current_time() - self._bucket_seen > BUCKET_SEEN_FOR:
                await self._check_bucket()
            raise
        self._bucket_seen = trio.current_time()
        return answer

    async def run(self, what: str, work: Callable[[], T], *, abandon: bool = True) -> T:
        """``work()`` (blocking boto3 work: a call, reading a body) in a worker thread, at most
        ``options.connections`` at once; botocore's failures raised as SwarmregErrors and logged
        with ``what``. With ``abandon`` a cancelled call leaves its thread to finish (holding its
        place in the limiter until then), so a slow S3 does not hold up cancellation; without, it
        waits for the thread (at most the timeouts times the attempts): for the steps of a multipart
        upload, which must be over before the upload can be aborted for good."""
        try:
            return await trio.to_thread.run_sync(self._mapped, work, abandon_on_cancel=abandon, limiter=self.limiter)
        except NotFound:
            raise
        except SwarmregError as error:
            cause = error.__cause__ if error.__cause__ is not None else error.message
            log.warning("S3 bucket %s: %s failed: %s", self.name, what, cause)
            raise

    async def _check_bucket(self) -> None:
        """Raise BACKEND_ERROR if the bucket does not exist (S3's 404 for a key does not tell)."""
        try:
            await self.request("head_bucket")
        except NotFound:
            log.warning("S3 bucket %s does not exist", self.name)
            raise SwarmregError(BACKEND_ERROR, f"S3 bucket {self.name} does not exist") from None

    async def aclose(self) -> None:
        """Close the client's connections (not waiting for the limiter: its places may be held by
        threads left to time out on a hung S3)."""
        if self._client is not None:
            client, self._client = self._client, None
            await trio.to_thread.run_sync(client.close)

    def _mapped(self, work: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return work()
        except ClientError as error:
            raise self._client_error(error) from error
        except BotoCoreError as error:
            raise self._botocore_error(error) from error
        except OSError as error:  # urllib3 below botocore, reading a body (a reset connection)
            raise SwarmregError(BACKEND_UNAVAILABLE, f"S3 bucket {self.name}: the connection broke "
                                f"({type(error).__name__})") from error

    def client(self) -> S3Client:
        """The boto3 client, made on first use; blocking (run it in a worker thread)."""
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> S3Client:
        import boto3
        from botocore.config import Config

        options = self.options
        config = Config(
            connect_timeout=options.connect_timeout, read_timeout=options.read_timeout,
            retries={"max_attempts": options.attempts, "mode": "standard"},
            max_pool_connections=options.connections, s3={"addressing_style": options.addressing_style})
        session = boto3.session.Session(**self._credentials(), region_name=options.region or None)
        return session.client("s3", endpoint_url=options.endpoint_url or None, config=config)

    def _credentials(self) -> dict[str, Any]:
        """The boto3 Session arguments that choose the credentials (see S3Options)."""
        options = self.options
        if options.access_key_id:
            return {"aws_access_key_id": options.access_key_id, "aws_secret_access_key": options.secret_access_key,
                    "aws_session_token": options.session_token or None}
        if not options.credentials_file:
            return {"profile_name": options.profile or None}
        from botocore.credentials import SharedCredentialProvider

        path = os.path.expanduser(options.credentials_file)
        profile = options.profile or "default"
        try:
            with open(path, encoding="utf-8"):
                pass
        except OSError as error:
            log.error("S3 bucket %s: cannot read credentials_file %s: %s", self.name, path, error.strerror)
            raise SwarmregError(BACKEND_ERROR, f"S3 bucket {self.name}: its credentials_file cannot be read "
                                "(the log says why)") from None
        credentials = SharedCredentialProvider(creds_filename=path, profile_name=profile).load()
        if credentials is None:
            log.error("S3 bucket %s: credentials_file %s has no profile %r with aws_access_key_id and "
                      "aws_secret_access_key", self.name, path, profile)
            raise SwarmregError(BACKEND_ERROR, f"S3 bucket {self.name}: its credentials_file has no profile "
                                f"{profile!r} with keys")
        return {"aws_access_key_id": credentials.access_key, "aws_secret_access_key": credentials.secret_key,
                "aws_session_token": credentials.token}

    def _client_error(self, error: Any) -> SwarmregError:
        response = error.response
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = _code(response.get("Error", {}).get("Code", ""), status)
        if code in _NOT_FOUND:
            return NotFound(code)
        if code == "NoSuchBucket":
            return SwarmregError(BACKEND_ERROR, f"S3 bucket {self.name} does not exist")
        if code in _REFUSED:
            return SwarmregError(BACKEND_ERROR, f"S3 bucket {self.name} refused the credentials or the call ({code})")
        if code in _BUSY or status >= 500:
            return SwarmregError(BACKEND_UNAVAILABLE, f"S3 bucket {self.name}: the endpoint answered {code}")
        return SwarmregError(BACKEND_ERROR, f"S3 bucket {self.name}: the endpoint answered {code}")

    def _botocore_error(self, error: Exception) -> SwarmregError:
        from botocore import exceptions

        if isinstance(error, exceptions.NoCredentialsError | exceptions.PartialCredentialsError):
            return SwarmregError(BACKEND_ERROR, f"S3 bucket {self.name}: no credentials found (set access_key_id "
                                 "and secret_access_key, credentials_file, or AWS_ACCESS_KEY_ID and "
                                 "AWS_SECRET_ACCESS_KEY)")
        if isinstance(error, exceptions.ProfileNotFound):
            return SwarmregError(BACKEND_ERROR, f"S3 bucket {self.name}: profile {self.options.profile!r} is in no "
                                 "shared credentials or config file")
        if isinstance(error, exceptions.ReadTimeoutError):
            reason = f"no answer within read_timeout ({self.options.read_timeout:g} s)"
        elif isinstance(error, exceptions.ConnectTimeoutError):
            reason = f"no connection within connect_timeout ({self.options.connect_timeout:g} s)"
        elif isinstance(error, exceptions.EndpointConnectionError):
            reason = "cannot connect to the endpoint"
        elif isinstance(error, exceptions.ConnectionError | exceptions.ResponseStreamingError
                        | exceptions.IncompleteReadError):
            reason = "the connection broke"
        else:
            return SwarmregError(BACKEND_ERROR, f"S3 bucket {self.name}: {type(error).__name__}")
        return SwarmregError(BACKEND_UNAVAILABLE, f"S3 bucket {self.name}: {reason} "
                             f"(after {self.options.attempts} attempt(s))")


class NotFound(SwarmregError):
    """S3 answered 404 for the key: the bucket does not hold it (callers answer None)."""

    def __init__(self, code: str) -> None:
        super().__init__(BACKEND_ERROR, f"not found ({code})")


def _code(code: Any, status: int) -> str:
    """S3's error code as it may go into an answer: a short word (a server could send anything)."""
    text = str(code)
    return text if re.fullmatch(r"[A-Za-z0-9.]{1,64}", text) else str(status)
