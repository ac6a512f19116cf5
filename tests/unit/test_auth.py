"""Credentials, WWW-Authenticate parsing and the token flow, against a fake HTTP function."""

import base64
import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from observe_rt.oci import auth
from observe_rt.oci.auth import AuthError, Authorizer, Credentials, parse_www_authenticate
from observe_rt.oci.hosts import RegistryHost

REGISTRY = RegistryHost("https", "registry.example")
MIRROR = RegistryHost("https", "mirror.example", mirror=True)
SCOPE = "repository:team/app:pull"
BEARER = 'Bearer realm="https://auth.example/token",service="registry.example",scope="{}"'


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class FakeHttp:
    """Records token requests and answers them from a list of (status, body)."""

    def __init__(self, *answers):
        self.answers = list(answers) or [(200, {"token": "t1", "expires_in": 300})]
        self.calls = []

    def __call__(self, method, url, headers, body, tls_host):
        self.calls.append({"method": method, "url": url, "headers": headers, "body": body})
        status, answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return status, {}, json.dumps(answer).encode()

    def query(self, index=-1) -> dict:
        return parse_qs(urlsplit(self.calls[index]["url"]).query)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/busybox:pull,push"',
            [("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                         "scope": "repository:library/busybox:pull,push"})],
        ),
        ('Basic realm="Registry Realm"', [("basic", {"realm": "Registry Realm"})]),
        ("basic realm=simple", [("basic", {"realm": "simple"})]),
        (
            'Basic realm="b", Bearer realm="https://t/x", error="invalid_token"',
            [("bearer", {"realm": "https://t/x", "error": "invalid_token"}),
             ("basic", {"realm": "b"})],
        ),
        ('Bearer realm="a \\"quoted\\" realm"', [("bearer", {"realm": 'a "quoted" realm'})]),
        ("Bearer", [("bearer", {})]),
        ("", []),
        ('Negotiate, Bearer realm="r"', [("bearer", {"realm": "r"}), ("negotiate", {})]),
    ],
)  # fmt: skip
def test_parse_www_authenticate(header, expected):
    challenges = parse_www_authenticate(header)
    assert [(c.scheme, c.params) for c in challenges] == expected


def test_several_header_lines_put_bearer_first():
    challenges = parse_www_authenticate(['Basic realm="x"', 'Bearer realm="y"'])
    assert [c.scheme for c in challenges] == ["bearer", "basic"]


def test_cri_auth_config_fields():
    provider = auth.from_auth_config({"username": "u", "password": "p"})
    assert provider("docker.io", "any.host") == Credentials("u", "p")
    encoded = base64.b64encode(b"user:pa:ss\x00").decode()
    assert auth.from_auth_config({"auth": encoded})("d", "h") == Credentials("user", "pa:ss")
    assert auth.from_auth_config({"identity_token": "r"})("d", "h").identity_token == "r"
    assert auth.from_auth_config({"registry_token": "t"})("d", "h").registry_token == "t"
    assert auth.from_auth_config({})("d", "h") is None
    assert auth.from_auth_config(None)("d", "h") is None
    with pytest.raises(AuthError, match="not base64 of user:password"):
        auth.from_auth_config({"auth": "!!!"})


def test_cri_server_address_limits_where_credentials_go():
    provider = auth.from_auth_config(
        {"username": "u", "password": "p", "server_address": "https://index.docker.io/v1/"}
    )
    assert provider("docker.io", "registry-1.docker.io") is not None
    assert provider("docker.io", "mirror.example") is None
    local = auth.from_auth_config(
        {"username": "u", "password": "p", "server_address": "127.0.0.1:5000"}
    )
    assert local("127.0.0.1:5000", "127.0.0.1:5000") is not None
    assert local("127.0.0.1:5000", "127.0.0.1:5001") is None


def test_docker_config_entries_belong_to_their_host(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({
        "auths": {
            "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
            "quay.io": {"username": "q", "password": "qp"},
            "ghcr.io": {"identitytoken": "refresh"},
            "empty.example": {},
        },
        "credHelpers": {"gcr.io": "gcloud"},  # not supported: no credentials
    }))  # fmt: skip
    provider = auth.from_docker_config(path)
    assert provider("docker.io", "registry-1.docker.io") == Credentials("hub", "pw")
    assert provider("quay.io", "quay.io") == Credentials("q", "qp")
    assert provider("ghcr.io", "ghcr.io").identity_token == "refresh"
    assert provider("docker.io", "mirror.example") is None  # a mirror needs its own entry
    assert provider("gcr.io", "gcr.io") is None
    assert provider("empty.example", "empty.example") is None


def test_chain_takes_the_first_provider_with_credentials():
    first = auth.from_auth_config({"username": "a", "password": "1", "server_address": "x.io"})
    second = auth.from_auth_config({"username": "b", "password": "2"})
    provider = auth.chain(None, first, second)
    assert provider("x.io", "x.io").username == "a"
    assert provider("y.io", "y.io").username == "b"


def test_credentials_never_show_secrets():
    text = repr(Credentials("user", "hunter2", "idtoken", "regtoken"))
    assert "user" in text and not any(s in text for s in ("hunter2", "idtoken", "regtoken"))


def test_bearer_token_is_fetched_with_service_scope_and_basic_credentials():
    http = FakeHttp()
    authorizer = Authorizer(auth.from_auth_config({"username": "u", "password": "p"}), http)
    answer = authorizer.on_unauthorized("registry.example", REGISTRY, SCOPE, [BEARER.format(SCOPE)])
    assert answer == "Bearer t1"
    assert http.calls[0]["method"] == "GET"
    assert http.calls[0]["headers"]["Authorization"] == basic("u", "p")
    assert http.query() == {"service": ["registry.example"], "scope": [SCOPE]}


