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

from pwd_agent.schemas import KBChain, KBConcept, KBStatement, SampleDraft
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

# The same fact asked the other way round (the earlier step as the answer), for patches: a fact
# trained in one direction only is not retrieved in the other (the reversal curse), and the
# reversed wordings are new to a student that saw only V1's forward ones. {A} the earlier step as a
# sentence.
REVERSE_WORDINGS = (
    ("In {p}, what happens just before {b}?", "{A}, and then {b}."),
    ("Which step of {p} comes right before this one: {b}?", "The step before it in {p} is that {a}."),
    ("During {p}, what must have happened before the step where {b}?", "In {p}, first {a}; only then {b}."),
    ("{P}: {b}. What was the step before?", "Before that in {p}: {a}."),
    ("Name the step of {p} that leads to this one: {b}.", "In {p}, the step where {a} leads to the step where {b}."),
    ("What has {p} just done when {b}?", "When {b}, {p} has just finished the step where {a}."),
)
# Both directions, interleaved, so a dose of any size gets both.
PATCH_WORDINGS = tuple(w for pair in zip(WORDINGS, REVERSE_WORDINGS) for w in pair)

# More forward wordings (the earlier step in the question, the later one as the answer), for a dose
# that never asks the way back (builder.patch_wordings: forward): a question "what came before B?"
# trains the student to say A after B, which is the reversed-order claim an order item offers as a
# distractor. Each answer that names both steps names them in their order.
FORWARD_WORDINGS = (
    ("In {p}, which step directly follows the one where {a}?",
     "In {p}, the step where {a} is directly followed by this one: {b}."),
    ("Once {a}, what comes next in {p}?", "Once {a}, what comes next in {p} is that {b}."),
    ("Give the next step of {p} after this one: {a}.",
     "After the step where {a}, {p} continues with the step where {b}."),
    ("{P} has just reached the step where {a}. What is the step that follows?",
     "The step that follows in {p} is that {b}."),
    ("Which step of {p} is the successor of this one: {a}?",
     "In {p}, the successor of the step where {a} is the step where {b}."),
    ("State the step where {a} and the step after it, in the order of {p}.",
     "In {p}, first {a}, and immediately next {b}."),
)

# A contrast sample (builder.patch_wordings: contrast): one true claim about a step pair among false
# ones about the same steps (the pair reversed, a step skipped), the true claim written out as the
# answer, so the loss falls where the claims part: on which step comes first. Claims are framed unlike
# the tests' options (the leakage gate keeps it so).
CONTRAST_QUESTIONS = (
    "Which of these is true of {p}?",
    "Only one of these claims about the order of {p} is correct. Which one?",
    "In {p}, which statement gets two consecutive steps right?",
    "Pick the true statement about the order of {p}.",
)
CLAIM_FRAMES = (
    "Once {x}, the next thing that happens is that {y}.",
    "The step where {x} is directly followed by the step where {y}.",
    "First {x}; the very next step is that {y}.",
)
# A plain-text walk over one step pair (builder.patch_wordings: text), the kind of sample V1 teaches its
# taught runs with (text_passages): the two steps in their order, each in a sentence of its own, the
# process named in each; trained with the loss on every token. None may equal a V1 walk over a
# single pair (MIDDLE_PASSAGES, START_PASSAGES): the dose would repeat V1 (test_patch_dose).
PAIR_PASSAGES = (
    "Part of {p}, in order: at one point {a}. Straight after that, in {p}, {b}.",
    "A stretch of {p}, one step and the next. In {p}, {a}. Then, in {p}, {b}.",
    "Two steps of {p} in their order. In {p}, {a}. After that in {p}, {b}.",
    "Midway through {p}, {a}. Next in {p}, {b}.",
    "In {p}, {a}. The step that comes next in {p}: {b}.",
    "{P} at one of its steps: {a}. What {p} does next: {b}.",
)
PATCH_FORMS = ("both", "forward", "contrast", "text")

