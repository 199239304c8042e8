"""A scripted teacher behind a real HTTP /v1/chat/completions endpoint, for the LLM-backend loop tests.

No competent model can run here, so this server reads our own prompts and answers them with the
offline rules, as JSON. It exercises everything between the prompt files and the store (HTTP,
response_format, validation, cache, ledger) with answers good enough for the loop to reach training.
The real server (llama.cpp serving SmolLM2) is tested in test_llm_server.py.
"""

from __future__ import annotations

import json
import re

from pwd_agent.agents.schemas import ChainDraft, StatementDraft
from pwd_agent.llm.offline import OfflineAgents

from servers.chat_endpoint import ChatEndpoint, completion


def _passage(text: str) -> str:
    return text.split('"""\n', 1)[1].split('\n"""', 1)[0]


def _numbered(text: str, after: str) -> list[str]:
    block = text.split(after, 1)[1].split("\n\n", 1)[0]
    return [m.group(1) for m in re.finditer(r"^\d+\. (.*)$", block, re.M)]


def _count(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else 0


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
        steps = _numbered(prompt, "Steps, in order:\n")
        options = [{"text": f"After '{a}' comes '{b}'.", "correct": True, "fault": "none", "step": i}
                   for i, (a, b) in enumerate(zip(steps, steps[1:]))][:2]
        options += [{"text": f"After '{b}' comes '{a}'.", "correct": False, "fault": "wrong_order", "step": i}
                    for i, (a, b) in enumerate(zip(steps, steps[1:]))][: 4 - len(options)]
        return {"question": "Which statements give a step and the step right after it? " * 4, "options": options}
    if "answered a test item wrongly" in prompt:
        has_facts = bool(re.search(r"^0\. ", prompt.split("Facts the item is built on", 1)[1], re.M))
        return {"kind": "concept_gap", "statements": [0] if has_facts else [], "reason": "scripted", "confidence": 0.6}
    if "Facts" in prompt:  # builder and patch prompts
        facts = re.findall(r"^\d+\. (.*)$", prompt, re.M)
        n = _count(r"Write (\d+)\s+training samples", prompt) or sum(
            _count(p, prompt) for p in (r"- (\d+) open questions", r"- (\d+) multiple-choice", r"- (\d+) true-or-false"))
        return {"samples": [{"kind": "qa", "question": f"What does fact {i % max(1, len(facts))} say?",
                             "answer": facts[i % len(facts)] if facts else "nothing", "statements": [0] if facts else []}
                            for i in range(max(1, n))]}
    raise ValueError("unknown prompt")


class ScriptedTeacher(ChatEndpoint):
    """Answers every request from the prompt it was first sent (a re-ask gets the same answer)."""

    def __init__(self):
        self.requests = 0
        super().__init__()

    def reply(self, body, handler):
        self.requests += 1
        prompt = body["messages"][1]["content"]
        content = json.dumps(answer(prompt))
        self.send(handler, 200, completion(body["model"], content, len(prompt) // 4, len(content) // 4))
