/*
 * tcpflow.c: TCP flows per container (4-tuple, direction, bytes each way, duration,
 * retransmits, resets, states seen), emitted once when the flow closes, plus per-container
 * totals for the metrics.
 *
 * Hooks:
 *   sock:inet_sock_set_state  every TCP state change, with the 4-tuple. Opens a flow at
 *                             SYN_SENT (connect(), process context: the caller's cgroup is the
 *                             owner), notes a passive open at SYN_RECV->ESTABLISHED, stamps
 *                             the close time at CLOSE.
 *   tcp:tcp_destroy_sock      the socket is freed: emit and forget the flow. Not at CLOSE,
 *                             because an active closer's socket enters CLOSE (via TIME_WAIT)
 *                             as soon as the peer's FIN arrives, while its owner may still
 *                             have unread data queued. Without this tracepoint: at CLOSE.
 *   sock:sock_send_length,    every sendmsg/recvmsg return, in the calling task's context:
 *   sock:sock_recv_length     bytes per flow and per container, and the moment a passive
 *                             (accepted) flow learns its owner.
 *   tcp:tcp_retransmit_skb, tcp:tcp_send_reset, tcp:tcp_receive_reset: per-flow counts.
 * Attribution (the why of the two flow tables): state changes other than connect() often run
 * in softirq context, where the current task is whoever happened to be on the CPU (on
 * loopback, the peer). So the cgroup is only ever taken in process context: at SYN_SENT for
 * active flows and at the first send/recv for passive ones. Until then a passive flow waits
 * in tcp_accepted, a separate LRU, so busy host listeners cannot evict container flows.
 * A passive flow never read or written by its owner is never attributed, hence not reported.
 *
 *      connect()                 handshake done (softirq)
 *   CLOSE --> SYN_SENT           SYN_RECV --> ESTABLISHED
 *      | tcp_flows[sk] = {cgroup,  | tcp_accepted[sk] = start time
 *      |   ACTIVE}                 |  first send/recv by a tracked task (process context)
 *      v                           v  tcp_flows[sk] = {cgroup, PASSIVE}
 *   ... --> CLOSE: close_ns = now
 *   tcp_destroy_sock: emit tcp_flow_event if the cgroup is still tracked, delete the flow
 *
 * Maps:
 *   tcp_flows     skaddr -> struct tcp_flow (LRU, TCP_MAX_FLOWS)
 *   tcp_accepted  skaddr -> start ns of passive flows not yet attributed (LRU)
 *   tcp_totals    cgroup id -> cumulative bytes/retransmits/resets/connections
 *   tcp_events    ring buffer (perf buffer without USE_RINGBUF) of struct tcp_flow_event
 * Overhead: one LRU lookup per state change and per retransmit/reset on the host; per
 *       send/recv one cgroup lookup (host) or three map operations (tracked).
 * Caveats: a socket seen first at send/recv (opened before its cgroup was tracked) gets
 *       direction UNKNOWN and a duration from that moment. LRU eviction under more than
 *       TCP_MAX_FLOWS live flows loses those flows (their totals still count). Without the
 *       sock_*_length tracepoints (HAVE_TP_sock__... unset) flows carry no bytes and passive
 *       flows are not reported. MSG_PEEK reads are not counted.
 */
#include "common.h"

#ifndef TCP_MAX_FLOWS
#define TCP_MAX_FLOWS 16384
#endif
#ifndef TCP_MAX_ACCEPTED
#define TCP_MAX_ACCEPTED 4096
#endif
#ifndef TCP_RINGBUF_PAGES
/* 2 MiB: a few seconds of events at thousands per second, so a daemon thread starved by a busy
 * node catches up instead of losing them (64 pages lost 3% under `make bench` load). */
#define TCP_RINGBUF_PAGES 512
#endif

/* Values from the kernel's tcp_states.h / in.h / socket.h, stable ABI. */
#define OBS_IPPROTO_TCP 6
#define OBS_AF_INET 2
#define OBS_TCP_ESTABLISHED 1
#define OBS_TCP_SYN_SENT 2
#define OBS_TCP_SYN_RECV 3
#define OBS_TCP_CLOSE 7
#define OBS_MSG_PEEK 2

#define FLOW_UNKNOWN 0
#define FLOW_ACTIVE 1
#define FLOW_PASSIVE 2

struct tcp_flow {
    u64 start_ns;
    u64 cgroup_id;
    u64 bytes_sent;
    u64 bytes_received;
    u32 retransmits;
    u32 resets;
    u32 states; /* bit (1 << state) for each state the socket entered */
    u32 direction;
    u64 close_ns; /* when it entered CLOSE; the event waits for tcp_destroy_sock */
};

struct tcp_flow_event {
    u64 close_ns;
    u64 cgroup_id;
    u64 duration_ns;
    u64 bytes_sent;
    u64 bytes_received;
    u32 retransmits;
    u32 resets;
    u32 states;
    u32 direction;
    u16 family;
    u16 sport;
    u16 dport;
    u16 pad;
    u8 saddr[16];
    u8 daddr[16];
};