# Definitions of one L1 concept, for a failing concept probe: {t} the term, {d} its definition.
CONCEPT_WORDINGS = (
    ("In {p}, what is meant by {t}?", "{d}"),
    ("Define {t}, as the word is used in {p}.", "In {p}, {t}: {d}"),
    ("What does the term {t} name in {p}?", "The term {t} names this: {d}"),
    ("Explain {t} in one sentence.", "{D} That is what {t} means in {p}."),
)

# Plain-text walks through one process, each step named once and in order, the process named in
# every sentence: (opening, first step, each later step).
PASSAGES = (
    ("{P}. {summary}", "In {p}, first {b}.", "In {p}, next {b}."),
    ("How {p} is done, step by step.", "Step 1 of {p}: {b}.", "Step {n} of {p}: {b}."),
    ("The steps of {p} in their order.", "{P} begins when {b}.", "Then, in {p}, {b}."),
    ("{P}, told from start to finish.", "At the start of {p}, {b}.", "After that in {p}, {b}."),
)


def _fill(template: str, chain: KBChain, a: str = "", b: str = "", n: int = 0, **more) -> str:
    p = chain.process_name.lower()
    return template.format(p=p, P=sentence_case(p), a=a, b=b, A=sentence_case(a), B=sentence_case(b), n=n,
                           summary=chain.summary, **more)


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


def text_passages(chain: KBChain, statements: list[KBStatement], n: int,
                  taught: set[int] | None = None) -> list[SampleDraft]:
    """`n` plain-text passages of the chain, in wordings offset per chain. With `taught` (a V1 on a
    budget), each passage walks only the runs of consecutive taught statements, so an untaught
    step pair is never put side by side."""
    if not statements:
        return []
    if taught is None:
        return [passage(chain, statements, chain.id + k) for k in range(n)]
    out = []
    for run in taught_runs(statements, taught):
        # The run's steps: the first statement's subject, then each object, as a chain of its own.
        part = chain.model_copy(update={"steps": [run[0].subject, *[st.object for st in run]]})
        if len(run) == len(statements):  # the whole process
            out += [passage(part, run, chain.id + k) for k in range(n)]
        elif run[0].position == 0:  # its start, not its end: nothing that claims the walk is complete
            out += [middle_passage(part, run, chain.id + k, START_PASSAGES) for k in range(n)]
        else:  # a run from the middle: no summary, no "first", no step numbers that claim the start
            out += [middle_passage(part, run, chain.id + run[0].position + k) for k in range(n)]
    return out


# Walks through a run of steps from the middle of a process: (opening, each step after the first).
MIDDLE_PASSAGES = (
    ("Part of {p}, in order: at one point {b}.", "In {p}, next {b}."),
    ("A stretch of {p}, step by step. In {p}, {b}.", "Then, in {p}, {b}."),
    ("Some steps of {p} in their order. In {p}, {b}.", "After that in {p}, {b}."),
    ("Midway through {p}, {b}.", "Later in {p}, {b}."),
)


# Walks through the first steps of a process when V1 teaches only those: (opening, each later step).
START_PASSAGES = (
    ("How {p} begins. {P} begins when {b}.", "Then, in {p}, {b}."),
    ("The opening steps of {p}. In {p}, first {b}.", "In {p}, next {b}."),
    ("At the start of {p}, {b}.", "After that in {p}, {b}."),
    ("{P} opens like this: {b}.", "Later in {p}, {b}."),
)


def middle_passage(part: KBChain, run: list[KBStatement], variant: int, wordings=MIDDLE_PASSAGES) -> SampleDraft:
    """A plain-text walk through a run of consecutive steps that is not the whole process (from its
    middle by default; START_PASSAGES for its opening steps)."""
    opening, later = wordings[variant % len(wordings)]
    steps = [step_phrase(s) for s in part.steps]
    lines = [_fill(opening, part, b=steps[0])] + [_fill(later, part, b=x) for x in steps[1:]]
    return SampleDraft(kind="text", prompt="", answer=" ".join(lines), statement_ids=[st.id for st in run])


