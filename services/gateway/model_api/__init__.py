"""The OpenAI- and Anthropic-compatible model endpoints (SPEC 2.6; issue 6).

    endpoints.py        the PlainEndpoint table the application mounts and documents
                        (`model_endpoints(backend)`), each route with its vendor's renderer
    model_call.py       one model call, OpenAI- or Anthropic-style: admit, read the body,
                        ask the router; `LlmBackend`, what the endpoints use of the gateway
    call_options.py     what is read from a call's body (`model`, `stream`)
    stream_relay.py     relay the router's stream as it arrives; cancel on disconnect
    buffered_answer.py  answer a non-streamed call from the router's one message
    model_catalog.py    GET /v1/models, GET /v1/models/{model_id}, and the model lists
    vendor_errors.py    the vendors' error shapes

`services.gateway.app` builds the `LlmBackend` and mounts `model_endpoints(backend)`.
"""
