"""Seccomp for the container init: validate an OCI `linux.seccomp` object, load it with libseccomp.

Runs inside the init helper (`python -I -S`), so it imports only the standard library and talks
to libseccomp.so.2 through ctypes. Loading follows runc (libcontainer/seccomp):

- plan first: the profile becomes a flat list of rules (one per syscall name) in pure Python;
- rules whose action equals the default action are skipped (libseccomp refuses them, EACCES);
- syscall names libseccomp does not know are skipped, since profiles list the syscalls of many
  kernels and architectures; architectures libseccomp cannot resolve are skipped likewise;
- when several conditions test the same argument, each becomes its own rule (an OR), because
  libseccomp cannot AND two comparisons of one argument.

validate() is pure Python and never loads libseccomp, so it runs anywhere, without root.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections import namedtuple

# libseccomp action values (seccomp.h). SCMP_ACT_KILL is KILL_THREAD, as in runc.
_ACT_ERRNO = 0x00050000
_ACT_TRACE = 0x7FF00000
ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": _ACT_ERRNO,
    "SCMP_ACT_TRACE": _ACT_TRACE,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_ACTIONS_WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
_UNSUPPORTED_ACTIONS = {
    "SCMP_ACT_NOTIFY": "needs a seccomp agent (listenerPath), which observe-rt does not support",
}

# enum scmp_compare (seccomp.h).
OPERATORS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

# The runtime-spec list (libseccomp 2.5) plus LOONGARCH64, which runc also knows.
ARCHITECTURES = frozenset(
    f"SCMP_ARCH_{name}"
    for name in (
        *("X86", "X86_64", "X32", "ARM", "AARCH64", "PPC", "PPC64", "PPC64LE", "S390", "S390X"),
        *("MIPS", "MIPS64", "MIPS64N32", "MIPSEL", "MIPSEL64", "MIPSEL64N32"),
        *("PARISC", "PARISC64", "RISCV64", "LOONGARCH64"),
    )
)

# enum scmp_filter_attr (seccomp.h, libseccomp >= 2.5).
_ATTR_CTL_NNP = 3
_ATTR_CTL_TSYNC = 4
_ATTR_CTL_LOG = 6
_ATTR_CTL_SSB = 7
_ATTR_CTL_OPTIMIZE = 8
_ATTR_API_SYSRAWRC = 9

FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": _ATTR_CTL_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": _ATTR_CTL_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": _ATTR_CTL_SSB,
}
_UNSUPPORTED_FLAGS = {
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": "only applies to SCMP_ACT_NOTIFY, not supported",
}

_MAX_ARG_INDEX = 5  # syscalls take at most 6 arguments
_MAX_ERRNO_RET = 0xFFFF  # SECCOMP_RET_DATA is 16 bits
_MAX_U64 = 2**64 - 1
_NR_SCMP_ERROR = -1  # seccomp_syscall_resolve_name: unknown name
_OPTIMIZE_ABOVE = 32  # runc: use libseccomp's binary tree for longer rule sets
_PATH = "linux.seccomp"


# Plain named tuples: dataclasses would add ~20 ms to the init helper's start (`-X importtime`).
Condition = namedtuple("Condition", "index op value value_two")
Condition.__doc__ = "One argument comparison, as libseccomp's struct scmp_arg_cmp."

Rule = namedtuple("Rule", "name action conditions", defaults=((),))
Rule.__doc__ = "One libseccomp rule: a syscall name, an action value and ANDed conditions."

FilterPlan = namedtuple("FilterPlan", "default_action architectures flags rules")
FilterPlan.__doc__ = "Everything load() hands to libseccomp, computed without touching it."


# ---------------------------------------------------------------- validation


def validate(profile: dict) -> None:
    """Raise ValueError naming the field path if `profile` is not a usable linux.seccomp object.

    Unknown syscall names are accepted: they are skipped at load time, as runc does.
    """
    if not isinstance(profile, dict):
        raise ValueError(f"{_PATH}: must be an object, got {type(profile).__name__}")
    _check_action(_PATH, profile, "defaultAction", "defaultErrnoRet")
    _check_string_list(f"{_PATH}.architectures", profile.get("architectures"), ARCHITECTURES)
    _check_flags(profile.get("flags"))
    for key in ("listenerPath", "listenerMetadata"):
        if profile.get(key):
            raise ValueError(f"{_PATH}.{key}: seccomp agents are not supported")
    syscalls = profile.get("syscalls")
    if syscalls is None:
        return
    if not isinstance(syscalls, list):
        raise ValueError(f"{_PATH}.syscalls: must be a list")
    for i, entry in enumerate(syscalls):
        _check_syscall(f"{_PATH}.syscalls[{i}]", entry)


def _check_action(path: str, obj: dict, action_key: str, errno_key: str) -> None:
    action = obj.get(action_key)
    if action is None:
        raise ValueError(f"{path}.{action_key}: is required")
    if not isinstance(action, str):
        raise ValueError(f"{path}.{action_key}: unknown action {_quote(action)}")
    if action in _UNSUPPORTED_ACTIONS:
        raise ValueError(f"{path}.{action_key}: {action} {_UNSUPPORTED_ACTIONS[action]}")
    if action not in ACTIONS:
        raise ValueError(f"{path}.{action_key}: unknown action {_quote(action)}")
    if obj.get(errno_key) is None:
        return
    # runtime-spec: an errno on an action that cannot return one MUST fail.
    if action not in _ACTIONS_WITH_ERRNO:
        raise ValueError(f"{path}.{errno_key}: not allowed with action {action}")
    _check_uint(f"{path}.{errno_key}", obj[errno_key], _MAX_ERRNO_RET)


def _check_flags(flags: object) -> None:
    path = f"{_PATH}.flags"
    _check_string_list(path, flags, FLAGS.keys() | _UNSUPPORTED_FLAGS.keys())
    for i, flag in enumerate(flags or ()):
        if flag in _UNSUPPORTED_FLAGS:
            raise ValueError(f"{path}[{i}]: {flag} {_UNSUPPORTED_FLAGS[flag]}")


def _check_string_list(path: str, values: object, known: object) -> None:
    if values is None:
        return
    if not isinstance(values, list):
        raise ValueError(f"{path}: must be a list of strings")
    for i, value in enumerate(values):
        if not isinstance(value, str) or value not in known:
            raise ValueError(f"{path}[{i}]: unknown value {_quote(value)}")


def _check_syscall(path: str, entry: object) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: must be an object")
    names = entry.get("names")
    if not isinstance(names, list) or not names:
        raise ValueError(f"{path}.names: must be a non-empty list of syscall names")
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise ValueError(f"{path}.names[{i}]: must be a non-empty string, got {_quote(name)}")
    _check_action(path, entry, "action", "errnoRet")
    args = entry.get("args")
    if args is None:
        return
    if not isinstance(args, list):
        raise ValueError(f"{path}.args: must be a list")
    for i, arg in enumerate(args):
        _check_arg(f"{path}.args[{i}]", arg)


def _check_arg(path: str, arg: object) -> None:
    if not isinstance(arg, dict):
        raise ValueError(f"{path}: must be an object")
    if "index" not in arg:
        raise ValueError(f"{path}.index: is required")
    _check_uint(f"{path}.index", arg["index"], _MAX_ARG_INDEX)
    if "value" not in arg:
        raise ValueError(f"{path}.value: is required")
    _check_uint(f"{path}.value", arg["value"], _MAX_U64)
    if arg.get("valueTwo") is not None:
        _check_uint(f"{path}.valueTwo", arg["valueTwo"], _MAX_U64)
    op = arg.get("op")
    if not isinstance(op, str) or op not in OPERATORS:
        raise ValueError(f"{path}.op: unknown operator {_quote(op)}")


def _check_uint(path: str, value: object, maximum: int) -> None:
    # bool is an int subclass; JSON true is never a number here.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ValueError(f"{path}: must be an integer from 0 to {maximum}, got {_quote(value)}")


def _quote(value: object) -> str:
    import json  # only on the error path: it costs the init helper ~10 ms at start

    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


# ---------------------------------------------------------------- plan


def plan(profile: dict) -> FilterPlan:
    """Validate `profile` and flatten it into the rules load() adds, in profile order."""
    validate(profile)
    default = _action_value(profile["defaultAction"], profile.get("defaultErrnoRet"))
    rules: list[Rule] = []
    for entry in profile.get("syscalls") or ():
        action = _action_value(entry["action"], entry.get("errnoRet"))
        if action == default:
            continue  # redundant, and libseccomp rejects it with EACCES
        for condition_set in _condition_sets(entry.get("args") or ()):
            rules.extend(Rule(name, action, condition_set) for name in entry["names"])
    return FilterPlan(
        default_action=default,
        architectures=tuple(profile.get("architectures") or ()),
        flags=tuple(profile.get("flags") or ()),
        rules=tuple(rules),
    )


def _action_value(action: str, errno_ret: int | None) -> int:
    value = ACTIONS[action]
    if action in _ACTIONS_WITH_ERRNO:
        value |= errno.EPERM if errno_ret is None else errno_ret  # runtime-spec default: EPERM
    return value


def _condition_sets(args: list[dict]) -> list[tuple[Condition, ...]]:
    conditions = [
        Condition(a["index"], OPERATORS[a["op"]], a["value"], a.get("valueTwo") or 0) for a in args
    ]
    indexes = [c.index for c in conditions]
    if len(set(indexes)) < len(indexes):
        return [(c,) for c in conditions]  # same argument twice: one rule each, as runc does
    return [tuple(conditions)]


# ---------------------------------------------------------------- libseccomp


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


_lib: ctypes.CDLL | None = None


def _libseccomp() -> ctypes.CDLL:
    """Open libseccomp.so.2 once; loaded lazily so validate() works on hosts without it."""
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as exc:
            raise OSError(errno.ENOENT, f"seccomp: cannot open libseccomp.so.2: {exc}") from exc
        _declare(lib)
        _lib = lib
    return _lib


def preload() -> None:
    """Open libseccomp now, while the host's libraries are still reachable (before pivot_root
    or joining a container's mount namespace)."""
    _libseccomp()


