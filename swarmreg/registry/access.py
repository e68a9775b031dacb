"""Who may do what: access rules per user and repository, and the check every proxy request passes
(basic credentials on each request, or Docker's bearer tokens)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs

from swarmreg.config import AccessRuleConfig
from swarmreg.errors import DENIED, UNAUTHORIZED, SwarmregError
from swarmreg.registry.auth import BasicAuth
from swarmreg.registry.tokens import Claims, Grant, TokenIssuer

ANONYMOUS = "anonymous"
ACTIONS = ("pull", "push", "delete")
CATALOG = Grant("registry", "catalog", ("*",))
# The admin API (/cmd/...): the scope a token needs, granted to users with the admin action.
ADMIN = Grant("registry", "admin", ("*",))


class Access:
    """Access rules, first match wins; without rules every signed-in user may do everything."""

    def __init__(self, rules: Sequence[AccessRuleConfig]) -> None:
        self.rules = [(rule.user, re.compile(rule.repositories), frozenset(rule.actions)) for rule in rules]

    def actions(self, user: str | None, repository: str) -> frozenset[str]:
        """The actions ``user`` (None: anonymous) may take on ``repository``."""
        if not self.rules:
            return frozenset(ACTIONS) if user is not None else frozenset()
        for who, pattern, actions in self.rules:
            if _applies(who, user) and pattern.fullmatch(repository):
                return actions
        return frozenset()

    def grant(self, user: str | None, wanted: Grant) -> Grant | None:
        """What of ``wanted`` (a requested scope) ``user`` gets, or None."""
        if wanted.type == "repository":
            allowed = [a for a in wanted.actions if a in self.actions(user, wanted.name)]
        elif wanted == CATALOG and self.may_list(user):
            allowed = ["*"]
        elif wanted == ADMIN and self.may_admin(user):
            allowed = ["*"]
        else:
            allowed = []
        return Grant(wanted.type, wanted.name, tuple(allowed)) if allowed else None

    def may_list(self, user: str | None) -> bool:
        """Whether ``user`` may ask for the catalog: anyone signed in, and anonymous requests when
        some rule lets them pull. Either way the catalog names only what the user may pull."""
        return user is not None or any(who == ANONYMOUS and "pull" in actions for who, _, actions in self.rules)

    def may_admin(self, user: str | None) -> bool:
        """Whether a rule for ``user`` grants the admin action (never without rules: the admin
        API is for those named, not for whoever may push)."""
        return any(_applies(who, user) and "admin" in actions for who, _, actions in self.rules)

    def lists_everything(self, user: str | None) -> bool:
        """Whether the rules let ``user`` pull every repository (the catalog needs no filter)."""
        if not self.rules:
            return user is not None
        # Only when the first rule for the user matches every name: an earlier rule that denies a
        # repository wins over a later ".*" one, so otherwise each repository is checked.
        first = next(((pattern, actions) for who, pattern, actions in self.rules if _applies(who, user)), None)
        return first is not None and first[0].pattern in (".*", ".+") and "pull" in first[1]


def _applies(who: str, user: str | None) -> bool:
    """Whether a rule for ``who`` covers ``user`` (None: anonymous; "*" is anyone signed in)."""
    return who == (user or ANONYMOUS) or (who == "*" and user is not None)


@attrs.frozen
class Principal:
    """Who a request runs as, and what else it may do (a cross-repository mount pulls the source)."""

    user: str | None
    access: Access | None = None  # the rules; None on an open registry
    claims: Claims | None = None  # with a token: what it allows (the rules then only filter lists)

    def may(self, needed: Grant) -> bool:
        """Whether the request may do ``needed``: its token says so, or the rules do."""
        if self.claims is not None:
            return self.claims.allows(needed)
        return self.access is None or self.access.grant(self.user, needed) == needed

    def may_pull(self, repository: str) -> bool:
        """Whether the rules let this user pull ``repository`` (what the catalog lists)."""
        return self.access is None or "pull" in self.access.actions(self.user, repository)

    @property
    def sees_everything(self) -> bool:
        """Whether the catalog needs no filtering for this user."""
        return self.access is None or self.access.lists_everything(self.user)


OPEN = Principal(None)


class Authorizer:
    """Decides each request: 401 with the challenge the client needs, 403, or the user (None when
    the registry is open)."""

    def __init__(self, basic: BasicAuth, access: Access, tokens: TokenIssuer | None, realm: str = "") -> None:
        self.basic = basic
        self.access = access
        self.tokens = tokens
        self.realm = realm

    @property
    def enabled(self) -> bool:
        return self.basic.enabled

    async def check(self, authorization: str | None, needed: Grant | None, host_url: str,
                    client: str = "") -> Principal:
        """Who the request runs as; ``needed`` is what it does (None: only sign-in, as ``/v2/``);
        ``client`` is the peer's address, whose failed sign-ins are counted."""
        if not self.enabled:
            return OPEN
        if self.tokens is None:
            if authorization is None and needed is not None:
                # No credentials: the rules for anonymous decide; when they deny, the 401 challenge
                # lets the client sign in (as docker does). /v2/ always challenges: docker login
                # needs the challenge to learn how to sign in.
                anonymous = Principal(None, self.access)
                if anonymous.may(needed):
                    return anonymous
                raise self.basic.refusal("authentication required")
            principal = Principal(await self.basic.user(authorization, client), self.access)
            if needed is not None and not principal.may(needed):
                raise SwarmregError(DENIED, detail={"scope": needed.scope()})
            return principal
        scheme, _, token = (authorization or "").partition(" ")
        claims = self.tokens.verify(token.strip()) if scheme.lower() == "bearer" else None
        if claims is None:
            raise self._challenge(needed, host_url, "authentication required")
        if needed is not None and not claims.allows(needed):
            raise self._challenge(needed, host_url, "insufficient scope", error="insufficient_scope")
        return Principal(claims.user, self.access, claims)

    def _challenge(self, needed: Grant | None, host_url: str, message: str, error: str = "") -> SwarmregError:
        assert self.tokens is not None
        parts = [f'realm="{self.realm or host_url.rstrip("/") + "/token"}"', f'service="{self.tokens.service}"']
        if needed is not None:
            parts.append(f'scope="{needed.scope()}"')
        if error:
            parts.append(f'error="{error}"')
        return SwarmregError(UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer " + ",".join(parts)})

    async def token(self, authorization: str | None, scopes: Sequence[Grant], client: str = "") -> tuple[str, int]:
        """The /token endpoint: check basic credentials (none: anonymous), grant what the rules allow."""
        assert self.tokens is not None
        user = await self.basic.user(authorization, client) if authorization else None
        # One grant per resource, with every action granted on it: repeated scopes do not grow
        # the token (which the client sends on every request).
        granted: dict[tuple[str, str], dict[str, None]] = {}
        for wanted in scopes:
            if (grant := self.access.grant(user, wanted)) is not None:
                granted.setdefault((grant.type, grant.name), {}).update(dict.fromkeys(grant.actions))
        return self.tokens.issue(user, [Grant(kind, name, tuple(actions)) for (kind, name), actions in granted.items()])
