"""UpdateContainerResources and UpdatePodSandboxResources: new limits on a live cgroup.

The CRI resources are validated exactly as at create (container_security.resources), planned
for this host's cgroup layout and written in place. A write the kernel refuses (on v1, a memory
limit below what the cgroup uses and cannot reclaim: EBUSY) answers FailedPrecondition and
leaves the old limit, as runc's `update` does under containerd.
"""

from __future__ import annotations

from observe_rt import errors


def apply(cgroups_path: str, owner_id: str, cri_resources) -> None:
    from observe_rt.cri.container_security import resources as linux_resources
    from observe_rt.runtime import cgroups

    try:
        oci = linux_resources(cri_resources)
        plan = cgroups.plan(oci, cgroups_path, cgroups.detect_layout(), owner_id)
    except ValueError as err:
        raise errors.InvalidArgument(str(err)) from None
    try:
        cgroups.CgroupManager(plan).apply_writes()
    except cgroups.CgroupError as err:
        raise errors.FailedPrecondition(str(err)) from None
