"""The registry client against Debian's docker-registry, a token server and a flaky proxy.

Every registry, proxy and token server listens on 127.0.0.1; hosts.toml files written here always
name a loopback `server`, so no request can leave the machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from observe_rt.oci import auth, media
from observe_rt.oci.registry import Descriptor, RegistryClient, RegistryError, RetryPolicy
from tests.support import images
from tests.support.proxy import Fault, FlakyProxy
from tests.support.registry import (
    RunningRegistry,
    TokenServer,
    closed_port_url,
    htpasswd_auth,
    running_registry,
    tls_files,
)

FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)
USERS = {"alice": "wonderland"}


@dataclass
class World:
    tmp: Path
    plain: RunningRegistry
    empty: RunningRegistry
    basic: RunningRegistry
    token: RunningRegistry
    tokens: TokenServer
    busybox: images.Image
    busybox_docker: images.Image
    multiarch: images.Image
    multiarch_docker: images.Image
    no_media_type: images.Image


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("registries")
    with contextlib.ExitStack() as stack:
        plain = stack.enter_context(running_registry(tmp))
        built = {
            "test/busybox": images.busybox_image(),
            "library/busybox": images.busybox_image(),
            "test/busybox-docker": images.busybox_image(("gzip", "gzip", "gzip"), "docker"),
            "test/multiarch": images.multiarch_image(),
            "test/multiarch-docker": images.multiarch_image("docker"),
            "test/nomediatype": _without_media_type(images.busybox_image()),
        }
        for name, image in built.items():
            images.push(image, plain.url, name, "latest")
        tokens = stack.enter_context(TokenServer(USERS, public={"test/busybox"}))
        basic_auth, token_auth = htpasswd_auth(tmp, USERS), tokens.registry_auth(tmp)
        shared = {"storage": plain.root}
        yield World(
            tmp, plain,
            empty=stack.enter_context(running_registry(tmp)),
            basic=stack.enter_context(running_registry(tmp, auth=basic_auth, **shared)),
            token=stack.enter_context(running_registry(tmp, auth=token_auth, **shared)),
            tokens=tokens,
            busybox=built["test/busybox"], busybox_docker=built["test/busybox-docker"],
            multiarch=built["test/multiarch"], multiarch_docker=built["test/multiarch-docker"],
            no_media_type=built["test/nomediatype"],
        )  # fmt: skip


def _without_media_type(image: images.Image) -> images.Image:
    """The same image, its manifest without the (optional) mediaType field."""
    document = image.manifest()
    del document["mediaType"]
    top = images.Blob(media.OCI_MANIFEST, json.dumps(document).encode())
    return images.Image(top, image.blobs, image.platform)


class VerifyingWriter:
    """A blob writer that checks what it is given, like the content store's."""

    active = 0
    most_active = 0
    lock = threading.Lock()

    def __init__(self, slow: float = 0.0) -> None:
        self.data, self.state, self.slow = bytearray(), "open", slow
        with VerifyingWriter.lock:
            VerifyingWriter.active += 1
            VerifyingWriter.most_active = max(VerifyingWriter.most_active, VerifyingWriter.active)

    def write(self, data: bytes) -> None:
        assert self.state == "open"
        self.data += data
        time.sleep(self.slow)

    def commit(self, expected_digest: str, expected_size: int) -> None:
        assert self.state == "open" and len(self.data) == expected_size
        assert "sha256:" + hashlib.sha256(self.data).hexdigest() == expected_digest
        self._close("committed")

    def abort(self) -> None:
        if self.state == "open":
            self._close("aborted")

    def _close(self, state: str) -> None:
        self.state = state
        with VerifyingWriter.lock:
            VerifyingWriter.active -= 1


def client(tmp_path: Path, credentials=None, **options) -> RegistryClient:
    return RegistryClient(tmp_path / "certs.d", credentials, retry=FAST_RETRY, **options)


def hosts_toml(tmp_path: Path, namespace: str, text: str) -> None:
    directory = tmp_path / "certs.d" / namespace
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hosts.toml").write_text(text)


