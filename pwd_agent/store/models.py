"""The run ledger: sqlmodel tables. Everything large lives here and is referenced by id."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def json_field(default: Any = None) -> Any:
    """A JSON column (lists of ids, options, evidence)."""
    factory = (lambda: list(default)) if isinstance(default, list) else (lambda: dict(default or {}))
    return Field(default_factory=factory, sa_column=Column(JSON))


class Document(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    path: str = Field(index=True)
    title: str
    content_hash: str = Field(index=True, unique=True)
    n_chars: int


class Chunk(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    document_id: int = Field(foreign_key="document.id", index=True)
    position: int
    heading: str = ""
    text: str
    content_hash: str = Field(index=True, unique=True)
    page: int | None = None  # the PDF page the chunk stands on (1-based)
    anchor: str | None = None  # the HTML id of its section (path.html#anchor)


class SourceFile(SQLModel, table=True):
    """What ingest did with one file of the corpus: converted, or skipped with its reason."""

    id: int | None = Field(default=None, primary_key=True)
    path: str = Field(index=True, unique=True)
    status: str = Field(index=True)  # converted | skipped
    reason: str | None = None  # unsupported type | over max_file_mb | unreadable | empty | duplicate content
    detail: str | None = None  # the reason in words: the parse error, the file it duplicates...
    converter: str | None = None  # e.g. pdf:pypdf, html:markdownify, docx:mammoth, text:cp1252
    n_bytes: int = 0
    n_chars: int = 0  # Markdown characters after conversion


class Chain(SQLModel, table=True):
    """L3: one reasoning chain (process) per chunk."""

    id: int | None = Field(default=None, primary_key=True)
    chunk_id: int = Field(foreign_key="chunk.id", index=True)
    process_name: str
    domain: str
    summary: str
    preconditions: list = json_field([])
    negative_constraints: list = json_field([])
    steps: list = json_field([])
    steps_hash: str = Field(index=True, unique=True)


class Statement(SQLModel, table=True):
    """L2: (subject, predicate, object) for one adjacent step pair, proven by an exact source quote."""

    id: int | None = Field(default=None, primary_key=True)
    chain_id: int = Field(foreign_key="chain.id", index=True)
    position: int
    subject: str
    predicate: str
    object: str
    source_quote: str
    spo_key: str = Field(index=True, unique=True)


class Concept(SQLModel, table=True):
    """L1: a canonical term with its definition in the domain's sense."""

    id: int | None = Field(default=None, primary_key=True)
    term: str = Field(index=True, unique=True)
    type: str = "term"
    definition: str


class ConceptStatement(SQLModel, table=True):
    concept_id: int = Field(foreign_key="concept.id", primary_key=True)
    # Its own index: the key leads with concept_id, and a chain's concepts are found by its statements
    # (without it every chain's lookup scanned the whole table: quadratic in the KB's size).
    statement_id: int = Field(foreign_key="statement.id", primary_key=True, index=True)


class TestItem(SQLModel, table=True):
    """A benchmark item (a unit test) built from one chain before any training."""

    __test__ = False  # not a pytest class
    id: int | None = Field(default=None, primary_key=True)
    chain_id: int = Field(foreign_key="chain.id", index=True)
    variant: int = 0
    split: str = Field(index=True)  # dev | holdout
    question: str
    options: list = json_field([])  # four option texts, A-D
    option_kinds: list = json_field([])  # "key" or the distractor type, per option
    option_statements: list = json_field([])  # statement id an option was built from (or null)
    answer: str  # sorted letters, e.g. "A,C"
    __table_args__ = (UniqueConstraint("chain_id", "variant"),)


class Scored(SQLModel):
    """What every stored prediction keeps: the raw completion, the parsed answer, the verdict."""

    raw: str
    predicted: str
    passed: bool


