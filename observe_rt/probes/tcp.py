"""TCP flows and totals (bpf/tcpflow.c): spec, decoding and per-container purge.

Layouts (native order):
  struct tcp_flow_event {u64 close_ns, cgroup_id, duration_ns, bytes_sent, bytes_received;
                         u32 retransmits, resets, states, direction;
                         u16 family, sport, dport, pad; u8 saddr[16], daddr[16]}
  tcp_totals            cgroup id -> {u64 bytes_sent, bytes_received, retransmits,
                         resets_sent, resets_received, connections_active, connections_passive}
Ports arrive in host order (the tracepoint converts them); addresses in network order.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable

from observe_rt.probes.events import FlowClosed, TcpCounters
from observe_rt.probes.spec import Buffer, Hook, ProbeSpec

FLOW_EVENT = struct.Struct("=5Q4I4H16s16s")
TOTALS = struct.Struct("=7Q")
CGROUP_KEY = struct.Struct("=Q")

DIRECTIONS = {0: "unknown", 1: "active", 2: "passive"}
# include/net/tcp_states.h
TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
}
LAYOUT = {"tcp_totals": (CGROUP_KEY.size, TOTALS.size)}


def states_of(mask: int) -> tuple[str, ...]:
    return tuple(name for number, name in TCP_STATES.items() if mask & (1 << number))


def address(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    return str(ipaddress.IPv6Address(raw[:16]))


def decode_event(data: bytes, offset_ns: int = 0) -> FlowClosed:
    (close_ns, cgroup_id, duration, sent, received, retransmits, resets, states, direction,
     family, sport, dport, _last, saddr, daddr) = FLOW_EVENT.unpack_from(data)  # fmt: skip
    return FlowClosed(
        time_ns=close_ns + offset_ns,
        cgroup_id=cgroup_id,
        family=family,
        saddr=address(family, saddr),
        sport=sport,
        daddr=address(family, daddr),
        dport=dport,
        direction=DIRECTIONS.get(direction, "unknown"),
        bytes_sent=sent,
        bytes_received=received,
        duration_ns=duration,
        retransmits=retransmits,
        resets=resets,
        states=states_of(states),
    )


def decode_totals(value: bytes) -> TcpCounters:
    return TcpCounters(*TOTALS.unpack_from(value))


_STATE_FIELDS = ("skaddr", "oldstate", "newstate", "sport", "dport", "family", "protocol")
_ADDR_FIELDS = ("saddr", "daddr", "saddr_v6", "daddr_v6")
_LENGTH_FIELDS = ("sk", "protocol", "ret", "flags")

SPEC = ProbeSpec(
    name="tcp",
    source="tcpflow.c",
    hooks=(
        Hook("sock:inet_sock_set_state", "tcp_set_state", _STATE_FIELDS + _ADDR_FIELDS),
        Hook("sock:sock_send_length", "tcp_send_length", _LENGTH_FIELDS, required=False),
        Hook("sock:sock_recv_length", "tcp_recv_length", _LENGTH_FIELDS, required=False),
        Hook("tcp:tcp_retransmit_skb", "tcp_retransmit", ("skaddr",), required=False),
        Hook("tcp:tcp_send_reset", "tcp_send_rst", ("skaddr",), required=False),
        Hook("tcp:tcp_receive_reset", "tcp_recv_rst", ("skaddr",), required=False),
        Hook("tcp:tcp_destroy_sock", "tcp_destroy", ("skaddr",) + _ADDR_FIELDS, required=False),
    ),
    buffers=(Buffer("tcp_events", decode_event, perf_pages=64),),
)


def collect(program, into: dict[int, dict]) -> None:
    """Set into[cgroup_id]["tcp"] from tcp_totals for every tracked container."""
    for key, value in program.map("tcp_totals").items():
        (cgroup_id,) = CGROUP_KEY.unpack_from(key)
        if cgroup_id in into:
            into[cgroup_id]["tcp"] = decode_totals(value)


def cgroups(program) -> set[int]:
    return {CGROUP_KEY.unpack_from(key)[0] for key in program.map("tcp_totals")}


def purge(program, cgroup_ids: Iterable[int]) -> int:
    view = program.map("tcp_totals")
    return sum(view.delete(CGROUP_KEY.pack(cgroup_id)) for cgroup_id in cgroup_ids)
