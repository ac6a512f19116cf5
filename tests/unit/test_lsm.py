from __future__ import annotations

import pytest

from observe_rt.runtime import lsm


def test_active_lsms_from_sys_tree(tmp_path):
    assert lsm.active(str(tmp_path)) == set()
    params = tmp_path / "module/apparmor/parameters"
    params.mkdir(parents=True)
    (params / "enabled").write_text("Y\n")
    (tmp_path / "fs/selinux").mkdir(parents=True)
    (tmp_path / "fs/selinux/enforce").write_text("1")
    assert lsm.active(str(tmp_path)) == {"apparmor", "selinux"}
    (params / "enabled").write_text("N\n")
    assert lsm.active(str(tmp_path)) == {"selinux"}


def test_requested_but_absent_lsm_is_refused():
    with pytest.raises(ValueError, match="process.apparmorProfile: AppArmor is not enabled"):
        lsm.validate("docker-default", "", "", {"selinux"})
    with pytest.raises(ValueError, match="linux.mountLabel: SELinux is not enabled"):
        lsm.validate("", "", "system_u:object_r:container_file_t:s0", {"apparmor"})
    lsm.validate("docker-default", "x", "y", {"apparmor", "selinux"})
    lsm.validate("", "", "", set())
