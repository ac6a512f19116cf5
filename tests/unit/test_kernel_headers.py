"""Which headers bcc compiles against, decided on fixture trees (no root, real / untouched)."""

from __future__ import annotations

from pathlib import Path

import pytest

from observe_rt.host.kernel_headers import (
    ensure_kernel_headers,
    ensure_tracefs,
    find_kernel_headers,
    resolve_in_root,
)

RELEASE = "6.18.44-fc-v657"


def debian_headers(root: Path, abi: str = "6.1.0-56", flavour: str = "amd64") -> Path:
    """/usr/src/linux-headers-<abi>-<flavour> + -common, shaped like Debian's packages."""
    arch = root / f"usr/src/linux-headers-{abi}-{flavour}"
    (arch / "include/generated").mkdir(parents=True)
    (arch / "include/generated/utsrelease.h").write_text(f'#define UTS_RELEASE "{abi}-{flavour}"\n')
    common = root / f"usr/src/linux-headers-{abi}-common"
    (common / "include/linux").mkdir(parents=True, exist_ok=True)
    (common / "include/linux/kconfig.h").write_text("/* kconfig */\n")
    return arch


def link(root: Path, release: str, name: str, target: str) -> None:
    moddir = root / "lib/modules" / release
    moddir.mkdir(parents=True, exist_ok=True)
    (moddir / name).symlink_to(target)


def test_exact_headers_in_modules_dir(tmp_path):
    build = tmp_path / f"lib/modules/{RELEASE}/build"
    (build / "include/linux").mkdir(parents=True)
    (build / "include/linux/kconfig.h").write_text("")
    (build / "include/generated").mkdir()
    (build / "include/generated/utsrelease.h").write_text(f'#define UTS_RELEASE "{RELEASE}"')

    headers = find_kernel_headers(tmp_path, RELEASE, "x86_64", env={})

    assert headers.in_use and headers.exact
    assert headers.path == f"/lib/modules/{RELEASE}/build"
    assert headers.headers_release == RELEASE


def test_substitute_linked_like_setup_sh(tmp_path):
    debian_headers(tmp_path)
    link(tmp_path, RELEASE, "build", "/usr/src/linux-headers-6.1.0-56-amd64")
    link(tmp_path, RELEASE, "source", "/usr/src/linux-headers-6.1.0-56-common")

    headers = find_kernel_headers(tmp_path, RELEASE, "x86_64", env={})

    assert headers.in_use and not headers.exact
    # bcc compiles in `source` when both links exist; absolute links resolve inside the root.
    assert headers.path == "/usr/src/linux-headers-6.1.0-56-common"
    assert headers.build == "/usr/src/linux-headers-6.1.0-56-amd64"
    assert headers.headers_release == "6.1.0-56-amd64"
    assert headers.reason.startswith(f"kernel {RELEASE} has no headers; bcc uses Debian 6.1.0-56")
    assert f"/lib/modules/{RELEASE}/build" in headers.reason


def test_build_link_without_kconfig_is_not_usable(tmp_path):
    # Debian's arch tree alone has no include/linux/kconfig.h: bcc would fail with it.
    debian_headers(tmp_path)
    link(tmp_path, RELEASE, "build", "/usr/src/linux-headers-6.1.0-56-amd64")

    headers = find_kernel_headers(tmp_path, RELEASE, "x86_64", env={})

    assert not headers.in_use
    assert headers.path == "/usr/src/linux-headers-6.1.0-56-common"


def test_candidate_is_newest_plain_flavour_with_common(tmp_path):
    debian_headers(tmp_path, "6.1.0-50")
    debian_headers(tmp_path, "6.1.0-56")
    debian_headers(tmp_path, "6.1.0-56", "cloud-amd64")
    orphan = tmp_path / "usr/src/linux-headers-6.9.0-1-amd64"  # no -common: unusable
    orphan.mkdir(parents=True)

    headers = find_kernel_headers(tmp_path, RELEASE, "x86_64", env={})

    assert not headers.in_use and not headers.exact
    assert headers.build == "/usr/src/linux-headers-6.1.0-56-amd64"
    assert headers.path == "/usr/src/linux-headers-6.1.0-56-common"
    assert "can be linked" in headers.reason


def test_candidate_matches_arch(tmp_path):
    debian_headers(tmp_path, flavour="arm64")
    assert find_kernel_headers(tmp_path, RELEASE, "x86_64", env={}).path is None
    found = find_kernel_headers(tmp_path, RELEASE, "aarch64", env={})
    assert found.build == "/usr/src/linux-headers-6.1.0-56-arm64"


def test_no_headers_anywhere(tmp_path):
    headers = find_kernel_headers(tmp_path, RELEASE, "x86_64", env={})
    assert headers.path is None and not headers.in_use
    assert "no /usr/src/linux-headers-*-amd64" in headers.reason