def _declare(lib: ctypes.CDLL) -> None:
    ctx, u32, cint, name = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_char_p
    lib.seccomp_init.argtypes, lib.seccomp_init.restype = [u32], ctx
    lib.seccomp_release.argtypes, lib.seccomp_release.restype = [ctx], None
    lib.seccomp_attr_set.argtypes, lib.seccomp_attr_set.restype = [ctx, cint, u32], cint
    lib.seccomp_arch_resolve_name.argtypes, lib.seccomp_arch_resolve_name.restype = [name], u32
    lib.seccomp_arch_add.argtypes, lib.seccomp_arch_add.restype = [ctx, u32], cint
    lib.seccomp_syscall_resolve_name.argtypes = [name]
    lib.seccomp_syscall_resolve_name.restype = cint
    lib.seccomp_rule_add_array.argtypes = [ctx, u32, cint, ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_rule_add_array.restype = cint
    lib.seccomp_load.argtypes, lib.seccomp_load.restype = [ctx], cint
    lib.seccomp_export_pfc.argtypes, lib.seccomp_export_pfc.restype = [ctx, cint], cint


def _fail(rc: int, what: str) -> OSError:
    code = -rc if rc < 0 else errno.EINVAL
    return OSError(code, f"seccomp: {what}: {os.strerror(code)}")


def _build(lib: ctypes.CDLL, filt: FilterPlan, no_new_privs: bool) -> int:
    """Return a libseccomp filter context holding `filt`; the caller releases it."""
    ctx = lib.seccomp_init(filt.default_action)
    if not ctx:
        raise OSError(errno.EINVAL, "seccomp: seccomp_init failed for the default action")
    try:
        _set_attributes(lib, ctx, filt, no_new_privs)
        _add_architectures(lib, ctx, filt.architectures)
        for rule in filt.rules:
            _add_rule(lib, ctx, rule)
    except BaseException:
        lib.seccomp_release(ctx)
        raise
    return ctx


def _set_attributes(lib: ctypes.CDLL, ctx: int, filt: FilterPlan, no_new_privs: bool) -> None:
    # libseccomp sets NO_NEW_PRIVS itself unless told not to; the caller decides.
    rc = lib.seccomp_attr_set(ctx, _ATTR_CTL_NNP, int(no_new_privs))
    if rc < 0:
        raise _fail(rc, "setting the no_new_privs attribute")
    lib.seccomp_attr_set(ctx, _ATTR_API_SYSRAWRC, 1)  # real errno from seccomp(2); best effort
    if len(filt.rules) > _OPTIMIZE_ABOVE:
        lib.seccomp_attr_set(ctx, _ATTR_CTL_OPTIMIZE, 2)  # binary tree; fewer checks per syscall
    for flag in filt.flags:
        rc = lib.seccomp_attr_set(ctx, FLAGS[flag], 1)
        if rc < 0:
            raise _fail(rc, f"flag {flag} is not supported by this libseccomp")


def _add_architectures(lib: ctypes.CDLL, ctx: int, architectures: tuple[str, ...]) -> None:
    for arch in architectures:
        token = lib.seccomp_arch_resolve_name(arch.removeprefix("SCMP_ARCH_").lower().encode())
        if token == 0:
            continue  # unknown to this libseccomp: its syscalls cannot occur here anyway
        rc = lib.seccomp_arch_add(ctx, token)
        if rc < 0 and rc != -errno.EEXIST:  # the native arch is always present
            raise _fail(rc, f"adding architecture {arch}")


def _add_rule(lib: ctypes.CDLL, ctx: int, rule: Rule) -> None:
    number = lib.seccomp_syscall_resolve_name(rule.name.encode())
    if number == _NR_SCMP_ERROR:
        return  # a syscall of another kernel or architecture
    conditions = (_ArgCmp * len(rule.conditions))(
        *(_ArgCmp(c.index, c.op, c.value, c.value_two) for c in rule.conditions)
    )
    rc = lib.seccomp_rule_add_array(ctx, rule.action, number, len(rule.conditions), conditions)
    if rc < 0:
        raise _fail(rc, f"adding the rule for syscall {rule.name} (action {rule.action:#x})")


def load(profile: dict, no_new_privs: bool) -> None:
    """Validate `profile` and install it as a seccomp filter on the calling thread.

    With no_new_privs, libseccomp sets PR_SET_NO_NEW_PRIVS just before seccomp(2). Without it
    the thread must hold CAP_SYS_ADMIN, so load before dropping capabilities in that case.
    """
    filt = plan(profile)
    lib = _libseccomp()
    ctx = _build(lib, filt, no_new_privs)
    try:
        rc = lib.seccomp_load(ctx)
    finally:
        lib.seccomp_release(ctx)
    if rc < 0:
        hint = "" if no_new_privs else " (without no_new_privs it needs CAP_SYS_ADMIN)"
        raise _fail(rc, f"loading the filter into the kernel{hint}")


def export_pfc(profile: dict) -> str:
    """Return libseccomp's pseudo-filter-code text for `profile`, without loading it."""
    import tempfile  # debugging aid only; keep it off the init helper's start path

    lib = _libseccomp()
    ctx = _build(lib, plan(profile), no_new_privs=False)
    try:
        with tempfile.TemporaryFile() as out:  # not a pipe: the text can exceed its buffer
            rc = lib.seccomp_export_pfc(ctx, out.fileno())
            if rc < 0:
                raise _fail(rc, "exporting the filter")
            out.seek(0)
            return out.read().decode()
    finally:
        lib.seccomp_release(ctx)
