"""Fuzz target: registry auth challenges and token answers (oci/auth.py).

A registry's 401 carries WWW-Authenticate challenges; the Authorizer answers them, fetching a
bearer token from the realm the challenge names. Both the challenge and the token server's
answer are hostile here, and so are the credentials (a docker config.json or a CRI AuthConfig).
Documented errors: AuthError (an ObserveRtError).

The security property (CVE-2020-15157 class): credentials go to the realm only over HTTPS or to
the registry itself or a loopback address; never in the clear to a foreign host.
"""

from __future__ import annotations

import json
import sys
from urllib.parse import urlsplit

from tests.fuzz import harness

with harness.instrumented():
    from observe_rt.errors import ObserveRtError
    from observe_rt.oci import auth
    from observe_rt.oci.hosts import RegistryHost, is_loopback

SECRET = "s3cr3t-pw"
DOCKER_CONFIG = {
    "auths": {
        "registry.test:5000": {"auth": "dXNlcjpzM2NyM3QtcHc="},  # user:s3cr3t-pw
        "https://index.docker.io/v1/": {"username": "user", "password": SECRET},
        "other.test": {"identitytoken": SECRET},
    }
}
CHALLENGES = [
    'Bearer realm="https://auth.test/token",service="registry.test",scope="repository:a:pull"',
    'Bearer realm="http://evil.test/token",service="x"',
    'Basic realm="registry", Bearer realm="http://127.0.0.1:5001/token"',
    'Bearer realm="http://registry.test:5000/t", error="invalid_token"',
]
ANSWERS = [b'{"token": "t", "expires_in": 300}', b'{"access_token": "a"}', b"[]", b"{"]


def one_input(data: bytes) -> None:
    fdp = harness.provider(data)
    host = RegistryHost(
        fdp.PickValueInList(["http", "https"]),
        fdp.PickValueInList(["registry.test:5000", "127.0.0.1:5000", "docker.io"]),
    )
    status = fdp.PickValueInList([200, 200, 401, 403, 500])
    answer = fdp.PickValueInList(ANSWERS) if fdp.ConsumeBool() else fdp.ConsumeBytes(200)
    try:
        credentials = _credentials(fdp)
    except ObserveRtError:
        return
    header = fdp.PickValueInList(CHALLENGES) if fdp.ConsumeBool() else ""
    header += fdp.ConsumeUnicodeNoSurrogates(300)
    sent = []

    def http(method, url, headers, body, tls_host):
        sent.append((url, json.dumps(headers) + repr(body)))
        return status, {}, answer

    authorizer = auth.Authorizer(credentials, http)
    try:
        authorizer.on_unauthorized("registry.test:5000", host, "repository:a:pull", [header])
        authorizer.authorization("registry.test:5000", host, "repository:b:pull")
    except ObserveRtError:
        pass
    for url, request in sent:
        _check_no_leak(url, request, host)


def _credentials(fdp):
    """A docker config or a CRI AuthConfig, both possibly malformed, chained as pulls do."""
    config = harness.mutate_json(DOCKER_CONFIG, fdp, 3)
    cri_auth = harness.mutate_json({"username": "user", "password": SECRET}, fdp, 2)
    providers = []
    if isinstance(config, dict):
        providers.append(auth.from_docker_config(config))
    if isinstance(cri_auth, dict):
        providers.append(auth.from_auth_config(cri_auth))
    return auth.chain(*providers)


def _check_no_leak(url: str, request: str, host: RegistryHost) -> None:
    parts = urlsplit(url)
    dialled = parts.netloc.rpartition("@")[2]
    trusted = parts.scheme == "https" or dialled == host.host or is_loopback(dialled)
    leaked = SECRET in request or "Basic " in request
    if leaked and not trusted:
        raise AssertionError(f"credentials sent in the clear to {url!r}: {request}")


if __name__ == "__main__":
    harness.main("auth", one_input, [c.encode() for c in CHALLENGES])
    sys.exit(0)
