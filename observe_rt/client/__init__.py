"""The project's CRI client library and the `observe-rt ps|pods|logs|inspect|version` commands.

`CriClient` is imported lazily, so registering the commands does not load gRPC (about 70 ms)
for every other `observe-rt` command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from observe_rt.client.cri_client import CriClient

DEFAULT_SOCKET = "/run/observe-rt/observe-rt.sock"
SOCKET_ENV = "OBSERVE_RT_SOCKET"

__all__ = ["DEFAULT_SOCKET", "SOCKET_ENV", "CriClient"]


def __getattr__(name: str):
    if name == "CriClient":
        from observe_rt.client.cri_client import CriClient

        return CriClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