struct tcp_totals {
    u64 bytes_sent;
    u64 bytes_received;
    u64 retransmits;
    u64 resets_sent;
    u64 resets_received;
    u64 connections_active;
    u64 connections_passive;
};

BPF_TABLE("lru_hash", u64, struct tcp_flow, tcp_flows, TCP_MAX_FLOWS);
BPF_TABLE("lru_hash", u64, u64, tcp_accepted, TCP_MAX_ACCEPTED);
COUNTER_MAP("hash", u64, struct tcp_totals, tcp_totals, MAX_TRACKED);
#ifdef USE_RINGBUF
BPF_RINGBUF_OUTPUT(tcp_events, TCP_RINGBUF_PAGES);
#else
BPF_PERF_OUTPUT(tcp_events);
#endif

/* The container's totals; NULL once it is untracked, so late softirq work adds nothing. */
static __always_inline struct tcp_totals *tcp_totals_of(u64 cgroup_id)
{
    struct tcp_totals zero = {};
    struct tcp_totals *totals;

    if (!is_tracked(cgroup_id))
        return NULL;
    totals = tcp_totals.lookup_or_try_init(&cgroup_id, &zero);
    if (!totals)
        count_lost(PROBE_TCP);
    return totals;
}

static __always_inline void tcp_flow_connect(u64 sk)
{
    u64 cgroup_id = bpf_get_current_cgroup_id();
    struct tcp_totals *totals = tcp_totals_of(cgroup_id);

    if (!totals)
        return;
    struct tcp_flow flow = {.start_ns = bpf_ktime_get_ns(), .cgroup_id = cgroup_id,
                            .states = 1 << OBS_TCP_SYN_SENT, .direction = FLOW_ACTIVE};
    tcp_flows.update(&sk, &flow);
    __sync_fetch_and_add(&totals->connections_active, 1);
}

static __always_inline void tcp_submit(void *ctx, struct tcp_flow_event *event)
{
#ifdef USE_RINGBUF
    if (tcp_events.ringbuf_output(event, sizeof(*event), 0) != 0)
        count_lost(PROBE_TCP);
#else
    if (tcp_events.perf_submit(ctx, event, sizeof(*event)) != 0)
        count_lost(PROBE_TCP);
#endif
}

/* Same argument names in inet_sock_set_state and tcp_destroy_sock. */
#define TCP_FILL_TUPLE(event, args)                                   \
    do {                                                              \
        (event)->family = (args)->family;                             \
        (event)->sport = (args)->sport;                               \
        (event)->dport = (args)->dport;                               \
        if ((event)->family == OBS_AF_INET) {                         \
            __builtin_memcpy((event)->saddr, (args)->saddr, 4);       \
            __builtin_memcpy((event)->daddr, (args)->daddr, 4);       \
        } else {                                                      \
            __builtin_memcpy((event)->saddr, (args)->saddr_v6, 16);   \
            __builtin_memcpy((event)->daddr, (args)->daddr_v6, 16);   \
        }                                                             \
    } while (0)

/* Copy the flow into an event and forget it; 0 when its container is no longer tracked. */
static __always_inline int tcp_flow_finish(u64 sk, struct tcp_flow *flow,
                                           struct tcp_flow_event *event)
{
    u64 now = bpf_ktime_get_ns();

    event->close_ns = flow->close_ns ? flow->close_ns : now;
    event->cgroup_id = flow->cgroup_id;
    event->duration_ns = event->close_ns - flow->start_ns;
    event->bytes_sent = flow->bytes_sent;
    event->bytes_received = flow->bytes_received;
    event->retransmits = flow->retransmits;
    event->resets = flow->resets;
    event->states = flow->states | (1 << OBS_TCP_CLOSE);
    event->direction = flow->direction;
    tcp_flows.delete(&sk);
    return is_tracked(event->cgroup_id);  /* the container may be gone, socket lingering */
}

int tcp_set_state(struct tp_sock__inet_sock_set_state *args)
{
    if (args->protocol != OBS_IPPROTO_TCP)
        return 0;
    u64 sk = args->skaddr;
    int newstate = args->newstate;

    if (newstate == OBS_TCP_SYN_SENT) {
        tcp_flow_connect(sk);
        return 0;
    }
    if (newstate == OBS_TCP_ESTABLISHED && args->oldstate == OBS_TCP_SYN_RECV) {
        u64 now = bpf_ktime_get_ns();
        tcp_accepted.update(&sk, &now);
        return 0;
    }
    struct tcp_flow *flow = tcp_flows.lookup(&sk);
    if (!flow) {
        if (newstate == OBS_TCP_CLOSE)
            tcp_accepted.delete(&sk);
        return 0;
    }
    flow->states |= 1 << (newstate & 31);
    if (newstate != OBS_TCP_CLOSE)
        return 0;
    flow->close_ns = bpf_ktime_get_ns();
#ifndef HAVE_TP_tcp__tcp_destroy_sock
    struct tcp_flow_event event = {};
    if (tcp_flow_finish(sk, flow, &event)) {
        TCP_FILL_TUPLE(&event, args);
        tcp_submit(args, &event);
    }
#endif
    return 0;
}

