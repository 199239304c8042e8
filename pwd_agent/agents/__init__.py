"""The agents: runner.py (a backend call -> validated object + ledger rows), extractor.py (top-down
extraction), quotes.py (quote anchoring); the drafts they answer in live in the leaf pwd_agent/schemas.py.

Kept empty on purpose: llm/llm_agents.py imports agents.quotes, so this package's own import must
not pull in runner.py, which builds llm/'s backends (no import circle, lazy imports counted)."""
