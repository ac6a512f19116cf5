"""Tracepoint formats -> C structs, probe plans and the assembled program text (no kernel)."""

from __future__ import annotations

from pathlib import Path

from observe_rt.probes import assemble, oom, process, syscalls, tcp
from observe_rt.probes.features import parse_field, parse_format, read_format
from observe_rt.probes.loader import BPF_DIR
from observe_rt.probes.spec import plan

COMMON = """\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;
"""

MARK_VICTIM = f"""name: mark_victim
ID: 1
format:
{COMMON}
\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;
\tfield:unsigned long total_vm;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned long anon_rss;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned long file_rss;\toffset:32;\tsize:8;\tsigned:0;
\tfield:unsigned long shmem_rss;\toffset:40;\tsize:8;\tsigned:0;
\tfield:short oom_score_adj;\toffset:64;\tsize:2;\tsigned:1;

print fmt: "pid=%d", REC->pid
"""

SEND_RESET = f"""format:
{COMMON}
\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;
\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;
"""


def test_parse_fields():
    assert parse_field("\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;").count == 16
    loc = parse_field("\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;")
    assert (loc.name, loc.data_loc, loc.count) == ("filename", True, None)
    assert loc.c_declaration() == "u32 data_loc_filename;"
    # exit_group's argument is declared int but is 8 bytes wide: the size wins
    code = parse_field("\tfield:int error_code;\toffset:16;\tsize:8;\tsigned:0;")
    assert code.c_declaration() == "u64 error_code;"
    assert parse_field("print fmt: nothing") is None


def test_struct_types_by_size_and_pads_gaps():
    fmt = parse_format("oom", "mark_victim", MARK_VICTIM)
    text = fmt.c_struct()
    assert "struct tp_oom__mark_victim {" in text
    assert "s32 pid;" in text
    assert "u32 data_loc_comm;" in text
    assert "u64 total_vm;" in text
    assert "u8 __pad" in text and "[16];" in text  # 48 -> 64 before oom_score_adj
    assert "s16 oom_score_adj;" in text
    assert "#define HAVE_TP_oom__mark_victim 1" in text
    assert "__builtin_offsetof(struct tp_oom__mark_victim, oom_score_adj) == 64" in text
    assert fmt.has("pid", "comm") and not fmt.has("uid")


def test_unknown_enum_becomes_plain_integer():
    text = parse_format("tcp", "tcp_send_reset", SEND_RESET).c_struct()
    assert "u32 reason;" in text
    assert "enum" not in text
    assert "u64 skaddr;" in text
    assert "u8 saddr[28];" in text


def test_read_format(tmp_path: Path):
    event = tmp_path / "events/oom/mark_victim"
    event.mkdir(parents=True)
    (event / "format").write_text(MARK_VICTIM)
    fmt = read_format("oom:mark_victim", tmp_path)
    assert fmt is not None and fmt.name == "oom:mark_victim"
    assert read_format("oom:nothing", tmp_path) is None


def fake_formats(*missing: str, drop_fields: dict | None = None):
    """A format for every tracepoint any probe names, with the fields the specs read."""
    drop_fields = drop_fields or {}
    wanted: dict[str, set[str]] = {}
    for spec in (syscalls.SPEC, oom.SPEC, tcp.SPEC, process.SPEC):
        for hook in spec.hooks:
            wanted.setdefault(hook.tracepoint, set()).update(hook.fields)
        for feature in spec.features:
            wanted.setdefault(feature.tracepoint, set()).update(feature.fields)
    formats = {}
    for name, fields in wanted.items():
        category, event = name.split(":")
        lines = [
            f"\tfield:u64 {field};\toffset:{8 + 8 * i};\tsize:8;\tsigned:0;"
            for i, field in enumerate(sorted(fields - set(drop_fields.get(name, ()))))
        ]
        formats[name] = None if name in missing else parse_format(category, event, "\n".join(lines))
    return formats


def test_plan_everything_present():
    result = plan(tcp.SPEC, fake_formats())
    assert result.up and result.notes == ()
    assert {h.function for h in result.hooks} >= {"tcp_set_state", "tcp_destroy", "tcp_send_rst"}
    assert {f.name for f in result.formats} == set(tcp.SPEC.tracepoints)


def test_missing_required_tracepoint_takes_the_probe_down():
    result = plan(oom.SPEC, fake_formats("oom:mark_victim"))
    assert not result.up
    assert "oom:mark_victim not found" in result.reason


def test_missing_optional_tracepoint_is_a_note():
    result = plan(tcp.SPEC, fake_formats("sock:sock_send_length", "tcp:tcp_destroy_sock"))
    assert result.up
    assert "tcp_send_length" not in {h.function for h in result.hooks}
    assert any("tcp_destroy" in note for note in result.notes)


def test_features_follow_fields():
    full = plan(oom.SPEC, fake_formats())
    assert {"OOM_HAS_RSS", "OOM_HAS_COMM"} <= set(full.defines)
    old_kernel = plan(oom.SPEC, fake_formats(drop_fields={"oom:mark_victim": ["total_vm"]}))
    assert old_kernel.up and "OOM_HAS_RSS" not in old_kernel.defines
    drop = {"sched:sched_process_exec": ["filename"]}
    missing_field = plan(process.SPEC, fake_formats(drop_fields=drop))
    assert not missing_field.up and "lacks field(s) filename" in missing_field.reason


def test_raw_hooks_need_the_tracepoint_but_no_struct():
    assert plan(syscalls.SPEC, fake_formats()).formats == ()
    assert not plan(syscalls.SPEC, fake_formats("raw_syscalls:sys_exit")).up


def test_program_text_joins_each_file_once():
    formats = fake_formats()
    pairs = [(s, plan(s, formats)) for s in (syscalls.SPEC, oom.SPEC, process.SPEC)]
    text = assemble.program_text(pairs, BPF_DIR)
    # sched_process_exit is hooked by oom and process, its struct appears once
    assert text.count("struct tp_sched__sched_process_exit {") == 1
    tracked = 'COUNTER_MAP("hash", u64, u8, tracked,'
    assert text.count(tracked) == 1
    assert '#include "common.h"\n' not in text
    assert '#line 1 "oomkill.c"' in text
    assert "tcpflow.c" not in text
    assert text.index("struct tp_") < text.index(tracked) < text.index("sc_enter")


def test_cflags():
    formats = fake_formats()
    plans = [plan(oom.SPEC, formats), plan(tcp.SPEC, fake_formats("tcp:tcp_destroy_sock"))]
    flags = assemble.cflags(plans, True, BPF_DIR, {"MAX_TRACKED": 128})
    assert flags[0] == f"-I{BPF_DIR}"
    assert "-DUSE_RINGBUF" in flags and "-DMAX_TRACKED=128" in flags and "-DOOM_HAS_RSS" in flags
    assert "-DUSE_RINGBUF" not in assemble.cflags(plans, False, BPF_DIR, {})
    assert not any(f.startswith("-DPIN_DIR") for f in flags)
    pinned = assemble.cflags(plans, True, BPF_DIR, {}, Path("/sys/fs/bpf/x"))
    assert '-DPIN_DIR="/sys/fs/bpf/x"' in pinned
