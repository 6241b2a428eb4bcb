"""The HTTP edge: REST v2 and the OpenAI/Anthropic model endpoints in front of the vault and the
router. `app.py` wires it; `docs/architecture.md` lists what each module is."""
