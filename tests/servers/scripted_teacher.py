"""A scripted teacher behind a real HTTP /v1/chat/completions endpoint, for the LLM-backend loop tests.

No competent model can run here, so this server reads our own prompts and answers them with the
offline rules, as JSON. It exercises everything between the prompt files and the store (HTTP,
response_format, validation, cache, ledger) with answers good enough for the loop to reach training.
The real server (llama.cpp serving SmolLM2) is tested in test_llm_server.py.
"""

from __future__ import annotations

import hashlib
import json
import re

from pwd_agent.schemas import ChainDraft, KBChain, KBStatement, StatementDraft
from pwd_agent.llm.offline import OfflineAgents, step_phrase

from servers.chat_endpoint import ChatEndpoint, completion


def _passage(text: str) -> str:
    return text.split('"""\n', 1)[1].split('\n"""', 1)[0]


def _numbered(text: str, after: str) -> list[str]:
    block = text.split(after, 1)[1].split("\n\n", 1)[0]
    return [m.group(1) for m in re.finditer(r"^\d+\. (.*)$", block, re.M)]


def _count(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else 0


# Steps of processes that are not in the corpus: the membership and later-step distractors.
FOREIGN_STEPS = ["the operator records the meter readings in the log book", "the spare pump is started for a test run",
                 "the laboratory sends the monthly report to the regulator", "the control panel lamps are checked"]


def test_item(prompt: str) -> dict:
    """An item on the facet the prompt names (the offline tester's rules on the prompt's steps)."""
    steps = _numbered(prompt, "Steps, in order:\n")
    name, domain = re.search(r"^Process: (.*) \((.*)\)$", prompt, re.M).groups()
    summary = re.search(r"^Summary: (.*)$", prompt, re.M).group(1)
    variant = _count(r"Write question number (\d+)", prompt) - 1
    chain_id = int(hashlib.sha256(name.encode()).hexdigest()[:6], 16)
    chain = KBChain(id=chain_id, process_name=name, domain=domain, summary=summary, steps=steps)
    statements = [KBStatement(id=i + 1, chain_id=chain_id, position=i, subject=step_phrase(a), predicate="p",
                              object=step_phrase(b), source_quote=f"{a} {b}")
                  for i, (a, b) in enumerate(zip(steps, steps[1:]))]
    item = OfflineAgents().write_test_item(chain, statements, FOREIGN_STEPS, variant)
    if item is None:
        return {"question": "Which of these steps come first in the process?", "options": []}
    return {"question": item.question, "options": [
        {"text": text, "correct": kind == "key", "fault": "none" if kind == "key" else kind,
         "step": None if node is None else node - 1}
        for text, kind, node in zip(item.options, item.option_kinds, item.option_statements)]}


def answer(prompt: str) -> dict:
    rules = OfflineAgents()
    if "decide whether it" in prompt:
        title = re.search(r"^Document: (.*)$", prompt, re.M).group(1)
        heading = re.search(r"^Section: (.*)$", prompt, re.M).group(1)
        chain = rules.extract_chain(_passage(prompt), heading, title)
        return {"chain": chain.model_dump() if chain else None}
    if "For each pair of adjacent steps" in prompt:
        chain = ChainDraft(process_name="p", domain="d", summary="s", steps=_numbered(prompt, "Steps:\n"))
        return {"statements": [s.model_dump() for s in rules.extract_statements(_passage(prompt), chain)]}
    if "List the technical concepts" in prompt:
        lines = _numbered(prompt, "Statements:\n")
        drafts = [StatementDraft(position=i, subject=line, predicate="p", object=line, source_quote="q")
                  for i, line in enumerate(lines)]
        chain = ChainDraft(process_name="p", domain="d", summary="s", steps=["a", "b"])
        return {"concepts": [c.model_dump() for c in rules.extract_concepts(_passage(prompt), chain, drafts)]}
    if "You write exam questions" in prompt:
        return test_item(prompt)
    if "answered a test item wrongly" in prompt:
        has_facts = bool(re.search(r"^0\. ", prompt.split("Facts the item is built on", 1)[1], re.M))
        return {"kind": "concept_gap", "statements": [0] if has_facts else [], "reason": "scripted", "confidence": 0.6}
    if "Facts" in prompt:  # builder and patch prompts
        facts = re.findall(r"^\d+\. (.*)$", prompt, re.M)
        n = _count(r"Write (\d+)\s+training samples", prompt) or sum(
            _count(p, prompt)
            for p in (r"- (\d+) open questions", r"- (\d+) multiple-choice", r"- (\d+) true-or-false"))
        return {"samples": [{"kind": "qa", "question": f"What does fact {i % max(1, len(facts))} say?",
                             "answer": facts[i % len(facts)] if facts else "nothing",
                             "statements": [0] if facts else []}
                            for i in range(max(1, n))]}
    raise ValueError("unknown prompt")


class ScriptedTeacher(ChatEndpoint):
    """Answers every request from the prompt it was first sent (a re-ask gets the same answer) and
    keeps every request body it was sent (`prompts`).

    With `leaky=True` it behaves like a teacher that reuses its own exam wording: each patch it
    writes carries one more sample whose answer is a key option it wrote for that process, which the
    leakage gate must drop."""

    def __init__(self, leaky: bool = False):
        self.requests = 0
        self.prompts: list[str] = []
        self.leaky = leaky
        self.keys: dict[str, set[str]] = {}  # process name -> key options written for it
        super().__init__()

    def reply(self, body, handler):
        self.requests += 1
        prompt = body["messages"][1]["content"]
        self.prompts.append(prompt)
        reply = answer(prompt)
        process = re.search(r"^Process: (.*?)(?: \(.*\))?$", prompt, re.M)
        if "You write exam questions" in prompt:
            self.keys.setdefault(process.group(1), set()).update(o["text"] for o in reply["options"] if o["correct"])
        elif self.leaky and "samples" in reply and process and self.keys.get(process.group(1)):
            copied = min(self.keys[process.group(1)])
            reply["samples"].insert(0, {"kind": "qa", "question": "Which claim about this process is true?",
                                        "answer": copied, "statements": []})
        content = json.dumps(reply)
        self.send(handler, 200, completion(body["model"], content, len(prompt) // 4, len(content) // 4))