def blobs_of(manifest: dict) -> list[Descriptor]:
    return [Descriptor.from_dict(d) for d in [manifest["config"], *manifest["layers"]]]


def pull(registry_client: RegistryClient, reference: str, **fetch) -> dict[str, bytes]:
    """Resolve and fetch every blob; returns digest -> content."""
    resolved = registry_client.resolve(reference)
    writers: dict[str, VerifyingWriter] = {}

    def writer_for(descriptor: Descriptor) -> VerifyingWriter:
        writers[descriptor.digest] = VerifyingWriter()
        return writers[descriptor.digest]

    descriptors = blobs_of(resolved.manifest_json())
    registry_client.fetch_blobs(resolved.reference, descriptors, writer_for, **fetch)
    assert all(writer.state == "committed" for writer in writers.values())
    return {digest: bytes(writer.data) for digest, writer in writers.items()}


# Plain pulls -------------------------------------------------------------------------------------


def test_pull_oci_image_with_gzip_zstd_and_plain_layers(world, tmp_path):
    registry_client = client(tmp_path)
    resolved = registry_client.resolve(f"{world.plain.host}/test/busybox")
    assert resolved.descriptor.digest == world.busybox.digest
    assert resolved.manifest == world.busybox.top.data
    assert resolved.index is None
    assert resolved.host == f"http://{world.plain.host}/v2"  # loopback: fell back to plain HTTP
    assert resolved.repo_digest == f"{world.plain.host}/test/busybox@{world.busybox.digest}"
    layer_types = [layer["mediaType"] for layer in resolved.manifest_json()["layers"]]
    assert layer_types == [media.OCI_LAYER_GZIP, media.OCI_LAYER_ZSTD, media.OCI_LAYER]
    fetched = pull(registry_client, f"{world.plain.host}/test/busybox")
    assert fetched == {digest: blob.data for digest, blob in world.busybox.blobs.items()}


def test_pull_docker_schema2_image(world, tmp_path):
    resolved = client(tmp_path).resolve(f"{world.plain.host}/test/busybox-docker:latest")
    assert resolved.descriptor.media_type == media.DOCKER_MANIFEST
    assert resolved.manifest_json()["config"]["mediaType"] == media.DOCKER_CONFIG


def test_pull_by_digest_and_by_tag_and_digest(world, tmp_path):
    registry_client = client(tmp_path)
    digest = world.busybox.digest
    for reference in (f"test/busybox@{digest}", f"test/busybox:ignored@{digest}"):
        resolved = registry_client.resolve(f"{world.plain.host}/{reference}")
        assert resolved.descriptor.digest == digest


def test_resolve_digest_uses_head(world, tmp_path):
    descriptor = client(tmp_path).resolve_digest(f"{world.plain.host}/test/multiarch")
    assert (descriptor.digest, descriptor.media_type) == (world.multiarch.digest, media.OCI_INDEX)


@pytest.mark.parametrize("style", ["oci", "docker"])
def test_multiarch_index_selects_this_hosts_platform(world, tmp_path, style):
    image = world.multiarch if style == "oci" else world.multiarch_docker
    name = "test/multiarch" if style == "oci" else "test/multiarch-docker"
    resolved = client(tmp_path).resolve(f"{world.plain.host}/{name}")
    assert resolved.index.digest == image.digest  # the repo digest is the index's
    assert resolved.repo_digest.endswith(f"/{name}@{image.digest}")
    assert resolved.descriptor.platform == images.host_platform()
    assert resolved.manifest_json()["layers"][0]["size"] > 500_000  # the real busybox layer
    other = images.other_platform()
    wanted = media.normalize_platform(other["os"], other["architecture"], other.get("variant"))
    fake = client(tmp_path, platform=wanted).resolve(f"{world.plain.host}/{name}")
    assert len(fake.manifest_json()["layers"]) == 1


def test_no_matching_platform_lists_the_available_ones(world, tmp_path):
    registry_client = client(tmp_path, platform=media.Platform("linux", "s390x"))
    with pytest.raises(RegistryError) as raised:
        registry_client.resolve(f"{world.plain.host}/test/multiarch")
    message = str(raised.value)
    assert "no manifest for linux/s390x" in message and world.multiarch.digest in message
    assert "linux/amd64" in message and "linux/arm64/v8" in message
    assert raised.value.grpc_code == "NOT_FOUND"


