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


class Access:
    """Access rules, first match wins; without rules every signed-in user may do everything."""

    def __init__(self, rules: Sequence[AccessRuleConfig]) -> None:
        self.rules = [(rule.user, re.compile(rule.repositories), frozenset(rule.actions)) for rule in rules]

    def actions(self, user: str | None, repository: str) -> frozenset[str]:
        """The actions ``user`` (None: anonymous) may take on ``repository``."""
        if not self.rules:
            return frozenset(ACTIONS) if user is not None else frozenset()
        for who, pattern, actions in self.rules:
            if (who == (user or ANONYMOUS) or (who == "*" and user is not None)) and pattern.fullmatch(repository):
                return actions
        return frozenset()

    def grant(self, user: str | None, wanted: Grant) -> Grant | None:
        """What of ``wanted`` (a requested scope) ``user`` gets, or None."""
        if wanted.type == "repository":
            allowed = [a for a in wanted.actions if a in self.actions(user, wanted.name)]
        elif wanted == CATALOG and user is not None and self.lists_everything(user):
            allowed = ["*"]
        else:
            allowed = []
        return Grant(wanted.type, wanted.name, tuple(allowed)) if allowed else None

    def lists_everything(self, user: str) -> bool:
        """The catalog names every repository, so only users who may pull them all see it."""
        return not self.rules or any(who in (user, "*") and pattern.pattern in (".*", ".+") and "pull" in actions
                                     for who, pattern, actions in self.rules)


@attrs.frozen
class Principal:
    """Who a request runs as, and what else it may do (a cross-repository mount pulls the source)."""

    user: str | None
    access: Access | None = None  # checked per request (basic); None with a token or an open registry
    claims: Claims | None = None

    def may(self, needed: Grant) -> bool:
        if self.claims is not None:
            return self.claims.allows(needed)
        return self.access is None or self.access.grant(self.user, needed) == needed


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

    def check(self, authorization: str | None, needed: Grant | None, host_url: str) -> Principal:
        """Who the request runs as; ``needed`` is what it does (None: only sign-in, as ``/v2/``)."""
        if not self.enabled:
            return OPEN
        if self.tokens is None:
            principal = Principal(self.basic.user(authorization), self.access)
            if needed is not None and not principal.may(needed):
                raise SwarmregError(DENIED, detail={"scope": needed.scope()})
            return principal
        scheme, _, token = (authorization or "").partition(" ")
        claims = self.tokens.verify(token.strip()) if scheme.lower() == "bearer" else None
        if claims is None:
            raise self._challenge(needed, host_url, "authentication required")
        if needed is not None and not claims.allows(needed):
            raise self._challenge(needed, host_url, "insufficient scope", error="insufficient_scope")
        return Principal(claims.user, claims=claims)

    def _challenge(self, needed: Grant | None, host_url: str, message: str, error: str = "") -> SwarmregError:
        assert self.tokens is not None
        parts = [f'realm="{self.realm or host_url.rstrip("/") + "/token"}"', f'service="{self.tokens.service}"']
        if needed is not None:
            parts.append(f'scope="{needed.scope()}"')
        if error:
            parts.append(f'error="{error}"')
        return SwarmregError(UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer " + ",".join(parts)})

    def token(self, authorization: str | None, scopes: Sequence[Grant]) -> tuple[str, int]:
        """The /token endpoint: check basic credentials (none: anonymous), grant what the rules allow."""
        assert self.tokens is not None
        user = self.basic.user(authorization) if authorization else None
        granted = [g for wanted in scopes if (g := self.access.grant(user, wanted)) is not None]
        return self.tokens.issue(user, granted)
