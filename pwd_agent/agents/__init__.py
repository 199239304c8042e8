"""The agents: schemas.py (the bounded drafts every backend answers in), runner.py (a backend call ->
validated object + ledger rows), extractor.py (top-down extraction), quotes.py (quote anchoring).

Kept empty on purpose: llm/ and store/ import agents.schemas, so this package's own import must
not pull in the store, the events or a backend (no import circle, lazy imports counted)."""
