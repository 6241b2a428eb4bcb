"""aicreds' services. Importing the package sets gRPC's process-wide options first
(`services.common.grpc_runtime`): every entry point imports grpc through it."""

from services.common.grpc_runtime import set_grpc_defaults

set_grpc_defaults()
