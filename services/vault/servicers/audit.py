"""AuditService over gRPC: reading a user's audit log."""

from __future__ import annotations

import grpc.aio
from aicreds.vault.v1 import audit_pb2 as pb
from aicreds.vault.v1 import audit_pb2_grpc

from services.vault.audit_log import AuditLog


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, log: AuditLog) -> None:
        self._log = log

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAuditEventsResponse:
        events = await self._log.list_events(
            request.user_id, limit=request.limit, before_id=request.before_id
        )
        return pb.ListAuditEventsResponse(
            events=[
                pb.AuditEvent(
                    id=e.id,
                    time=e.time,
                    caller=e.caller,
                    user_id=e.user_id,
                    action=e.action,
                    keys=e.keys,
                    outcome=e.outcome,
                )
                for e in events
            ]
        )