class Probe(SQLModel, table=True):
    """An atomic unit test on one KB node (statement or concept); scored, never trained on."""

    id: int | None = Field(default=None, primary_key=True)
    chain_id: int = Field(foreign_key="chain.id", index=True)  # the chain it was built for
    target: str  # statement | concept
    node_id: int = Field(index=True)  # Statement.id or Concept.id
    question: str
    options: list = json_field([])
    answer: str
    __table_args__ = (UniqueConstraint("target", "node_id"),)


class ProbeResult(Scored, table=True):
    """A probe's prediction in one round."""

    scorer: str = "letters"  # eval.scorer that produced `predicted`
    round_id: int = Field(foreign_key="round.id", primary_key=True)
    probe_id: int = Field(foreign_key="probe.id", primary_key=True)


class Sample(SQLModel, table=True):
    """A training sample (source code), with the KB nodes it teaches."""

    id: int | None = Field(default=None, primary_key=True)
    origin: str = Field(index=True)  # v1 | patch
    kind: str  # qa | choice | tf | concept | walk | counterfactual | contrast | text (plain text, empty prompt)
    prompt: str
    answer: str
    chain_id: int | None = Field(default=None, index=True)
    statement_ids: list = json_field([])
    concept_ids: list = json_field([])
    patch_id: int | None = Field(default=None, foreign_key="patch.id", index=True)


class LeakedSample(SQLModel, table=True):
    """A sample the leakage gate dropped because it reproduces a test item; never trained on."""

    id: int | None = Field(default=None, primary_key=True)
    origin: str = Field(index=True)  # v1 | patch
    kind: str
    prompt: str
    answer: str
    chain_id: int | None = None
    item_id: int = Field(foreign_key="testitem.id")
    part: str = "question"  # the part of the item it reproduces: "question" or "option C"
    overlap: float  # share of that part's own n-grams (those not in its source) found in the sample


class Round(SQLModel, table=True):
    """One compile-and-test round. Round 0 is the base model, evaluated before any training."""

    id: int = Field(primary_key=True)
    status: str = "pending"  # pending | training | trained | evaluated | failed
    n_train: int = 0
    n_patch: int = 0
    n_replay: int = 0
    train_loss: float | None = None
    adapter_path: str | None = None
    epochs: float | None = None  # epochs the kept weights saw (train.epochs, or early stopping's best): the ledger's
    parent_round: int | None = None  # the round whose adapter this one continued from (train.repair_from=previous)
    config_hash: str = ""
    prompt_version: str = ""  # the evaluation prompt
    prompt_versions: dict = json_field({})  # every agent prompt used so far: name -> version
    scorer: str | None = None  # eval.scorer the round's scores were computed with
    dev_acc: float | None = None
    holdout_acc: float | None = None
    dev_mass: float | None = None  # options scorer: mean probability mass on the keys
    holdout_mass: float | None = None
    general_acc: float | None = None  # the general-ability guard (eval.general)
    # Dev items against the previous round: fixed, broken, still failing, one-sided exact McNemar p.
    fixed: int | None = None
    broken: int | None = None
    still_failing: int | None = None
    gain_p: float | None = None
    error: str | None = None
    started_at: datetime = Field(default_factory=utcnow)  # the round's row is made when its training starts
    finished_at: datetime | None = None  # set when the round is evaluated


class RoundSample(SQLModel, table=True):
    """Membership of a sample in a round's training set (v1, patch or replay)."""

    round_id: int = Field(foreign_key="round.id", primary_key=True)
    sample_id: int = Field(foreign_key="sample.id", primary_key=True)
    role: str  # v1 | patch | replay


class ItemResult(Scored, table=True):
    """One stored prediction: what the student wrote for an item in a round."""

    round_id: int = Field(foreign_key="round.id", primary_key=True)
    item_id: int = Field(foreign_key="testitem.id", primary_key=True)
    prompt_version: str
    scorer: str = "letters"  # eval.scorer that produced `predicted`
    mass: float | None = None  # options scorer: the probability mass on the key options


class GeneralResult(Scored, table=True):
    """A prediction on the general-ability guard set in one round."""

    scorer: str = "letters"  # eval.scorer (or "lm_eval" for lm-evaluation-harness tasks)
    round_id: int = Field(foreign_key="round.id", primary_key=True)
    item_key: str = Field(primary_key=True)  # "<source>:<id>"


