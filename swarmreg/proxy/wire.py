"""The proxy's preheat contract: its endpoints, the job request's fields and limits, and how an
image list (ociregistry's format) and its references are read. Imported by the proxy's routes,
the preheat job, the daemon's ``--preload-images`` and ``swarmreg load``; free of any web framework.

An image list has one reference a line; blank lines and ``#`` comments (a line's rest after
``#`` at its start or after a space) are ignored. A reference whose first component names a
registry host (it has a dot or a colon, or is ``localhost``: docker's rule) is an upstream
image, kept under the repository ``<host[:port]>/<repo>`` (``cached_repository``); one without is
a repository of swarmreg's own, pushed to the proxy (``team/app:v1``), and, when the
configuration has a ``default_registry``, that registry's image of the same name if swarmreg
holds no repository of that name at all (the rule of registry reads, swarmreg.registry.addressing).
"""

from __future__ import annotations

import re

import attrs

from swarmreg.digest import Digest
from swarmreg.errors import BAD_REQUEST, TOO_LARGE, SwarmregError
from swarmreg.oci.names import parse_reference as parse_manifest_reference
from swarmreg.oci.names import validate_repository
from swarmreg.upstream.names import cached_repository, is_registry_host
from swarmreg.upstream.names import parse_reference as parse_docker_reference

# POST a job here; GET PREHEAT/<id> for its progress.
PREHEAT = "/preheat"
PREHEAT_ROUTE = "/preheat/<job_id>"
# A job id: 32 hex digits (128 random bits, so one user cannot guess another's job).
JOB_ID = re.compile(r"[0-9a-f]{32}")

# The request: {"images": [...], "platform": "os/arch[/variant]", "agents": N | "all"}.
FIELDS = frozenset({"images", "platform", "agents"})
ALL_AGENTS = "all"
# A job's request body is at most this long, and names at most MAX_IMAGES references, each at
# most MAX_REFERENCE characters (longer: 413 / 400, nothing started).
MAX_BODY = 1 << 20
MAX_IMAGES = 1000
MAX_REFERENCE = 512
MAX_AGENTS = 10_000

# A job's status in its progress document.
RUNNING, DONE, FAILED = "running", "done", "failed"

_PLATFORM = re.compile(r"([a-z0-9_.-]{1,64})/([a-z0-9_.-]{1,64})(?:/([a-z0-9_.-]{1,64}))?")


def job_path(job_id: str) -> str:
    """Where a job's progress is read."""
    return f"{PREHEAT}/{job_id}"


@attrs.frozen
class PlatformSpec:
    """A wanted platform, ``os/arch[/variant]``; without a variant any variant matches."""

    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join([self.os, self.architecture] + ([self.variant] if self.variant else []))

    def matches(self, os: str, architecture: str, variant: str | None) -> bool:
        """Whether an index entry of this os, architecture and variant is the one wanted."""
        return (os == self.os and architecture == self.architecture
                and (self.variant is None or variant == self.variant))


def parse_platform(text: str) -> PlatformSpec:
    """``linux/amd64`` or ``linux/arm64/v8``; ValueError otherwise."""
    match = _PLATFORM.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"platform must be os/arch[/variant] (e.g. linux/amd64), got {str(text)[:80]!r}")
    return PlatformSpec(match[1], match[2], match[3])


@attrs.frozen
class Target:
    """One image reference of a job: the repository and tag or digest it names, and for a bare
    name with ``default_registry`` set, that upstream's repository of the name (``fallback``),
    used only when swarmreg holds no repository of the name at all (as registry reads do)."""

    text: str
    repository: str
    reference: str
    fallback: str | None = None

    @property
    def repositories(self) -> tuple[str, ...]:
        """The repository the reference names, which a job needs pull on."""
        return (self.repository,)


def parse_image_reference(text: str, default_registry: str = "") -> Target:
    """Where image reference ``text`` is looked for (see the module's docstring); ValueError with
    the reason when it is malformed."""
    if not isinstance(text, str):
        raise ValueError("an image reference must be a string")
    if len(text) > MAX_REFERENCE:
        raise ValueError(f"an image reference is at most {MAX_REFERENCE} characters")
    if not text or text != text.strip():
        raise ValueError("an image reference must be non-empty, without surrounding spaces")
    first, slash, _ = text.partition("/")
    if slash and is_registry_host(first.partition("@")[0]):
        parsed = parse_docker_reference(text)  # ValueError on a malformed one
        repository = cached_repository(parsed.registry, parsed.repository)
        return Target(text, _checked(repository, text), _reference(parsed.digest, parsed.tag, text))
    rest, _, digest = text.partition("@")
    name, tag = rest, None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        name, tag = rest[:colon], rest[colon + 1:]
    reference = _reference(digest or None, tag, text)
    fallback = _checked(cached_repository(default_registry, name), text) if default_registry else None
    return Target(text, _checked(name, text), reference, fallback)


def _checked(repository: str, text: str) -> str:
    try:
        return validate_repository(repository)
    except SwarmregError:
        raise ValueError(f"invalid repository in image reference {text[:200]!r}") from None