def taught_runs(statements: list[KBStatement], taught: set[int]) -> list[list[KBStatement]]:
    """Maximal runs of consecutive (by position) statements whose ids are in `taught`."""
    runs: list[list[KBStatement]] = []
    for st in sorted(statements, key=lambda s: s.position):
        if st.id not in taught:
            continue
        if runs and runs[-1][-1].position == st.position - 1:
            runs[-1].append(st)
        else:
            runs.append([st])
    return runs


def dose_samples(chain: KBChain, statement: KBStatement, n: int, used: int = 0,
                 form: str = "both") -> list[SampleDraft]:
    """Up to `n` samples teaching one statement, leaving out the `used` forward wordings V1 gave it
    (paraphrase_samples: from its position on). `form` (builder.patch_wordings): "both", chat QA in
    PATCH_WORDINGS (forward and reversed, interleaved); "forward", chat QA in WORDINGS then
    FORWARD_WORDINGS, never the way back; "contrast", forward QA and contrast samples in turn; "text",
    forward QA and plain-text walks over the pair (PAIR_PASSAGES) in turn. Never a repeat, and in every
    form at most 12 samples less V1's wordings, so at train.epochs e a node's dose is capped at
    (12 - used) x e exposures (patch logs when it is)."""
    if form not in PATCH_FORMS:
        raise ValueError(f"unknown patch form {form!r}: use one of {', '.join(PATCH_FORMS)}")
    v1 = {(statement.position + j) % len(WORDINGS) for j in range(used)}
    if form == "both":
        worded = [w for k, w in enumerate(PATCH_WORDINGS) if not (k % 2 == 0 and k // 2 in v1)]
    else:
        worded = [w for k, w in enumerate(WORDINGS) if k not in v1] + list(FORWARD_WORDINGS)
    qa = [SampleDraft(kind="qa", prompt=_fill(q, chain, statement.subject, statement.object),
                      answer=_fill(a, chain, statement.subject, statement.object), statement_ids=[statement.id])
          for q, a in worded]
    if form in ("both", "forward"):
        return qa[:n]
    other = (contrast_samples(chain, statement, len(qa)) if form == "contrast"
             else pair_passages(chain, statement, len(qa)))
    mixed = [x for pair in zip(qa, other) for x in pair] + qa[len(other):]
    return mixed[:min(n, len(qa))]


def pair_passages(chain: KBChain, statement: KBStatement, n: int) -> list[SampleDraft]:
    """Up to `n` plain-text walks over one step pair, one per PAIR_PASSAGES wording."""
    return [SampleDraft(kind="text", prompt="", answer=_fill(w, chain, statement.subject, statement.object),
                        statement_ids=[statement.id]) for w in PAIR_PASSAGES[:n]]


def contrast_samples(chain: KBChain, statement: KBStatement, n: int) -> list[SampleDraft]:
    """Up to `n` distinct contrast samples for one step pair (a, b): the true claim "a, then b" among
    up to three false ones (b then a; a then the step after b; the step before a, then b), in
    CONTRAST_QUESTIONS x CLAIM_FRAMES, the options' order turned with each sample."""
    steps = [step_phrase(s) for s in chain.steps]
    a, b = statement.subject, statement.object
    pos = statement.position
    false = [(b, a)]
    if pos + 2 < len(steps):
        false.append((a, steps[pos + 2]))
    if pos >= 1:
        false.append((steps[pos - 1], b))
    if len(false) < 2:  # a two-step process: nothing to contrast but the reversal
        return []
    out = []
    for k in range(n):
        frame = CLAIM_FRAMES[k % len(CLAIM_FRAMES)]
        claims = [sentence_case(frame.format(x=x, y=y)) for x, y in [(a, b), *false]]
        turn = k % len(claims)
        shown = claims[turn:] + claims[:turn]
        question = _fill(CONTRAST_QUESTIONS[(k // len(CLAIM_FRAMES)) % len(CONTRAST_QUESTIONS)], chain)
        out.append(SampleDraft(kind="contrast", prompt=question + "\n" + "\n".join(f"- {c}" for c in shown),
                               answer=claims[0], statement_ids=[statement.id]))
    return out


def concept_dose(chain: KBChain, concept: KBConcept, n: int) -> list[SampleDraft]:
    """Up to `n` definition samples of one concept, one per CONCEPT_WORDINGS (never a repeat)."""
    d = concept.definition.strip()
    return [SampleDraft(kind="concept", prompt=_fill(q, chain, t=concept.term, d=d, D=sentence_case(d)),
                        answer=_fill(a, chain, t=concept.term, d=d, D=sentence_case(d)),
                        statement_ids=concept.statement_ids, concept_ids=[concept.id])
            for q, a in CONCEPT_WORDINGS[:n]]


# A chain break's samples around one located pair (a -> b), its neighbour (b -> c, or the pair before
# it), and the steps after a: two hops in one sample, and the transitive "comes before" facts.
HOP_WORDINGS = (
    ("Walk through {p} around the step where {a}.", "In {p}, once {a}, next {b}. Once {b}, next {c}."),
    ("In {p}, which two steps follow once {a}?", "First {b}; after that, {c}. That is the order in {p}."),
    ("Put these steps of {p} in order: {c}; {a}; {b}.", "In {p}: {a}, then {b}, then {c}."),
    ("{P}: what happens from the step where {a} on?", "In {p}, the step where {a} leads to {b}, and {b} to {c}."),
)
# {b} here is every later step: one sentence each ("each"), or listed in one sentence ("list").
LATER_WORDINGS = (
    ("each", "In {p}, what happens after {a}?", "In {p}, the step where {a} comes before the step where {b}."),
    ("list", "Which steps of {p} come later than this one: {a}?",
     "In {p}, after the step where {a} there come, in order: {b}."),
    ("list", "In {p}, what still has to happen once {a}?", "Once {a}, {p} still has these steps to come: {b}."),
)


def chain_dose(chain: KBChain, statements: list[KBStatement], located: list[KBStatement], n: int) -> list[SampleDraft]:
    """Up to `n` distinct samples for a chain break at `located`, taken in turn per located pair:
    both hops around it in one sample (HOP_WORDINGS) and the transitive "comes before" facts from
    its earlier step (LATER_WORDINGS: what the `later` facet asks). Never a repeat: capped at the
    wordings there are, like dose_samples."""
    by_pos = {st.position: st for st in statements}
    steps = [step_phrase(s) for s in chain.steps]
    per_node: list[list[SampleDraft]] = []
    for st in located:
        nxt, prev = by_pos.get(st.position + 1), by_pos.get(st.position - 1)
        first, second = (st, nxt) if nxt else (prev, st) if prev else (st, None)
        mine = []
        if second is not None:
            ids = [first.id, second.id]
            mine += [SampleDraft(kind="walk", prompt=_fill(q, chain, first.subject, first.object, c=second.object),
                                 answer=_fill(a, chain, first.subject, first.object, c=second.object),
                                 statement_ids=ids) for q, a in HOP_WORDINGS]
        later = steps[st.position + 1:]
        ids = [s.id for s in statements if s.position >= st.position]
        for form, q, a in LATER_WORDINGS if later else ():
            answer = (" ".join(_fill(a, chain, st.subject, x) for x in later) if form == "each"
                      else _fill(a, chain, st.subject, "; ".join(later)))
            mine.append(SampleDraft(kind="walk", prompt=_fill(q, chain, st.subject), answer=answer, statement_ids=ids))
        per_node.append(mine)
    # The located nodes in turn, each node's samples in order (hops, then later-facts).
    depth = max((len(m) for m in per_node), default=0)
    made = [m[turn] for turn in range(depth) for m in per_node if turn < len(m)]
    unique = list({(x.prompt, x.answer): x for x in made}.values())
    return unique[:n]
