"""Device rules for cgroup v2: a BPF_PROG_TYPE_CGROUP_DEVICE program built from the rules.

cgroup v2 has no devices.allow/deny files: without a device program a container could mknod
and open any block device of the host (CAP_MKNOD is in the default set). As runc does, the
runtime turns the OCI rules into a small program and attaches it to the container's cgroup.

Semantics follow cgroup v1's list, which the rules were written for:
  - "a *:* rwm" sets the default (allow or deny) and forgets the rules before it;
  - the other rules are exceptions; the LAST one that matches decides;
  - an allow rule matches when it grants every access asked for (v1 needs all of them), a
    deny rule when it denies any of them.

Program (ctx = struct bpf_cgroup_dev_ctx {u32 access_type; u32 major; u32 minor}):

    r2 = type (access_type & 0xffff)   r3 = access (access_type >> 16)
    r4 = major                         r5 = minor
    for each exception, last first:    if type, access, major and minor match: return verdict
    return default
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_TYPES = {"c": 2, "b": 1}  # BPF_DEVCG_DEV_CHAR, BPF_DEVCG_DEV_BLOCK
_ACCESS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_MKNOD, READ, WRITE
ALL_ACCESS = 7


@dataclass(frozen=True)
class DeviceRule:
    allow: bool
    kind: str  # a, c or b
    major: int | None  # None: any
    minor: int | None
    access: int  # mask of _ACCESS bits

    @classmethod
    def parse(cls, allow: bool, text: str) -> DeviceRule:
        """One rule in cgroup v1's text form, e.g. "c 1:3 rwm" or "b *:* m"."""
        kind, numbers, access = text.split()
        major, minor = (None if n == "*" else int(n) for n in numbers.split(":"))
        mask = sum(_ACCESS[a] for a in set(access))
        return cls(allow, kind, major, minor, mask)

    @property
    def everything(self) -> bool:
        return (
            self.kind == "a"
            and self.major is None
            and self.minor is None
            and (self.access == ALL_ACCESS)
        )


def effective(rules: list[tuple[bool, str]]) -> tuple[bool, list[DeviceRule]]:
    """(default allow?, the exceptions in order) of a v1-style rule list."""
    default, exceptions = True, []  # a new v1 cgroup inherits "a *:* rwm" from the root
    for allow, text in rules:
        rule = DeviceRule.parse(allow, text)
        if rule.everything:
            default, exceptions = rule.allow, []
        else:
            exceptions.append(rule)
    return default, exceptions


# --- a tiny BPF assembler: only the instructions the filter needs ------------------------------

_LDX_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W
_AND32_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
_RSH32_K = 0x74  # BPF_ALU | BPF_RSH | BPF_K
_MOV64_X = 0xBF  # BPF_ALU64 | BPF_MOV | BPF_X
_MOV64_K = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K
_AND64_K = 0x57  # BPF_ALU64 | BPF_AND | BPF_K
_JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K
_JNE_X = 0x5D  # BPF_JMP | BPF_JNE | BPF_X
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_EXIT = 0x95  # BPF_JMP | BPF_EXIT


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _rule_block(rule: DeviceRule) -> list[bytes]:
    """Instructions that return the rule's verdict when it matches, else fall through."""
    checks: list[tuple[int, int, int, int]] = []  # (code, dst, src, imm) of "skip if"
    prelude: list[bytes] = []
    if rule.kind != "a":
        checks.append((_JNE_K, 2, 0, _TYPES[rule.kind]))
    if rule.access != ALL_ACCESS or not rule.allow:
        prelude = [_insn(_MOV64_X, 1, 3), _insn(_AND64_K, 1, imm=rule.access)]
        if rule.allow:  # every asked access granted: (asked & granted) == asked
            checks.append((_JNE_X, 1, 3, 0))
        else:  # any asked access denied: (asked & denied) != 0
            checks.append((_JEQ_K, 1, 0, 0))
    if rule.major is not None:
        checks.append((_JNE_K, 4, 0, rule.major))
    if rule.minor is not None:
        checks.append((_JNE_K, 5, 0, rule.minor))
    verdict = [_insn(_MOV64_K, 0, imm=int(rule.allow)), _insn(_EXIT)]
    # The access check must run after its prelude; others may come in any order.
    body: list[bytes] = []
    remaining = len(checks)
    for code, dst, src, imm in checks:
        remaining -= 1
        skip = remaining + len(verdict)  # jump over the later checks and the verdict
        body.append(_insn(code, dst, src, off=skip, imm=imm))
    return prelude + body + verdict


def program(rules: list[tuple[bool, str]]) -> bytes:
    """The filter for a v1-style rule list, as raw BPF instructions."""
    default, exceptions = effective(rules)
    code = [
        _insn(_LDX_W, 2, 1, 0),  # r2 = ctx->access_type
        _insn(_AND32_K, 2, imm=0xFFFF),  # type
        _insn(_LDX_W, 3, 1, 0),
        _insn(_RSH32_K, 3, imm=16),  # access
        _insn(_LDX_W, 4, 1, 4),  # major
        _insn(_LDX_W, 5, 1, 8),  # minor
    ]
    for rule in reversed(exceptions):
        code += _rule_block(rule)
    code += [_insn(_MOV64_K, 0, imm=int(default)), _insn(_EXIT)]
    return b"".join(code)


def apply(cgroup_dir: str, rules: list[tuple[bool, str]]) -> None:
    """Load the filter for `rules` and attach it to the cgroup v2 directory."""
    import os

    from observe_rt.host import bpf_syscall

    fd = bpf_syscall.load_cgroup_device_program(program(rules))
    try:
        bpf_syscall.attach_to_cgroup(fd, cgroup_dir)
    finally:
        os.close(fd)  # the cgroup holds the program now
