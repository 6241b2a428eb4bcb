"""Sends the answers' usage to the vault's `UsageService.RecordUsage`, off the calls' path.

`UsageReporter.record` is the router's `UsageSink`: it counts the report in the metrics (when the
router exports them) and puts it on a bounded queue, and returns at once; when the queue is full
(the vault slower than the calls, or away) the report is dropped and counted (`queue_full`).
One task sends what is queued, up to `BATCH` reports per RPC, with a deadline; a failed send
drops its batch (`send_failed`) and logs one line without user ids. After the first report of a
batch it lets the batch gather for up to `GATHER_SECONDS` (less once `BATCH` are waiting, none
when flushing or closing), so that a busy router sends a few `RecordUsage` a second rather than
one per few calls: each costs both processes an RPC and the vault a write. Usage is best effort by
design: it must never slow or fail a call, and a lost report loses counts, never a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc.aio
from aicreds.vault.v1 import usage_pb2, usage_pb2_grpc

from services.router.token_metrics import TokenMetrics
from services.router.usage import UsageReport

MAX_QUEUE = 10_000
"""The most reports waiting to be sent."""
BATCH = 500
"""The most reports per `RecordUsage`."""
SEND_TIMEOUT = 5.0
"""The deadline of one `RecordUsage`."""
GATHER_SECONDS = 0.5
"""The longest a report waits for others to join its batch."""

_log = logging.getLogger("aicreds.router")


def _entry(report: UsageReport) -> usage_pb2.UsageEntry:
    return usage_pb2.UsageEntry(
        user_id=report.user_id,
        provider=report.provider,
        model=report.model,
        input_tokens=report.usage.input_tokens,
        output_tokens=report.usage.output_tokens,
        calls=1,
    )


class UsageReporter:
    """Counts reports and sends them to the vault in the background."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        metrics: TokenMetrics | None,
        *,
        max_queue: int = MAX_QUEUE,
        timeout: float = SEND_TIMEOUT,
        gather: float = GATHER_SECONDS,
    ) -> None:
        self._stub = usage_pb2_grpc.UsageServiceStub(channel)
        self.metrics = metrics  # None when the router exports no metrics
        self._queue: asyncio.Queue[UsageReport] = asyncio.Queue(max_queue)
        self._timeout = timeout
        self._gather = gather
        # Set when a batch should go without waiting out `gather`: a full batch, a flush, close.
        self._send_now = asyncio.Event()
        self._hurried = 0  # flushes waiting, plus one while closing: no gathering meanwhile
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"UsageReporter(queued={self._queue.qsize()})"

    def start(self) -> None:
        """Start sending (in the running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-reports")

    def record(self, report: UsageReport) -> None:
        if self.metrics is not None:
            self.metrics.observe(report)
        try:
            self._queue.put_nowait(report)
        except asyncio.QueueFull:
            self._dropped("queue_full")
        if self._queue.qsize() >= BATCH:
            self._send_now.set()

    def _dropped(self, reason: str, reports: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.drop(reason, reports)

    async def flush(self) -> None:
        """Send what is queued now, and wait until it has been sent (or dropped)."""
        self._hurried += 1
        self._send_now.set()
        try:
            await self._queue.join()
        finally:
            self._hurried -= 1

    async def aclose(self, grace: float = 2.0) -> None:
        """Send what is queued within `grace` seconds, then stop."""
        if self._task is None:
            return
        self._hurried += 1
        self._send_now.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), grace)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._queue.qsize() < BATCH - 1 and not self._send_now.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._gather):
                        await self._send_now.wait()
            if self._queue.qsize() < BATCH and not self._hurried:
                self._send_now.clear()  # what is queued now goes in this batch
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._send(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _send(self, batch: list[UsageReport]) -> None:
        request = usage_pb2.RecordUsageRequest(entries=[_entry(r) for r in batch])
        try:
            await self._stub.RecordUsage(request, timeout=self._timeout)
        except Exception as err:  # whatever fails, the task goes on with the next batch
            self._dropped("send_failed", len(batch))
            problem = (
                err.code().name if isinstance(err, grpc.aio.AioRpcError) else type(err).__name__
            )
            _log.warning(
                "usage not recorded", extra={"fields": {"reports": len(batch), "problem": problem}}
            )
