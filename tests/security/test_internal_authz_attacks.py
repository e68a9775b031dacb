"""Issue 11 attacked again (points 1, 2, 6, 9, 10): what a careless or hostile client broke.

Each test here failed before its fix; docs/security.md ("Issue 11 attacked, second round") says
what broke and why it no longer does.
"""

from __future__ import annotations

import json

import pytest

from swarmreg.config import ConfigError, load_config


@pytest.mark.parametrize("secret", ["a-secret-pasted-with-a-newline\n", " leading-space", "trailing-space ",
                                    "two words", "tab\there", "sécret-non-ascii", "nul\0byte"])
def test_a_secret_no_header_can_carry_is_refused_at_load(secret: str) -> None:
    """Such a secret started the daemon, then every internal write failed: httpx refuses the header
    (a space at either end, a control character, non-ASCII), or the server, which strips it, never
    matched it, so every push through the proxy was a 500 or a 401."""
    with pytest.raises(ConfigError) as refused:
        load_config(None, [f"cluster.secret={json.dumps(secret)}"])  # JSON's escapes are TOML's
    assert "cluster.secret" in str(refused.value) and "printable ASCII" in str(refused.value)
    assert secret.strip() not in str(refused.value), "the refusal does not quote the secret"


def test_printable_secrets_load() -> None:
    for secret in ("0123abcdef" * 6, "base64+/=_-.~!#$%&'*^`|", ""):
        assert load_config(None, [f"cluster.secret={json.dumps(secret)}"]).cluster.secret == secret