def _reference(digest: str | None, tag: str | None, text: str) -> str:
    """What to resolve: the digest if given (docker's rule with both), else the tag, else latest."""
    try:
        if digest:
            return str(Digest.parse(digest))
        parsed = parse_manifest_reference("latest" if tag is None else tag)
    except SwarmregError:
        raise ValueError(f"invalid tag or digest in image reference {text[:200]!r}") from None
    return str(parsed)


def parse_image_list(text: str) -> list[tuple[int, str]]:
    """The references of an image list, with their line numbers (1-based)."""
    references = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        if stripped:
            references.append((number, stripped))
    return references


def read_image_list(text: str, default_registry: str = "", where: str = "image list") -> list[Target]:
    """Every reference of an image list, checked: ValueError naming ``where`` and the line of
    the first malformed one. Repeated references are kept once."""
    targets: dict[str, Target] = {}
    for number, reference in parse_image_list(text):
        try:
            targets.setdefault(reference, parse_image_reference(reference, default_registry))
        except ValueError as error:
            raise ValueError(f"{where} line {number}: {error}") from None
    return list(targets.values())


@attrs.frozen
class JobRequest:
    """A checked preheat request."""

    targets: tuple[Target, ...]
    platform: PlatformSpec | None = None
    agents: int | str | None = None  # a count, ALL_AGENTS, or None: the origin only
    # Fallback repositories the requester may not pull: a bare name is not looked up there.
    denied: frozenset[str] = frozenset()


def parse_job_request(body: object, default_registry: str = "") -> JobRequest:
    """The JSON body of ``POST /preheat``, checked; BAD_REQUEST (or TOO_LARGE for too many
    images) naming what is wrong. Repeated references are kept once."""
    if not isinstance(body, dict):
        raise SwarmregError(BAD_REQUEST, "the preheat request must be a JSON object")
    unknown = sorted(str(key)[:40] for key in body if key not in FIELDS)
    if unknown:
        raise SwarmregError(BAD_REQUEST, f"unknown field(s) in the preheat request: {', '.join(unknown[:5])}",
                            {"fields": unknown[:5], "known": sorted(FIELDS)})
    images = body.get("images")
    if not isinstance(images, list) or not images:
        raise SwarmregError(BAD_REQUEST, "images must be a non-empty list of image references")
    if len(images) > MAX_IMAGES:
        raise SwarmregError(TOO_LARGE, f"a preheat job names at most {MAX_IMAGES} images",
                            {"images": len(images), "limit": MAX_IMAGES})
    targets: dict[str, Target] = {}
    for position, image in enumerate(images):
        try:
            target = parse_image_reference(image, default_registry)
        except ValueError as error:
            raise SwarmregError(BAD_REQUEST, f"images[{position}]: {error}", {"index": position}) from None
        targets.setdefault(target.text, target)
    platform = body.get("platform")
    spec = None
    if platform is not None:
        try:
            spec = parse_platform(platform)
        except ValueError as error:
            raise SwarmregError(BAD_REQUEST, str(error)) from None
    return JobRequest(tuple(targets.values()), spec, parse_agents(body.get("agents")))


def parse_agents(value: object) -> int | str | None:
    """``agents``: None, a count from 1 to MAX_AGENTS, or ``"all"``; BAD_REQUEST otherwise."""
    if value is None or value == ALL_AGENTS:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_AGENTS:
        return value
    raise SwarmregError(BAD_REQUEST, f'agents must be a count from 1 to {MAX_AGENTS} or "all"')


# -- the admin API (swarmreg.proxy.admin; ociregistry's /cmd/...), for users with the admin action --

CMD_PRUNE = "/cmd/prune"  # DELETE
CMD_IMAGES = "/cmd/image/list"
CMD_BLOBS = "/cmd/blob/list"
CMD_MANIFESTS = "/cmd/manifest/list"
CMD_GC = "/cmd/gc"  # POST
# GET: the proxy and every member of the origin, tracker and index rings it uses, with their health:
# {"nodes": [{"role", "address", "state": UP | DOWN, "checked": ISO 8601 UTC | null, "failures",
# "reason": the last failure | null}]}, the proxy first (swarmreg.cluster.status, `swarmreg status`).
CMD_STATUS = "/cmd/status"
STATUS_COLUMNS = ("role", "address", "state", "checked", "failures", "reason")
UP, DOWN = "up", "down"
# Each endpoint's query parameters, ociregistry's names; any other is refused (400), so a
# misspelt dryRun cannot turn a dry run into a prune.
CMD_PARAMETERS = {
    CMD_PRUNE: frozenset({"type", "dur", "expr", "count", "dryRun"}),
    CMD_IMAGES: frozenset({"pattern", "digest", "count"}),
    CMD_BLOBS: frozenset({"substr", "count"}),
    CMD_MANIFESTS: frozenset({"pattern", "count"}),
    CMD_GC: frozenset({"dryRun"}),
    CMD_STATUS: frozenset(),
}
# Counts when none is given: a prune takes at most 5 manifests (ociregistry's API), a list 50.
PRUNE_COUNT = 5
LIST_COUNT = 50
JSON = "application/json"
TEXT = "text/plain"


def parse_flag(value: str | None, name: str) -> bool:
    """``dryRun``'s value as Go's strconv.ParseBool reads it (absent: false); ValueError otherwise."""
    if value is None:
        return False
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ValueError(f"{name}: expected true or false")
