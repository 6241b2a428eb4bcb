"""The router: one model call per RPC, from the vault's Resolve to the upstream's answer.

| module | what |
|---|---|
| `server.py` | the process: settings -> resolve client, upstream client, servicer; `main` |
| `config.py` | `RouterSettings`, read once from `ROUTER_*` environment variables |
| `servicer.py` | `RouterService` over gRPC: messages in, `Router`, messages out |
| `invocation.py` | the domain: `Router` prepares a call (resolve, substitute, URL), sends it |
| `resolve_client.py` | `ResolveClient`: the vault's `Resolve` as the router calls it |
| `resolve_stream.py` | `ResolveStreams`: lookups on a few long-lived `ResolveStream`s |
| `placeholders.py` | `{{credential:KEY}}` substitution in header values |
| `headers.py` | which headers go upstream and which come back |
| `body_model.py` | rewriting the `model` of a JSON body to the provider's name for it |
| `egress.py` | the egress policy: which addresses may be connected to (pure) |
| `errors.py` | the router's errors |
| `transport/` | the hand-written HTTP transport to the upstream (see its `__init__`) |
"""