def test_oci_layout_push_round_trip(world, tmp_path):
    layout = images.write_layout(tmp_path / "layout", {"v1": world.busybox})
    digest = images.push(layout, world.plain.url, "test/from-layout", "v1")
    assert digest == world.busybox.digest
    resolved = client(tmp_path).resolve(f"{world.plain.host}/test/from-layout:v1")
    assert resolved.descriptor.digest == digest


# Errors from the registry ------------------------------------------------------------------------


def test_missing_manifest_is_not_found_naming_the_reference(world, tmp_path):
    reference = f"{world.plain.host}/test/busybox:no-such-tag"
    with pytest.raises(RegistryError) as raised:
        client(tmp_path).resolve(reference)
    assert raised.value.grpc_code == "NOT_FOUND"
    assert f'"{reference}"' in str(raised.value) and "MANIFEST_UNKNOWN" in str(raised.value)


def test_missing_blob_is_not_found(world, tmp_path):
    descriptor = Descriptor(media.OCI_LAYER_GZIP, "sha256:" + "0" * 64, 10)
    writer = VerifyingWriter()
    with pytest.raises(RegistryError) as raised:
        client(tmp_path).fetch_blob(f"{world.plain.host}/test/busybox", descriptor, writer)
    assert raised.value.grpc_code == "NOT_FOUND" and descriptor.digest in str(raised.value)
    assert writer.state == "aborted"


def test_unknown_manifest_media_type_is_refused(world, tmp_path):
    with FlakyProxy(world.plain.url) as proxy:
        proxy.add(Fault("/manifests/", "content_type", value="application/vnd.example.thing+json"))
        with pytest.raises(RegistryError) as raised:
            client(tmp_path).resolve(f"{proxy.host}/test/nomediatype")
        assert "unknown manifest media type 'application/vnd.example.thing+json'" in str(
            raised.value
        )
        assert raised.value.grpc_code == "FAILED_PRECONDITION"
        proxy.faults[0].value = media.DOCKER_MANIFEST
        with pytest.raises(RegistryError, match="says mediaType .* but was served as"):
            client(tmp_path).resolve(f"{proxy.host}/test/busybox")


# Authentication ----------------------------------------------------------------------------------


def test_basic_auth_right_and_wrong_password(world, tmp_path):
    reference = f"{world.basic.host}/test/busybox"
    good = auth.from_auth_config({"username": "alice", "password": "wonderland"})
    assert pull(client(tmp_path, good), reference)
    bad = auth.from_auth_config({"username": "alice", "password": "looking-glass"})
    with pytest.raises(RegistryError) as raised:
        client(tmp_path, bad).resolve(reference)
    assert raised.value.grpc_code == "UNAUTHENTICATED"
    assert "HTTP 401: user 'alice' rejected" in str(raised.value)
    with pytest.raises(RegistryError, match="no credentials are configured") as raised:
        client(tmp_path).resolve(reference)
    assert raised.value.grpc_code == "UNAUTHENTICATED"


def test_docker_config_json_credentials(world, tmp_path):
    config = {"auths": {world.basic.host: {"auth": "YWxpY2U6d29uZGVybGFuZA=="}}}
    registry_client = client(tmp_path, auth.from_docker_config(config))
    assert registry_client.resolve(f"{world.basic.host}/test/busybox").descriptor


def test_bearer_token_flow(world, tmp_path):
    world.tokens.requests.clear()
    alice = auth.from_auth_config({"username": "alice", "password": "wonderland"})
    registry_client = client(tmp_path, alice)
    assert pull(registry_client, f"{world.token.host}/test/multiarch")
    first = world.tokens.requests[0]
    assert first["query"]["scope"] == ["repository:test/multiarch:pull"]
    assert first["query"]["service"] == ["observe-rt-test-registry"]
    assert first["authorization"].startswith("Basic ")
    # One token for the whole pull: cached per scope, sent up front after the first challenge.
    assert len(world.tokens.requests) == 1