def test_kheaders_tarball_is_exact(tmp_path):
    (tmp_path / "sys/kernel").mkdir(parents=True)
    (tmp_path / "sys/kernel/kheaders.tar.xz").write_bytes(b"")
    headers = find_kernel_headers(tmp_path, RELEASE, "x86_64", env={})
    assert headers.in_use and headers.exact
    assert headers.path == "/sys/kernel/kheaders.tar.xz"


def test_bcc_kernel_source_env_wins(tmp_path):
    debian_headers(tmp_path)
    env = {"BCC_KERNEL_SOURCE": "/usr/src/linux-headers-6.1.0-56-common"}
    headers = find_kernel_headers(tmp_path, RELEASE, "x86_64", env=env)
    assert headers.in_use and headers.path == "/usr/src/linux-headers-6.1.0-56-common"
    assert "BCC_KERNEL_SOURCE" in headers.reason


def test_ensure_links_substitute_then_is_idempotent(tmp_path):
    debian_headers(tmp_path)

    first = ensure_kernel_headers(tmp_path, RELEASE, "x86_64", env={})

    moddir = tmp_path / "lib/modules" / RELEASE
    assert str((moddir / "build").readlink()) == "/usr/src/linux-headers-6.1.0-56-amd64"
    assert str((moddir / "source").readlink()) == "/usr/src/linux-headers-6.1.0-56-common"
    assert first.headers.in_use and not first.headers.exact
    assert first.actions == (
        f"linked /lib/modules/{RELEASE}/build -> /usr/src/linux-headers-6.1.0-56-amd64",
        f"linked /lib/modules/{RELEASE}/source -> /usr/src/linux-headers-6.1.0-56-common",
    )
    again = ensure_kernel_headers(tmp_path, RELEASE, "x86_64", env={})
    assert again.actions == () and again.headers == first.headers


def test_ensure_replaces_a_stale_link_but_not_a_real_directory(tmp_path):
    debian_headers(tmp_path)
    link(tmp_path, RELEASE, "build", "/nowhere")
    (tmp_path / f"lib/modules/{RELEASE}/source").mkdir()

    setup = ensure_kernel_headers(tmp_path, RELEASE, "x86_64", env={})

    assert setup.actions[0].startswith(f"linked /lib/modules/{RELEASE}/build")
    assert setup.actions[1] == f"left /lib/modules/{RELEASE}/source alone: it is not a symlink"
    assert not setup.headers.in_use  # bcc would use the empty source dir: still no headers


def test_ensure_without_any_headers_does_nothing(tmp_path):
    setup = ensure_kernel_headers(tmp_path, RELEASE, "x86_64", env={})
    assert setup.actions == ()
    assert not (tmp_path / "lib/modules").exists()
    assert "no headers" in setup.headers.reason


def test_resolve_in_root_keeps_absolute_links_inside(tmp_path):
    (tmp_path / "usr/src/tree").mkdir(parents=True)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib/abs").symlink_to("/usr/src/tree")
    (tmp_path / "lib/rel").symlink_to("../usr/src/tree")
    assert resolve_in_root(tmp_path, "lib/abs/x") == tmp_path / "usr/src/tree/x"
    assert resolve_in_root(tmp_path, "lib/rel") == tmp_path / "usr/src/tree"
    assert resolve_in_root(tmp_path, "../../etc") == tmp_path / "etc"


def test_ensure_tracefs_noop_when_mounted(tmp_path, monkeypatch):
    from observe_rt.host import libc

    monkeypatch.setattr(libc, "mount", lambda *args: pytest.fail("must not mount"))
    (tmp_path / "sys/kernel/tracing/events").mkdir(parents=True)
    assert ensure_tracefs(tmp_path) is None


def test_ensure_tracefs_mounts_when_events_missing(tmp_path, monkeypatch):
    from observe_rt.host import libc

    calls = []
    monkeypatch.setattr(libc, "mount", lambda *args: calls.append(args))
    (tmp_path / "sys/kernel/tracing").mkdir(parents=True)

    assert ensure_tracefs(tmp_path) == f"mounted tracefs at {tmp_path}/sys/kernel/tracing"
    assert calls[0][:3] == ("tracefs", f"{tmp_path}/sys/kernel/tracing", "tracefs")


def test_ensure_tracefs_reports_refusal(tmp_path, monkeypatch):
    from observe_rt.host import libc

    def refuse(*args):
        raise PermissionError(1, "mount tracefs on x: Operation not permitted")

    monkeypatch.setattr(libc, "mount", refuse)
    with pytest.raises(PermissionError):
        ensure_tracefs(tmp_path)
