"""What the steering commands do, shared by the CLI (`pause`, `set`, `review`) and the web page
(`pwd-agent ui`): one path for every action, whichever face asked for it."""

from __future__ import annotations

import json
from pathlib import Path

from pwd_agent.errors import PwdAgentError
from pwd_agent.context import RunContext

REVIEW_ACTIONS = ("approve", "reject", "edit")


def request_pause(ctx: RunContext) -> None:
    """Ask a running run to stop at its next node boundary (the driver reads the pause file)."""
    from pwd_agent.runs import PAUSE_FILE, is_running

    if not is_running(ctx):
        raise PwdAgentError(f"run {ctx.run_id} is not running",
                            f"nothing to pause; `pwd-agent resume {ctx.run_id}` continues it")
    (ctx.run_dir / PAUSE_FILE).touch()


def set_values(ctx: RunContext, assignments: list[str]) -> tuple[str, list[tuple[str, object, object]]]:
    """Change settings of a run, running or not. Returns how ("unchanged"; "pending": a live run
    applies them at its next node boundary; "applied": saved and logged now) and the changes."""
    from pwd_agent.driver import record_changes
    from pwd_agent.runs import PENDING_SET_FILE, checked_overrides, is_running, resume_config, run_lock

    _, changes = checked_overrides(ctx, assignments)  # refuse a bad or frozen key now
    if not changes:
        return "unchanged", []
    if is_running(ctx):
        pending = ctx.run_dir / PENDING_SET_FILE
        earlier = json.loads(pending.read_text()) if pending.exists() else []
        tmp = pending.with_suffix(".tmp")
        tmp.write_text(json.dumps(earlier + assignments))
        tmp.replace(pending)  # the driver never reads half a file
        return "pending", changes
    with run_lock(ctx):
        ctx, changes = resume_config(ctx, assignments)
    record_changes(ctx, changes, "set")
    return "applied", changes


def waiting_review(ctx: RunContext) -> dict:
    """What waits at a review gate ({"gate": name, ...}); refused when nothing waits (or the run is
    driven by a process right now)."""
    from pwd_agent.driver import waiting_gate
    from pwd_agent.runs import is_running

    waiting = None if is_running(ctx) else waiting_gate(ctx)
    if waiting is None:
        raise PwdAgentError(f"nothing waits for review in run {ctx.run_id}",
                            "gates stop a run only when gates.* are on; `pwd-agent status` shows where it is")
    return waiting


def check_answer(ctx: RunContext, waiting: dict, action: str, reason: str = "", edit_file: Path | None = None):
    """The reviewer's answer, checked before anything is stored: (answer, edited samples or None).
    An edit's every line is validated (fields, patch, leakage gate); an error names its line."""
    from pwd_agent.gates import read_edit

    if action not in REVIEW_ACTIONS:
        raise PwdAgentError(f"unknown review action '{action}'", "use approve, reject --reason TEXT, or edit FILE")
    if action == "reject" and not reason:
        raise PwdAgentError("reject needs a reason", f"pwd-agent review {ctx.run_id} reject --reason \"...\"")
    answer = {"action": action, "reason": reason}
    if action != "edit":
        return answer, None
    if waiting["gate"] != "on_patch" or edit_file is None:
        raise PwdAgentError("edit takes a JSONL file and applies to the patch gate only",
                            f"pwd-agent review {ctx.run_id} --out patches.jsonl, then edit patches.jsonl")
    edited = read_edit(ctx, waiting["round"], edit_file)  # every line checked before anything is stored
    answer["samples"] = len(edited)
    return answer, edited
