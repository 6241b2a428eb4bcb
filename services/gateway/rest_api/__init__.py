"""The REST v2 endpoint tables (SPEC 2.2-2.5), one module per resource.

Each module's `endpoints(...)` takes the collaborators its handlers use (the vault client, the
router client, the authenticator's cache, settings values) and returns its `Endpoint` table;
`services.gateway.app` wires them.
"""
