"""The run store: sqlmodel tables, sessions and completion markers."""

from pwd_agent.store.db import dispose_engines, done_keys, get_engine, mark_done, session_scope, units_to_do
from pwd_agent.store.models import (
    Chain,
    Chunk,
    Concept,
    ConceptStatement,
    ConfigChange,
    Diagnosis,
    Document,
    Event,
    GeneralResult,
    ItemResult,
    LeakedSample,
    LLMBatch,
    LLMCall,
    Patch,
    Probe,
    ProbeResult,
    Round,
    RoundSample,
    Run,
    Sample,
    SourceFile,
    Statement,
    TestItem,
    WorkUnit,
)

__all__ = [
    "Chain", "Chunk", "Concept", "ConceptStatement", "ConfigChange", "Diagnosis", "Document", "Event", "GeneralResult",
    "ItemResult", "LeakedSample", "LLMBatch", "LLMCall", "Patch", "Probe", "ProbeResult", "Round", "RoundSample", "Run",
    "Sample", "SourceFile", "Statement", "TestItem", "WorkUnit",
    "dispose_engines", "done_keys", "get_engine", "mark_done", "session_scope", "units_to_do",
]