def test_tokens_are_cached_per_scope_and_used_up_front():
    http = FakeHttp((200, {"token": "one"}), (200, {"access_token": "two"}))
    authorizer = Authorizer(None, http)
    assert authorizer.authorization("registry.example", REGISTRY, SCOPE) is None  # no challenge yet
    authorizer.on_unauthorized("registry.example", REGISTRY, SCOPE, [BEARER.format(SCOPE)])
    assert authorizer.authorization("registry.example", REGISTRY, SCOPE) == "Bearer one"
    assert len(http.calls) == 1
    other = "repository:team/other:pull"
    assert authorizer.authorization("registry.example", REGISTRY, other) == "Bearer two"
    assert http.query()["scope"] == [other]
    assert "Authorization" not in http.calls[-1]["headers"]  # anonymous


def test_challenge_scope_is_added_to_ours():
    http = FakeHttp()
    authorizer = Authorizer(None, http)
    wider = "repository:team/app:pull,push"
    authorizer.on_unauthorized("registry.example", REGISTRY, SCOPE, [BEARER.format(wider)])
    assert http.query()["scope"] == [SCOPE, wider]


def test_basic_challenge_answers_with_the_hosts_own_credentials():
    authorizer = Authorizer(auth.from_auth_config({"username": "u", "password": "p"}), FakeHttp())
    answer = authorizer.on_unauthorized("registry.example", REGISTRY, SCOPE, ['Basic realm="r"'])
    assert answer == basic("u", "p")
    assert authorizer.authorization("registry.example", REGISTRY, SCOPE) == basic("u", "p")
    assert authorizer.authorization("registry.example", MIRROR, SCOPE) is None  # not challenged


def test_basic_challenge_without_credentials_is_unauthenticated():
    authorizer = Authorizer(None, FakeHttp())
    with pytest.raises(AuthError, match="no credentials are configured") as raised:
        authorizer.on_unauthorized("registry.example", REGISTRY, SCOPE, ['Basic realm="r"'])
    assert raised.value.grpc_code == "UNAUTHENTICATED"


def test_unknown_scheme_is_refused():
    with pytest.raises(AuthError, match="unsupported authentication"):
        Authorizer(None, FakeHttp()).on_unauthorized("d", REGISTRY, SCOPE, ["Negotiate abc"])


def test_identity_token_uses_the_oauth_refresh_grant():
    http = FakeHttp((200, {"access_token": "oauth"}))
    authorizer = Authorizer(auth.from_auth_config({"identity_token": "refresh-me"}), http)
    answer = authorizer.on_unauthorized("registry.example", REGISTRY, SCOPE, [BEARER.format(SCOPE)])
    assert answer == "Bearer oauth"
    call = http.calls[0]
    assert call["method"] == "POST" and "Authorization" not in call["headers"]
    form = parse_qs(call["body"].decode())
    assert form["grant_type"] == ["refresh_token"] and form["refresh_token"] == ["refresh-me"]
    assert form["scope"] == [SCOPE] and form["service"] == ["registry.example"]


def test_registry_token_is_sent_as_it_is():
    http = FakeHttp()
    authorizer = Authorizer(auth.from_auth_config({"registry_token": "given"}), http)
    answer = authorizer.on_unauthorized("registry.example", REGISTRY, SCOPE, [BEARER.format(SCOPE)])
    assert answer == "Bearer given" and http.calls == []


def test_credentials_are_not_sent_to_a_plain_http_realm_on_another_host():
    creds = auth.from_auth_config({"username": "u", "password": "p"})
    challenge = 'Bearer realm="http://evil.example/token",service="s"'
    http = FakeHttp()
    with pytest.raises(AuthError, match="over plain HTTP; refused"):
        Authorizer(creds, http).on_unauthorized("registry.example", REGISTRY, SCOPE, [challenge])
    assert http.calls == []
    # Anonymous tokens may come from anywhere; loopback realms may be plain HTTP.
    Authorizer(None, http).on_unauthorized("registry.example", REGISTRY, SCOPE, [challenge])
    local = 'Bearer realm="http://127.0.0.1:9/token"'
    Authorizer(creds, http).on_unauthorized("registry.example", REGISTRY, SCOPE, [local])
    assert http.calls[-1]["headers"]["Authorization"] == basic("u", "p")


@pytest.mark.parametrize(
    ("status", "body", "code", "words"),
    [
        (401, {}, "UNAUTHENTICATED", "refused user 'u' (HTTP 401)"),
        (403, {}, "PERMISSION_DENIED", "HTTP 403"),
        (500, {}, "UNAVAILABLE", "answered HTTP 500"),
        (200, {"nothing": 1}, "UNAVAILABLE", "sent no token"),
    ],
)
def test_token_server_failures(status, body, code, words):
    authorizer = Authorizer(
        auth.from_auth_config({"username": "u", "password": "p"}), FakeHttp((status, body))
    )
    with pytest.raises(AuthError, match=re.escape(words)) as raised:
        authorizer.on_unauthorized("registry.example", REGISTRY, SCOPE, [BEARER.format(SCOPE)])
    assert raised.value.grpc_code == code


def test_bad_realm_is_refused():
    with pytest.raises(AuthError, match="invalid token realm"):
        Authorizer(None, FakeHttp()).on_unauthorized(
            "d", REGISTRY, SCOPE, ['Bearer realm="ftp://x"']
        )


def test_auth_config_in_proto_json_spelling():
    provider = auth.from_auth_config({"identityToken": "r", "serverAddress": "quay.io"})
    assert provider("quay.io", "quay.io").identity_token == "r"
    assert provider("docker.io", "registry-1.docker.io") is None
