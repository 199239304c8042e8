"""The agents: runner.py (a backend call -> validated object + ledger rows), extractor.py (top-down
extraction); the drafts they answer in live in the leaf pwd_agent/schemas.py, quote anchoring in
llm/quotes.py (only the LLM agents need it, so llm/ never imports agents/)."""