def test_bearer_anonymous_public_and_private(world, tmp_path):
    assert pull(client(tmp_path), f"{world.token.host}/test/busybox")
    with pytest.raises(RegistryError) as raised:
        client(tmp_path).resolve(f"{world.token.host}/test/multiarch")
    assert raised.value.grpc_code == "UNAUTHENTICATED"
    assert "no credentials are configured" in str(raised.value)


def test_bearer_wrong_password_names_the_token_server(world, tmp_path):
    wrong = auth.from_auth_config({"username": "alice", "password": "nope"})
    with pytest.raises(RegistryError) as raised:
        client(tmp_path, wrong).resolve(f"{world.token.host}/test/busybox")
    assert raised.value.grpc_code == "UNAUTHENTICATED"
    assert f"token server {world.tokens.realm} refused user 'alice' (HTTP 401)" in str(raised.value)


def test_token_answer_may_use_access_token(world, tmp_path):
    world.tokens.field_name = "access_token"
    try:
        alice = auth.from_auth_config({"username": "alice", "password": "wonderland"})
        assert client(tmp_path, alice).resolve(f"{world.token.host}/test/multiarch").index
    finally:
        world.tokens.field_name = "token"


def test_push_with_basic_auth(world, tmp_path):
    image = images.fake_image(images.host_platform())
    images.push(image, world.basic.url, "test/pushed", "v1", auth=("alice", "wonderland"))
    resolved = client(tmp_path).resolve(f"{world.plain.host}/test/pushed:v1")  # shared storage
    assert resolved.descriptor.digest == image.digest


def test_redirects_drop_credentials_and_configured_headers(world, tmp_path):
    with FlakyProxy(world.plain.url) as target, FlakyProxy(world.plain.url) as front:
        front.add(Fault("/blobs/", "require_basic"))
        front.add(Fault("/blobs/", "redirect", value=target.url))
        hosts_toml(tmp_path, front.host, f'server = "{front.url}"\n[header]\n  X-Secret = "s3"\n')
        creds = auth.from_auth_config({"username": "alice", "password": "wonderland"})
        assert pull(client(tmp_path, creds), f"{front.host}/test/busybox")
        blob_requests = target.requests("/blobs/")
        assert blob_requests
        for request in blob_requests:
            headers = {name.lower() for name in request["headers"]}
            assert "authorization" not in headers and "x-secret" not in headers
        assert any("Authorization" in r["headers"] for r in front.requests("/blobs/"))
        assert all(r["headers"].get("X-Secret") == "s3" for r in front.requests(""))


def test_a_redirect_target_asking_for_credentials_gets_none(world, tmp_path):
    with FlakyProxy(world.plain.url) as target, FlakyProxy(world.plain.url) as front:
        target.add(Fault("/blobs/", "require_basic"))
        front.add(Fault("/blobs/", "redirect", value=target.url))
        creds = auth.from_auth_config({"username": "alice", "password": "wonderland"})
        with pytest.raises(RegistryError, match="HTTP 401 from redirect target") as raised:
            pull(client(tmp_path, creds), f"{front.host}/test/busybox")
        assert raised.value.grpc_code == "UNAUTHENTICATED"
        assert all("Authorization" not in r["headers"] for r in target.requests(""))


# Mirrors -----------------------------------------------------------------------------------------


def test_mirror_fallback_past_a_dead_and_an_empty_mirror(world, tmp_path):
    with FlakyProxy(world.plain.url) as good:
        hosts_toml(
            tmp_path, "docker.io",
            f'server = "{closed_port_url()}"\n'  # never the real Docker Hub
            f'[host."{closed_port_url()}"]\n  capabilities = ["pull", "resolve"]\n'
            f'[host."{world.empty.url}"]\n  capabilities = ["pull", "resolve"]\n'
            f'[host."{good.url}"]\n  capabilities = ["pull", "resolve"]\n',
        )  # fmt: skip
        registry_client = client(tmp_path)
        resolved = registry_client.resolve("busybox")
        assert resolved.host == f"{good.url}/v2"
        assert resolved.descriptor.digest == world.busybox.digest
        assert pull(registry_client, "busybox")
        paths = [request["path"] for request in good.requests("/manifests/")]
        assert paths[0] == "/v2/library/busybox/manifests/latest?ns=docker.io"