class Diagnosis(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    round_id: int = Field(foreign_key="round.id", index=True)
    item_id: int = Field(foreign_key="testitem.id", index=True)
    kind: str  # untaught | concept_gap | chain_break | item_suspect (flagged for review, not patched)
    statement_ids: list = json_field([])
    concept_ids: list = json_field([])
    evidence: dict = json_field({})
    confidence: float = 0.5  # the judge's own confidence in its opinion (judge_kind)
    judge_kind: str | None = None  # the judge agent's second opinion
    __table_args__ = (UniqueConstraint("round_id", "item_id"),)


class Patch(SQLModel, table=True):
    """Links a diagnosis to the samples written to repair it; they train in `target_round`."""

    id: int | None = Field(default=None, primary_key=True)
    diagnosis_id: int = Field(foreign_key="diagnosis.id", index=True, unique=True)
    target_round: int = Field(index=True)
    n_samples: int = 0


class LLMCall(SQLModel, table=True):
    """Every agent call, offline ones included (cost 0), for the ledger and the cache."""

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    agent: str = Field(index=True)
    prompt_name: str
    prompt_version: str
    prompt_hash: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    cache_hit: bool = False
    cost: float = 0.0
    ok: bool = True
    error: str | None = None  # why the reply was rejected (schema or meaning check), for the ledger
    batch: bool = False  # answered through the Batch API (cost at llm.batch_price_factor)


class LLMBatch(SQLModel, table=True):
    """A Batch API job of this run, stored before anything waits on it: a killed run polls the same
    batch for these custom_ids (response-cache keys) instead of sending them again."""

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    input_file_id: str
    batch_id: str | None = Field(default=None, index=True)  # None: created on the server or not, unknown yet
    status: str = "submitting"  # submitting, submitted, then the server's final status (completed, expired...)
    custom_ids: list = json_field([])
    n_failed: int = 0  # rows the batch did not answer (sent live instead)
    finished_at: datetime | None = None


class Event(SQLModel, table=True):
    """A milestone in the agents' log; `pwd-agent logs` reads these."""

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    node: str = Field(index=True)
    level: str = "info"
    message: str
    data: dict = json_field({})


class WorkUnit(SQLModel, table=True):
    """Completion marker of one unit of a stage (a chunk extracted, a chain tested...)."""

    stage: str = Field(primary_key=True)
    key: str = Field(primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    error: str | None = None  # a failed unit: why (an answer that failed its schema or checks); not retried


class Run(SQLModel, table=True):
    """The run's state as its driving process last wrote it (pwd_agent/runstate.py). `status`,
    `logs -f`, `list`, the report and the trackers read it; the events are the log, not the state."""

    run_id: str = Field(primary_key=True)
    status: str = "running"  # running | paused | finished | stopped | interrupted | crashed
    stage: str | None = None  # the node(s) to run next, as of the last node boundary
    round: int = 0
    stop_reason: str | None = None  # once finished: why the loop ended (the decide node's reason)
    goal_met: bool | None = None
    gate: str | None = None  # while paused at a review gate: its name (else paused on request, before `stage`)
    error: str | None = None  # stopped or crashed: the message
    pid: int | None = None  # the process that drives (or last drove) the run
    started_at: datetime = Field(default_factory=utcnow)  # the run's first start
    process_started_at: datetime = Field(default_factory=utcnow)  # this (or the last) process's start
    finished_at: datetime | None = None  # when the last process ended, however it ended
    updated_at: datetime = Field(default_factory=utcnow)


class ConfigChange(SQLModel, table=True):
    """A setting changed in a started run (`resume --set`, `set` mid-run), for the report."""

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    key: str
    old: Any = Field(default=None, sa_column=Column(JSON))
    new: Any = Field(default=None, sa_column=Column(JSON))
    how: str  # "override on resume", "set mid-run"
