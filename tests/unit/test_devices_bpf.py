"""The cgroup v2 device filter: v1 rule-list semantics, and the program's shape."""

from __future__ import annotations

import struct

from observe_rt.runtime.cgroups import devices_bpf
from observe_rt.runtime.cgroups.devices_bpf import DeviceRule


def test_rules_parse_and_everything_resets_the_default():
    assert DeviceRule.parse(True, "c 1:3 rwm") == DeviceRule(True, "c", 1, 3, 7)
    assert DeviceRule.parse(False, "b *:* m") == DeviceRule(False, "b", None, None, 1)
    default, exceptions = devices_bpf.effective(
        [(True, "c 1:3 rw"), (False, "a *:* rwm"), (True, "c 1:5 rwm"), (True, "c 136:* rwm")]
    )
    assert default is False  # the deny-all forgot the rule before it
    assert [(r.major, r.minor) for r in exceptions] == [(1, 5), (136, None)]
    assert devices_bpf.effective([]) == (True, [])  # nothing written: v1 inherits allow-all
    assert devices_bpf.effective([(True, "a *:* rwm")]) == (True, [])  # privileged


def _instructions(code: bytes) -> list[tuple[int, int, int, int]]:
    return [struct.unpack("<BBhi", code[i : i + 8]) for i in range(0, len(code), 8)]


def test_program_checks_last_rule_first_and_ends_with_the_default():
    code = devices_bpf.program([(False, "a *:* rwm"), (True, "c 1:3 rwm"), (True, "c 1:5 r")])
    insns = _instructions(code)
    assert insns[-2:] == [(0xB7, 0, 0, 0), (0x95, 0, 0, 0)]  # r0 = 0 (deny); exit
    majors_minors = [imm for op, regs, _, imm in insns if op == 0x55 and regs & 0xF in (4, 5)]
    assert majors_minors == [1, 5, 1, 3]  # c 1:5 (the last rule) is checked first
    for index, (op, _, off, _) in enumerate(insns):
        if op in (0x55, 0x5D, 0x15):  # every jump lands inside the program
            assert 0 < index + 1 + off < len(insns)
