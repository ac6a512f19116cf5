"""Container cgroups on cgroup v1, hybrid and v2 hosts: detect, plan, then apply.

    layout = detect_layout()                       # which hierarchies, where (mountinfo)
    p = plan(spec["linux"].get("resources"), spec["linux"].get("cgroupsPath"), layout, cid)
    mgr = CgroupManager(p); mgr.create(); mgr.add_process(pid)
    state = mgr.to_state()                         # JSON; CgroupManager.from_state(state)
    mgr.destroy()

layout.py reads mountinfo; resources.py checks the OCI values; v1.py and v2.py name the
files; plan.py assembles the plan; manager.py is the thin loop that touches cgroupfs.
"""

from .layout import CgroupLayout, detect_layout
from .manager import CgroupError, CgroupManager
from .plan import CgroupPlan, Write, normalize_cgroups_path, plan
from .resources import cpu_weight

__all__ = [
    "CgroupError",
    "CgroupLayout",
    "CgroupManager",
    "CgroupPlan",
    "Write",
    "cpu_weight",
    "detect_layout",
    "normalize_cgroups_path",
    "plan",
]
