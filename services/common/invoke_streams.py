"""What the gateway and the router agree on beyond the proto: the metadata keys of model calls.

- `CREDENTIAL_WARNING_KEY`: the router's credential warnings (`Credential not found: KEY`), one
  entry each, in `Invoke`'s initial and trailing metadata; the gateway turns them into headers.
- `ANSWERS_TOGETHER_KEY`: the metadata a caller opens an `InvokeBufferedStream` with to say it
  reads several answers in one message (`more`). A router batches only for such a caller: one
  from before `more` would drop them.
"""

CREDENTIAL_WARNING_KEY = "x-credential-warning"

ANSWERS_TOGETHER_KEY = "x-aicreds-answers-together"
"""Present (any value) in the stream's metadata: the caller reads `more`."""
