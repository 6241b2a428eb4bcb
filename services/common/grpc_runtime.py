"""gRPC's process-wide options, set before grpc is imported (it reads them once, then).

`GRPC_EXPERIMENTS=-event_engine_client,-event_engine_listener` by default: gRPC's older I/O path
for client channels and server listeners. With grpcio 1.85 (pinned) the EventEngine path reads
and writes the sockets on threads of its own, which then wake grpc.aio's poller thread, which
wakes the event loop: one more thread hand-off per message in each direction. Measured on this
project's 2-core machine with a bare grpc.aio stream (uvloop, 300-byte messages, fresh processes,
interleaved runs): a round trip at concurrency 1 took 78 µs instead of 130 (two hops: 201
instead of 321), with a third less CPU per message. The older path was Python's default until
grpcio 1.80. These experiment names go away in a later grpcio (gRPC logs "Unknown experiment"
and runs as by default), so this is checked again on each upgrade.

An operator's own `GRPC_EXPERIMENTS` wins as it is; set it empty for gRPC's defaults.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

GRPC_EXPERIMENTS = "-event_engine_client,-event_engine_listener"


def set_grpc_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
    """Our defaults for gRPC's options, where the environment sets none."""
    environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
