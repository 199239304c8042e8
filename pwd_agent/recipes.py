"""Knowledge-injection samples rendered from the KB, for every backend: paraphrased QA and plain text.

A small student learns a new fact only from many *varied* exposures (Physics of LMs 3.1: one fixed
text per fact ~10% recall on new wordings, five paraphrases ~96%), with the entity named in every
sentence, and best when plain text about the facts is trained beside the QA ("mixed training";
EntiGraph's synthetic continued pretraining). These samples are written by code from the KB nodes,
so both backends get them and they cost no LLM calls:

- `paraphrase_samples`: chat QA per L2 statement, each in the next wording of WORDINGS (the step
  that follows, as the answer), the process named in the question. V1 gets `builder.paraphrases`
  of them per statement; a patch gets as many again for each statement its diagnosis located,
  further along the cycle of six (wordings V1 did not use, while paraphrases <= 3): repair spends
  its budget on the nodes that failed.
- `text_passages`: plain text per chain (kind "text", empty prompt: the trainer puts the loss on
  every token, no chat layout), each walking the whole process in the next passage wording.

Every wording keeps the source direction (earlier step first) and puts words or a sentence end
between two steps: the tests state adjacent steps as "Right after A, B.", and the leakage gate
would drop a sample that repeats that frame. Passages name each step once (the order is the text's
own), which keeps them short: training time goes by tokens.
"""

from __future__ import annotations

from pwd_agent.agents.schemas import KBChain, KBStatement, SampleDraft
from pwd_agent.phrasing import sentence_case, step_phrase

# (question, answer) for one step pair: {p} the process (lower case), {a} the earlier step, {b} the
# next one, {B} the next one as a sentence.
WORDINGS = (
    ("In {p}, what happens next once {a}?", "{B}."),
    ("Which step of {p} comes after this one: {a}?", "The next step of {p} is that {b}."),
    ("During {p}, what follows the step where {a}?", "In {p}, the step where {a} is followed by the step where {b}."),
    ("{P}: {a}. What is the next step?", "Next in {p}: {b}."),
    ("Name the step of {p} that follows once {a}.", "Once {a}, {p} goes on with this step: {b}."),
    ("What does {p} go on with when {a}?", "When {a}, the following step of {p} is that {b}."),
)

# Plain-text walks through one process, each step named once and in order, the process named in
# every sentence: (opening, first step, each later step).
PASSAGES = (
    ("{P}. {summary}", "In {p}, first {b}.", "In {p}, next {b}."),
    ("How {p} is done, step by step.", "Step 1 of {p}: {b}.", "Step {n} of {p}: {b}."),
    ("The steps of {p} in their order.", "{P} begins when {b}.", "Then, in {p}, {b}."),
    ("{P}, told from start to finish.", "At the start of {p}, {b}.", "After that in {p}, {b}."),
)


def _fill(template: str, chain: KBChain, a: str = "", b: str = "", n: int = 0) -> str:
    p = chain.process_name.lower()
    return template.format(p=p, P=sentence_case(p), a=a, b=b, B=sentence_case(b), n=n, summary=chain.summary)


def paraphrase_samples(chain: KBChain, statements: list[KBStatement], per_statement: int,
                       offset: int = 0) -> list[SampleDraft]:
    """`per_statement` chat QA samples per statement, each in another wording (cycling WORDINGS,
    shifted per statement so that every wording is used across the chain); `offset` starts further
    along the cycle (patches use the wordings V1 did not)."""
    samples = []
    for st in statements:
        for j in range(offset, offset + per_statement):
            question, answer = WORDINGS[(st.position + j) % len(WORDINGS)]
            samples.append(SampleDraft(kind="qa", prompt=_fill(question, chain, st.subject, st.object),
                                       answer=_fill(answer, chain, st.subject, st.object), statement_ids=[st.id]))
    return samples


def passage(chain: KBChain, statements: list[KBStatement], variant: int) -> SampleDraft:
    """One plain-text walk through the chain's steps in wording `variant` (its preconditions first)."""
    opening, first, later = PASSAGES[variant % len(PASSAGES)]
    steps = [step_phrase(s) for s in chain.steps]
    lines = [_fill(opening, chain)]
    lines += [f"Before {chain.process_name.lower()} starts: {step_phrase(c)}." for c in chain.preconditions]
    lines.append(_fill(first, chain, b=steps[0], n=1))
    lines += [_fill(later, chain, b=steps[k], n=k + 1) for k in range(1, len(steps))]
    return SampleDraft(kind="text", prompt="", answer=" ".join(lines), statement_ids=[st.id for st in statements])


def text_passages(chain: KBChain, statements: list[KBStatement], n: int) -> list[SampleDraft]:
    """`n` plain-text passages of the chain, in wordings offset per chain."""
    if not statements:
        return []
    return [passage(chain, statements, chain.id + k) for k in range(n)]
