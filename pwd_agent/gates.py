"""Human review gates: the run pauses (LangGraph `interrupt()`), a person answers with `pwd-agent
review RUN approve | reject --reason ... | edit FILE`, and the run goes on from the same node.

Gates (config `gates.*`): `after_kb` (before tests are built), `after_tests` (before training data
is written), `on_patch` (after each patch batch: the patches can be edited), `before_train`
(before each repair-round training). A node calls `gate()` at a point where it is idempotent, so
re-running it on resume is safe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from langgraph.types import interrupt
from pydantic import BaseModel, Field, ValidationError
from sqlmodel import Session, select

from pwd_agent.errors import GateRejected, PwdAgentError, first_error
from pwd_agent.events import emit
from pwd_agent.leakage import load_gate, sample_text
from pwd_agent.context import RunContext
from pwd_agent.store import Diagnosis, Patch, Sample, Statement, TestItem, session_scope


def gate(ctx: RunContext, name: str, summary: Callable[[Session], dict] = lambda session: {}) -> None:
    """Pause for a decision if gates.<name> is on; return on approve/edit, stop the run on reject.
    `summary` (what waits, for `review`) is read from the store only when the gate is on."""
    if not getattr(ctx.config.gates, name):
        return
    with session_scope(ctx.db_url) as session:
        shown = summary(session)
    answer = interrupt({"gate": name, **shown})
    action = answer.get("action")
    emit(ctx.db_url, "review", f"gate {name}: {action}" + (f" ({answer['reason']})" if answer.get("reason") else ""),
         gate=name, **answer)
    if action == "reject":
        raise GateRejected(f"rejected at the {name} gate: {answer.get('reason') or 'no reason given'}",
                           f"fix what was rejected, then `pwd-agent resume {ctx.run_id}` asks again")


# ---- the patch gate's content --------------------------------------------------------------------
class EditedSample(BaseModel):
    """One line of an edited patch file (`pwd-agent review RUN --out F` writes the current ones)."""

    patch_id: int
    kind: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    statement_ids: list[int] = []
    concept_ids: list[int] = []


def patch_rows(ctx: RunContext, round_id: int) -> list[tuple[Patch, Diagnosis, list[Sample]]]:
    with session_scope(ctx.db_url) as s:
        patches = s.exec(select(Patch).where(Patch.target_round == round_id + 1).order_by(Patch.id)).all()
        return [(p, s.get(Diagnosis, p.diagnosis_id),
                 list(s.exec(select(Sample).where(Sample.patch_id == p.id).order_by(Sample.id)).all()))
                for p in patches]


def describe_patches(ctx: RunContext, round_id: int) -> str:
    """Patch samples grouped by diagnosis, with the KB nodes each diagnosis blames."""
    lines = []
    with session_scope(ctx.db_url) as s:
        statements = {st.id: st for st in s.exec(select(Statement)).all()}
    for patch, diagnosis, samples in patch_rows(ctx, round_id):
        lines.append(f"patch {patch.id} <- diagnosis {diagnosis.id}: item {diagnosis.item_id}, {diagnosis.kind}; "
                     f"{diagnosis.evidence.get('rule', '')}")
        for sid in diagnosis.statement_ids:
            st = statements[sid]
            lines.append(f"  statement {sid}: {st.subject} {st.predicate} {st.object}")
        for x in samples:
            lines.append(f"  [{x.kind}] {' '.join(x.prompt.split())[:100]} => {' '.join(x.answer.split())[:60]}")
    return "\n".join(lines) or "no patches in this batch"


def dump_patches(ctx: RunContext, round_id: int, path: Path) -> int:
    rows = [EditedSample(patch_id=p.id, kind=x.kind, prompt=x.prompt, answer=x.answer, statement_ids=x.statement_ids,
                         concept_ids=x.concept_ids).model_dump()
            for p, _, samples in patch_rows(ctx, round_id) for x in samples]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return len(rows)


def read_edit(ctx: RunContext, round_id: int, path: Path) -> list[EditedSample]:
    """Validate every line first (its fields, its patch, the leakage gate); any error names its
    line and nothing is stored."""
    if not path.is_file():
        raise PwdAgentError(f"edit file not found: {path}",
                            f"write one with `pwd-agent review {ctx.run_id} --out {path}`")
    known = {p.id for p, _, _ in patch_rows(ctx, round_id)}
    with session_scope(ctx.db_url) as session:  # a reviewer's lines pass the same gate as the agents'
        leak_gate = load_gate(session, ctx.config.builder.leakage_ngram, ctx.config.builder.leakage_threshold)
    edited = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = EditedSample.model_validate_json(line)
        except ValidationError as exc:
            where, message, _ = first_error(exc, "the line")
            raise PwdAgentError(f"{path} line {n}: {where}: {message}",
                                "fix that line; nothing was stored") from None
        if row.patch_id not in known:
            raise PwdAgentError(f"{path} line {n}: patch {row.patch_id} is not in this batch",
                                f"patches waiting: {sorted(known)}; nothing was stored")
        if leak := leak_gate.check(sample_text(row)):
            raise PwdAgentError(f"{path} line {n}: the sample reproduces test item {leak.item_id} ({leak.part}: "
                                f"{leak.overlap:.0%} of its own word {leak_gate.n}-grams)",
                                "teach the fact in other words than the test item; nothing was stored")
        edited.append(row)
    if not edited:
        raise PwdAgentError(f"{path} has no samples", "reject the batch instead, with a reason")
    return edited


def replace_patches(ctx: RunContext, round_id: int, edited: list[EditedSample]) -> None:
    """The batch's samples become exactly the edited ones, in one transaction."""
    with session_scope(ctx.db_url) as s:
        patches = s.exec(select(Patch).where(Patch.target_round == round_id + 1)).all()
        item_of_patch = {p.id: s.get(Diagnosis, p.diagnosis_id).item_id for p in patches}
        for old in s.exec(select(Sample).where(Sample.patch_id.in_([p.id for p in patches]))).all():
            s.delete(old)
        for row in edited:
            chain_id = s.get(TestItem, item_of_patch[row.patch_id]).chain_id
            s.add(Sample(origin="patch", chain_id=chain_id, **row.model_dump()))
        counts = {p.id: sum(1 for r in edited if r.patch_id == p.id) for p in patches}
        for p in patches:
            p.n_samples = counts[p.id]
            s.add(p)
