"""What the gateway and the router agree on for `RouterService.InvokeBufferedStream`, beyond the
proto: the metadata a caller opens a stream with to say it reads several answers in one message
(`more`). A router batches only for such a caller: one from before `more` would drop them."""

ANSWERS_TOGETHER_KEY = "x-aicreds-answers-together"
"""Present (any value) in the stream's metadata: the caller reads `more`."""
