"""The REST v2 operations (SPEC 2.2-2.5) and the operational endpoints (SPEC 2.7)."""