@pytest.mark.parametrize("domain", ["registry.k8s.io", "gcr.io", "quay.io"])
def test_default_mirror_serves_any_registry(world, tmp_path, domain):
    hosts_toml(tmp_path, "_default", f'server = "{world.plain.url}"\n')
    assert client(tmp_path).resolve(f"{domain}/test/busybox").descriptor.digest == (
        world.busybox.digest
    )


def test_mirror_without_resolve_is_not_asked_for_tags(world, tmp_path):
    with FlakyProxy(world.plain.url) as pull_only:
        hosts_toml(
            tmp_path, "quay.io",
            f'server = "{world.plain.url}"\n[host."{pull_only.url}"]\n  capabilities = ["pull"]\n',
        )  # fmt: skip
        assert pull(client(tmp_path), "quay.io/test/busybox:latest")
        assert not pull_only.requests("/manifests/latest")
        assert pull_only.requests("/blobs/")  # blobs by digest come from the mirror


def test_when_every_host_fails_the_error_lists_each_answer(world, tmp_path):
    dead_mirror, dead_server = closed_port_url(), closed_port_url()
    hosts_toml(
        tmp_path, "docker.io",
        f'server = "{dead_server}"\n[host."{dead_mirror}"]\n[host."{world.empty.url}"]\n',
    )  # fmt: skip
    with pytest.raises(RegistryError) as raised:
        client(tmp_path).resolve("busybox")
    message = str(raised.value)
    assert f"{dead_mirror}/v2: connection refused" in message
    assert f"{world.empty.url}/v2: HTTP 404" in message
    assert f"{dead_server}/v2: connection refused (after 4 attempts)" in message
    assert raised.value.grpc_code == "NOT_FOUND"  # the 404 says more than the dead hosts


# Transient failures and bad content --------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_a_storm_of_transient_errors_is_retried(world, tmp_path, status):
    with FlakyProxy(world.plain.url) as proxy:
        proxy.add(Fault("/manifests/", status=status, times=3))
        proxy.add(Fault("/blobs/", status=status, times=2))
        assert pull(client(tmp_path), f"{proxy.host}/test/busybox")
        assert [r["fault"] for r in proxy.requests("/manifests/")] == ["status"] * 3 + [None]


def test_persistent_5xx_gives_up_with_a_clear_error(world, tmp_path):
    with FlakyProxy(world.plain.url) as proxy:
        proxy.add(Fault("/manifests/", status=503))
        with pytest.raises(RegistryError) as raised:
            client(tmp_path).resolve(f"{proxy.host}/test/busybox")
        assert "HTTP 503 Service Unavailable (INJECTED: None) (after 4 attempts)" in str(
            raised.value
        )
        assert raised.value.grpc_code == "UNAVAILABLE"
        assert len(proxy.requests("/manifests/")) == FAST_RETRY.attempts


def test_connection_resets_are_retried(world, tmp_path):
    with FlakyProxy(world.plain.url) as proxy:
        proxy.add(Fault("/manifests/", "reset", times=1))
        proxy.add(Fault("/blobs/", "reset", times=2))
        assert pull(client(tmp_path), f"{proxy.host}/test/busybox")


def test_a_truncated_blob_resumes_with_a_range_request(world, tmp_path):
    layer = world.busybox.manifest()["layers"][0]
    with FlakyProxy(world.plain.url) as proxy:
        proxy.add(Fault(f"/blobs/{layer['digest']}", "truncate", times=1))
        assert pull(client(tmp_path), f"{proxy.host}/test/busybox")
        first, second = proxy.requests(f"/blobs/{layer['digest']}")
        assert "Range" not in first["headers"]
        assert second["headers"]["Range"] == f"bytes={layer['size'] // 2}-"