#ifdef HAVE_TP_tcp__tcp_destroy_sock
/* The socket is freed: its owner has read everything it ever will. */
int tcp_destroy(struct tp_tcp__tcp_destroy_sock *args)
{
    u64 sk = args->skaddr;
    struct tcp_flow *flow = tcp_flows.lookup(&sk);
    struct tcp_flow_event event = {};

    if (!flow || !tcp_flow_finish(sk, flow, &event))
        return 0;
    TCP_FILL_TUPLE(&event, args);
    tcp_submit(args, &event);
    return 0;
}
#endif

#if defined(HAVE_TP_sock__sock_send_length) && defined(HAVE_TP_sock__sock_recv_length)
/* The socket's flow, created on first sight in process context (see Attribution above). */
static __always_inline struct tcp_flow *tcp_flow_of(u64 sk, u64 cgroup_id,
                                                    struct tcp_totals *totals)
{
    struct tcp_flow *flow = tcp_flows.lookup(&sk);

    if (flow)
        return flow;
    struct tcp_flow fresh = {.start_ns = bpf_ktime_get_ns(), .cgroup_id = cgroup_id,
                             .direction = FLOW_UNKNOWN};
    u64 *accepted = tcp_accepted.lookup(&sk);
    if (accepted) {
        fresh.start_ns = *accepted;
        fresh.direction = FLOW_PASSIVE;
        fresh.states = (1 << OBS_TCP_SYN_RECV) | (1 << OBS_TCP_ESTABLISHED);
        tcp_accepted.delete(&sk);
        __sync_fetch_and_add(&totals->connections_passive, 1);
    }
    tcp_flows.update(&sk, &fresh);
    return tcp_flows.lookup(&sk);
}

static __always_inline int tcp_count_bytes(u64 sk, u16 protocol, int ret, int sending)
{
    if (protocol != OBS_IPPROTO_TCP || ret <= 0)
        return 0;
    u64 cgroup_id = bpf_get_current_cgroup_id();
    struct tcp_totals *totals = tcp_totals_of(cgroup_id);
    if (!totals)
        return 0;

    struct tcp_flow *flow = tcp_flow_of(sk, cgroup_id, totals);
    if (sending) {
        __sync_fetch_and_add(&totals->bytes_sent, ret);
        if (flow)
            __sync_fetch_and_add(&flow->bytes_sent, ret);
    } else {
        __sync_fetch_and_add(&totals->bytes_received, ret);
        if (flow)
            __sync_fetch_and_add(&flow->bytes_received, ret);
    }
    return 0;
}

int tcp_send_length(struct tp_sock__sock_send_length *args)
{
    return tcp_count_bytes(args->sk, args->protocol, args->ret, 1);
}

int tcp_recv_length(struct tp_sock__sock_recv_length *args)
{
    if (args->flags & OBS_MSG_PEEK)
        return 0;  /* the data stays queued and is counted when really read */
    return tcp_count_bytes(args->sk, args->protocol, args->ret, 0);
}
#endif

#ifdef HAVE_TP_tcp__tcp_retransmit_skb
int tcp_retransmit(struct tp_tcp__tcp_retransmit_skb *args)
{
    u64 sk = args->skaddr;
    struct tcp_flow *flow = tcp_flows.lookup(&sk);

    if (!flow)
        return 0;
    __sync_fetch_and_add(&flow->retransmits, 1);
    struct tcp_totals *totals = tcp_totals_of(flow->cgroup_id);
    if (totals)
        __sync_fetch_and_add(&totals->retransmits, 1);
    return 0;
}
#endif

static __always_inline void tcp_count_reset(u64 sk, int sent)
{
    struct tcp_flow *flow = tcp_flows.lookup(&sk);

    if (!flow)
        return;  /* includes resets answering segments for no socket (sk == 0) */
    __sync_fetch_and_add(&flow->resets, 1);
    struct tcp_totals *totals = tcp_totals_of(flow->cgroup_id);
    if (!totals)
        return;
    if (sent)
        __sync_fetch_and_add(&totals->resets_sent, 1);
    else
        __sync_fetch_and_add(&totals->resets_received, 1);
}

#ifdef HAVE_TP_tcp__tcp_send_reset
int tcp_send_rst(struct tp_tcp__tcp_send_reset *args)
{
    tcp_count_reset(args->skaddr, 1);
    return 0;
}
#endif

#ifdef HAVE_TP_tcp__tcp_receive_reset
int tcp_recv_rst(struct tp_tcp__tcp_receive_reset *args)
{
    tcp_count_reset(args->skaddr, 0);
    return 0;
}
#endif
