"""The WWW-Authenticate parser the token flow relies on."""

from __future__ import annotations

from swarmreg.upstream.client import parse_challenge


def test_bearer_with_quoted_commas_and_escapes():
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:team/app:pull,push", error="insufficient_scope",note="a \\"quoted\\" word"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example.com/token", "service": "registry.example.com",
                      "scope": "repository:team/app:pull,push", "error": "insufficient_scope",
                      "note": 'a "quoted" word'}


def test_unquoted_values_spaces_and_case():
    scheme, params = parse_challenge('BEARER Realm=http://h/token , Service = reg ,scope="a:b:pull"')
    assert scheme == "bearer"
    assert params == {"realm": "http://h/token", "service": "reg", "scope": "a:b:pull"}


def test_basic_and_garbage():
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})
    assert parse_challenge("") == ("", {})
    assert parse_challenge('Bearer realm="unterminated') == ("bearer", {"realm": "unterminated"})
    assert parse_challenge("Bearer token68value, realm=x") == ("bearer", {"realm": "x"})