def test_a_corrupted_blob_fails_naming_registry_repository_and_digest(world, tmp_path):
    layer = Descriptor.from_dict(world.busybox.manifest()["layers"][1])
    with FlakyProxy(world.plain.url) as proxy:
        proxy.add(Fault(f"/blobs/{layer.digest}", "corrupt"))
        writers: list[VerifyingWriter] = []

        def writer_for(descriptor):
            writers.append(VerifyingWriter())
            return writers[-1]

        registry_client = client(tmp_path)
        resolved = registry_client.resolve(f"{proxy.host}/test/busybox")
        with pytest.raises(RegistryError) as raised:
            registry_client.fetch_blobs(
                resolved.reference, blobs_of(resolved.manifest_json()), writer_for
            )
        message = str(raised.value)
        assert f"blob {layer.digest} of repository test/busybox from http://{proxy.host}" in message
        assert "digest mismatch" in message and raised.value.grpc_code == "DATA_LOSS"
        assert all(writer.state != "open" for writer in writers)
        assert len(proxy.requests(f"/blobs/{layer.digest}")) == 1  # bad content is not retried


def test_concurrent_downloads_are_bounded(world, tmp_path):
    VerifyingWriter.most_active = 0
    registry_client = client(tmp_path)
    resolved = registry_client.resolve(f"{world.plain.host}/test/busybox")
    descriptors = blobs_of(resolved.manifest_json())
    digests = registry_client.fetch_blobs(
        resolved.reference, descriptors, lambda d: VerifyingWriter(slow=0.02), max_concurrent=2
    )
    assert digests == [descriptor.digest for descriptor in descriptors]
    assert VerifyingWriter.most_active == 2


# TLS ---------------------------------------------------------------------------------------------


def test_tls_is_verified_by_default_and_configurable(world, tmp_path):
    ca, cert, key = tls_files(tmp_path)
    with running_registry(tmp_path, storage=world.plain.root, tls=(cert, key)) as secure:
        namespace = "secure.example"
        reference = f"{namespace}/test/busybox"
        hosts_toml(tmp_path, namespace, f'server = "{secure.url}"\n')
        with pytest.raises(RegistryError, match="TLS verification failed"):
            client(tmp_path).resolve(reference)
        hosts_toml(tmp_path, namespace, f'server = "{secure.url}"\nca = "{ca}"\n')
        assert client(tmp_path).resolve(reference).host == f"{secure.url}/v2"
        hosts_toml(tmp_path, namespace, f'server = "{secure.url}"\nskip_verify = true\n')
        assert client(tmp_path).resolve(reference).descriptor
        # A loopback registry without configuration: HTTPS without verification, as containerd.
        assert client(tmp_path).resolve(f"{secure.host}/test/busybox").host == f"{secure.url}/v2"


# Bad input before any request --------------------------------------------------------------------


def test_malformed_reference_and_bad_hosts_toml_are_invalid_argument(tmp_path):
    with pytest.raises(RegistryError, match="must be lowercase") as raised:
        client(tmp_path).resolve("docker.io/Library/busybox")
    assert raised.value.grpc_code == "INVALID_ARGUMENT"
    hosts_toml(tmp_path, "docker.io", '[host."http://127.0.0.1:1"]\n  capabilities = ["fetch"]\n')
    with pytest.raises(RegistryError, match="unknown capability 'fetch'") as raised:
        client(tmp_path).resolve("busybox")
    assert raised.value.grpc_code == "INVALID_ARGUMENT"
    hosts_toml(tmp_path, "quay.io", f'server = "https://127.0.0.1:1"\nca = "{tmp_path}/none.pem"\n')
    with pytest.raises(RegistryError, match="registry TLS files") as raised:
        client(tmp_path).resolve("quay.io/a/b")
    assert raised.value.grpc_code == "INVALID_ARGUMENT"


def test_no_host_with_the_capability(tmp_path):
    hosts_toml(tmp_path, "_default", 'server = "http://127.0.0.1:1"\ncapabilities = ["pull"]\n')
    with pytest.raises(RegistryError, match="has the 'resolve' capability") as raised:
        client(tmp_path).resolve("gcr.io/a/b:tag")
    assert raised.value.grpc_code == "FAILED_PRECONDITION"
