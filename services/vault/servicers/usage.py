"""UsageService over gRPC: the router's usage reports in, a user's daily totals out."""

from __future__ import annotations

import grpc.aio
from aicreds.vault.v1 import usage_pb2 as pb
from aicreds.vault.v1 import usage_pb2_grpc

from services.vault.usage import UsageBook, UsageCounts, UsageEntry


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    def __init__(self, usage: UsageBook) -> None:
        self._usage = usage

    async def RecordUsage(
        self, request: pb.RecordUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordUsageResponse:
        await self._usage.record(
            [
                UsageEntry(
                    e.user_id,
                    UsageCounts(e.provider, e.model, e.input_tokens, e.output_tokens, e.calls),
                )
                for e in request.entries
            ]
        )
        return pb.RecordUsageResponse()

    async def GetUsage(
        self, request: pb.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUsageResponse:
        rows = await self._usage.get(request.user_id, request.from_day, request.to_day)
        return pb.GetUsageResponse(
            rows=[
                pb.UsageRow(
                    day=r.day,
                    provider=r.provider,
                    model=r.model,
                    input_tokens=r.input_tokens,
                    output_tokens=r.output_tokens,
                    calls=r.calls,
                )
                for r in rows
            ]
        )
