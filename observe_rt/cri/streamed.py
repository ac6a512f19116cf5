"""The Stream* list RPCs: the answer of the matching List RPC, sent in bounded chunks.

They exist so that a node with many objects never builds one message over gRPC's size limit.
Each one runs the List RPC (same filter, same errors) and yields its items CHUNK at a time;
an empty list still answers one empty message, so a client can tell "none" from "no reply".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

CHUNK = 500  # items per message: far below the 64 MiB limit for every item type


def chunked(items: Sequence, make: Callable[[Sequence], object]) -> Iterator:
    for start in range(0, max(len(items), 1), CHUNK):
        yield make(items[start : start + CHUNK])


def list_request(request_type, stream_request):
    """The List request with the Stream request's filter (when it has one)."""
    listed = request_type()
    has_filter = "filter" in stream_request.DESCRIPTOR.fields_by_name
    if has_filter and stream_request.HasField("filter"):
        listed.filter.CopyFrom(stream_request.filter)
    return listed


def rpc(list_rpc: str, request_type, items: str, response_type, field: str):
    """A servicer method for a Stream RPC: servicer.<list_rpc>(request_type(...)).<items>,
    sent as response_type(<field>=chunk) messages."""

    def method(self, request, context):
        listed = getattr(self, list_rpc)(list_request(request_type, request), context)
        yield from chunked(getattr(listed, items), lambda part: response_type(**{field: part}))

    method.__doc__ = f"{list_rpc}'s answer, in chunks of {CHUNK}."
    return method
