"""`pwd-agent ui` in a real headless Chromium (Debian's `chromium`, driven by Playwright's Python client)
against a live run on the tiny model: the log and the rounds table follow the run, a run at the patch gate
is approved from the page and goes on, a bad upload is refused with its line, a write without the token gets 403.

With PWD_AGENT_UI_SHOTS=FOLDER the same browser saves a screenshot of each page there (docs/img for the README)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sqlmodel import select

from pwd_agent.runs import open_run
from pwd_agent.store import Run, Sample, session_scope

from test_loop import NO_GUARD, tiny_args

pytestmark = [pytest.mark.slow, pytest.mark.extended]  # tests/test_ui.py covers every route in the default run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it when missing)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the Python client of Playwright (the dev extra)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    """`pwd-agent ui` in its own process, as a person starts it; yields (url, token)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pwd_agent", "ui", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    token = None
    for _ in range(4):
        line = proc.stdout.readline()
        if line.startswith("write token: "):
            token = line.split(": ", 1)[1].strip()
            break
    assert token, "the server printed no token"
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            assert time.time() < deadline and proc.poll() is None, "the page never answered"
            time.sleep(0.2)
    yield url, token
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def shoot(page, name: str, full_page: bool = True) -> None:
    folder = os.environ.get("PWD_AGENT_UI_SHOTS")
    if folder:
        page.wait_for_function("Array.from(document.images).every((img) => img.complete)")
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"ui-{name}.png"), full_page=full_page)


def run_row(run_id: str) -> Run | None:
    with session_scope(open_run(run_id).db_url) as s:
        return s.get(Run, run_id)


def patch_samples(run_id: str) -> list:
    with session_scope(open_run(run_id).db_url) as s:
        return sorted((x.id, x.prompt, x.answer) for x in s.exec(select(Sample).where(Sample.origin == "patch")).all())


def test_the_page_follows_a_live_run_and_steers_it_through_the_patch_gate(tiny_model, small_corpus, server, browser,
                                                                           tmp_path):
    url, token = server
    # The run first waits at the after_tests gate, so the page opens at a known point (no round yet) however
    # slowly the browser starts; then the test approves and the page must follow the run live.
    args = tiny_args(tiny_model, small_corpus, "gated", "--goal", "0.99", "--set", "loop.max_rounds=2", *NO_GUARD,
                     "--set", "gates.after_tests=true", "--set", "gates.on_patch=true", "--set", "train.epochs=20")
    first = subprocess.run([sys.executable, "-m", "pwd_agent", *args], capture_output=True, text=True, timeout=300)
    assert first.returncode == 6 and "waits at the after_tests gate" in first.stderr, first.stderr[-3000:]

    page = browser.new_page()
    page.set_default_timeout(240_000)
    page.goto(f"{url}runs/gated#token={token}")  # logs in from the fragment, which never reaches the server
    page.wait_for_selector("text=log out")
    assert token not in page.url and token not in page.content()
    rows = page.locator("#log tbody tr").count()
    assert page.locator("#rounds tr.round").count() == 0

    # While the run advances, without a reload: new log lines (server-sent events) and new rounds (round 0,
    # the base model, then round 1, whose 20 epochs keep the run alive while the page catches up).
    err_file = tmp_path / "run.err"
    with err_file.open("w") as err_out:
        run = subprocess.Popen([sys.executable, "-m", "pwd_agent", "review", "gated", "approve", "-q"],
                               stdout=subprocess.DEVNULL, stderr=err_out, text=True)
    page.wait_for_function(f"document.querySelectorAll('#log tbody tr').length > {rows + 3}")
    # One refresh shows both rounds and the run alive: the page followed the run, not its end.
    page.wait_for_function("document.querySelectorAll('#rounds tr.round').length >= 2"
                           " && document.getElementById('state').textContent === 'running'")
    shoot(page, "run")

    run.wait(timeout=600)
    err = err_file.read_text()
    assert run.returncode == 6 and "waits at the on_patch gate" in err, err[-3000:]
    page.reload()
    page.wait_for_selector("#gate")
    assert "Waiting at the on_patch gate" in page.inner_text("#gate")
    shoot(page, "gate")

    # A bad upload: refused, its line named, nothing stored.
    before = patch_samples("gated")
    rows = [json.loads(line) for line in page.request.get(f"{url}runs/gated/gate/patches.jsonl").text().splitlines()]
    assert len(rows) == len(before) >= 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({**rows[0], "answer": ""}) + "\n")
    page.set_input_files("#edit-form input[type=file]", str(bad))
    page.click("#edit")
    page.wait_for_selector("#error")
    assert "bad.jsonl line 2: answer" in page.inner_text("#error")
    assert patch_samples("gated") == before and run_row("gated").status == "paused"

    # A write without the token: 403, and the run still waits.
    stranger = browser.new_page()
    stranger.goto(f"{url}runs/gated")
    with stranger.expect_navigation() as refused:
        stranger.click("#approve")
    assert refused.value.status == 403 and "needs the token" in stranger.content()
    assert run_row("gated").status == "paused"
    stranger.close()

    # Approve from the page: `pwd-agent review gated approve` drives the run to its end.
    page.goto(f"{url}runs/gated")
    page.click("#approve")
    page.wait_for_selector("#msg")
    assert "approve: pid" in page.inner_text("#msg")
    page.wait_for_function("document.getElementById('state').textContent.startsWith('finished')")
    assert run_row("gated").stop_reason == "max_rounds"
    assert "gate on_patch: approve" in page.inner_text("#log")

    if os.environ.get("PWD_AGENT_UI_SHOTS"):
        from pwd_agent.store import Diagnosis

        with session_scope(open_run("gated").db_url) as s:
            diagnosed = s.exec(select(Diagnosis.item_id).order_by(Diagnosis.id)).first()
        page.goto(f"{url}runs/gated")
        shoot(page, "run-finished")
        for name, path in (("runs", ""), ("kb", "runs/gated/kb"), ("coverage", "runs/gated/coverage"),
                           ("blame", f"runs/gated/blame?item={diagnosed}"), ("launch", "launch")):
            page.goto(url + path)
            shoot(page, name, full_page=name != "kb")
