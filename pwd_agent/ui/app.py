"""The web app behind `pwd-agent ui`: Starlette routes over the run store and the CLI's own functions.

Reads come from the store (Event rows are the log; the page never parses log text). Writes (pause,
resume, set, review, launch) need the token printed when the server started (a header or the
HttpOnly cookie the login form sets) and are refused with 403 without it, or always with
`--read-only`. A write that drives a run (resume, a review answer, launch) starts the same CLI
command in its own process, so the run outlives the page and the lock rules stay the CLI's.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from pwd_agent.errors import PwdAgentError
from pwd_agent.events import LEVELS
from pwd_agent.context import RunContext
from pwd_agent.runs import open_run
from pwd_agent.ui import views

HERE = Path(__file__).parent
COOKIE = "pwd_token"
HEADER = "x-pwd-token"
MAX_UPLOAD = 20 * 1024 * 1024
_plot_lock = threading.Lock()  # pyplot is not thread-safe


def _pct(value) -> str:
    return "-" if value is None else f"{value:.3f}"


templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters["pct"] = _pct
templates.env.globals["levels"] = LEVELS


class Settings:
    def __init__(self, runs_dir: str, read_only: bool, token: str | None, db_url: str | None = None):
        self.runs_dir, self.read_only, self.db_url = runs_dir, read_only, db_url
        self.token = token or secrets.token_urlsafe(24)


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _logged_in(request: Request) -> bool:
    given = request.headers.get(HEADER) or request.cookies.get(COOKIE) or ""
    return secrets.compare_digest(given.encode(), _settings(request).token.encode())


def _refusal(request: Request) -> str | None:
    """Why a write is refused (None: allowed)."""
    if _settings(request).read_only:
        return "this page is read-only (pwd-agent ui --read-only)"
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        return "a write from another site is refused"
    if not _logged_in(request):
        return "a write needs the token printed when `pwd-agent ui` started (log in with it)"
    return None


def _page(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
    s = _settings(request)
    context.update(read_only=s.read_only, logged_in=_logged_in(request), runs_dir=s.runs_dir)
    return templates.TemplateResponse(request, name, context, status_code=status)


def _forbidden(request: Request, why: str) -> HTMLResponse:
    return _page(request, "message.html", 403, title="403 forbidden", error=why, back=request.headers.get("referer"))


def _ctx(request: Request) -> RunContext:
    return open_run(request.path_params["run_id"], _settings(request).runs_dir)


def _back(run_id: str, msg: str) -> RedirectResponse:
    return RedirectResponse(f"/runs/{quote(run_id)}?msg={quote(msg)}", status_code=303)


# ---- reads ---------------------------------------------------------------------------------------
def runs_page(request: Request) -> HTMLResponse:
    s = _settings(request)
    return _page(request, "runs.html", runs=views.runs_page(s.runs_dir, s.db_url),
                 msg=request.query_params.get("msg"))


def run_page(request: Request, error: str | None = None, status: int = 200) -> HTMLResponse:
    ctx = _ctx(request)
    level = request.query_params.get("level", "info")
    level = level if level in LEVELS else "info"
    node = request.query_params.get("node", "")
    events, last = views.recent_events(ctx, level, node)
    summary = views.summary(ctx)
    waiting = patches = None
    if summary["gate"] and not summary["alive"]:
        from pwd_agent.driver import waiting_gate

        waiting = waiting_gate(ctx)
        if waiting and waiting["gate"] == "on_patch":
            from pwd_agent.gates import describe_patches

            patches = views.redact(describe_patches(ctx, waiting["round"]))
    return _page(request, "run.html", status, run_id=ctx.run_id, s=summary, events=events, last=last, level=level,
                 node=node, nodes=views.event_nodes(ctx), waiting=waiting, patches=patches, error=error,
                 msg=request.query_params.get("msg"), plots=_plot_names())


def summary_fragment(request: Request) -> HTMLResponse:
    ctx = _ctx(request)
    return _page(request, "_summary.html", run_id=ctx.run_id, s=views.summary(ctx))


async def stream(request: Request) -> StreamingResponse:
    """Server-sent events: `log` for each new event the filter shows, `tick` when anything was written."""
    ctx = _ctx(request)
    level = request.query_params.get("level", "info")
    node = request.query_params.get("node", "")
    follow = request.query_params.get("follow", "1") != "0"
    start = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    after = int(start) if start.isdigit() else 0

    async def events():
        nonlocal after
        yield "retry: 2000\n\n"
        while True:
            rows, last = await run_in_threadpool(views.events_since, ctx, after, level, node)
            for e in rows:
                yield f"id: {e['id']}\nevent: log\ndata: {json.dumps(e)}\n\n"
            if last != after:
                yield f"id: {last}\nevent: tick\ndata: {last}\n\n"
                after = last
            if not follow or await request.is_disconnected():
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def kb_page(request: Request) -> HTMLResponse:
    ctx = _ctx(request)
    page = request.query_params.get("page", "1")
    return _page(request, "kb.html", run_id=ctx.run_id, kb=views.kb_page(ctx, int(page) if page.isdigit() else 1))


def coverage_page(request: Request) -> HTMLResponse:
    from pwd_agent.report.blame import render_coverage

    ctx = _ctx(request)
    return _page(request, "text.html", run_id=ctx.run_id, title=f"coverage and exposures of run {ctx.run_id}",
                 text=views.cached(ctx, "coverage", lambda: views.redact(render_coverage(ctx))), kind="coverage")


def blame_page(request: Request) -> HTMLResponse:
    from pwd_agent.report.blame import render_blame

    ctx = _ctx(request)
    item = request.query_params.get("item") or str(request.path_params.get("item_id", ""))
    if not item.isdigit():
        return _page(request, "text.html", 400, run_id=ctx.run_id, title="blame", error="give an item id", kind="blame")
    return _page(request, "text.html", run_id=ctx.run_id, title=f"item {item}: blame and repair trace",
                 text=views.cached(ctx, f"blame {item}", lambda: views.redact(render_blame(ctx, int(item)))),
                 kind="blame", item=item)


def _plot_names() -> list[str]:
    return ["accuracy", "diagnoses", "flips", "coverage", "cost"]


def plot(request: Request) -> Response:
    from pwd_agent.report.html import PLOTS, collect

    name = request.path_params["name"]
    if name not in PLOTS:
        return PlainTextResponse("no such plot", 404)
    ctx = _ctx(request)
    def draw():
        with _plot_lock:
            return PLOTS[name](collect(ctx))

    png = views.cached(ctx, f"plot {name}", draw)
    if png is None:
        return PlainTextResponse("nothing to plot yet", 404)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


def patches_jsonl(request: Request) -> Response:
    """The waiting patch samples as JSONL (what `pwd-agent review RUN --out F` writes), to edit."""
    from pwd_agent.actions import waiting_review
    from pwd_agent.gates import dump_patches

    ctx = _ctx(request)
    waiting = waiting_review(ctx)
    if waiting["gate"] != "on_patch":
        raise PwdAgentError("only the patch gate has samples to edit")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "patches.jsonl"
        dump_patches(ctx, waiting["round"], path)
        body = path.read_bytes()
    return Response(body, media_type="application/x-ndjson",
                    headers={"Content-Disposition": f'attachment; filename="{ctx.run_id}-patches.jsonl"'})


# ---- login ---------------------------------------------------------------------------------------
def login_page(request: Request) -> HTMLResponse:
    return _page(request, "login.html", next=request.query_params.get("next", "/"))


async def login(request: Request) -> Response:
    form = await request.form()
    given = str(form.get("token", ""))
    target = str(form.get("next") or "/")
    target = target if target.startswith("/") and not target.startswith("//") else "/"
    if _settings(request).read_only:
        return _forbidden(request, "this page is read-only (pwd-agent ui --read-only)")
    if not secrets.compare_digest(given.encode(), _settings(request).token.encode()):
        return _forbidden(request, "wrong token")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, given, httponly=True, samesite="strict")
    return response


def logout(request: Request) -> Response:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE)
    return response


# ---- writes --------------------------------------------------------------------------------------
def _spawn(settings: Settings, args: list[str], run_dir: Path, run_id: str) -> str:
    """Start `pwd-agent ARGS` in its own process (it drives the run; the page only watches) and wait
    until it has taken the run or ended; an early failure is raised with the command's own words."""
    from pwd_agent.runstate import read_run
    from pwd_agent.store import session_scope

    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "ui-driver.log"
    with open(log, "ab") as out:
        out.write(f"\n$ pwd-agent {' '.join(args)}\n".encode())
        out.flush()
        offset = out.tell()
        proc = subprocess.Popen([sys.executable, "-m", "pwd_agent", *args, "--runs-dir", settings.runs_dir],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=os.getcwd())
    threading.Thread(target=proc.wait, daemon=True).start()  # reaped when it ends
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            break
        if (run_dir / "config.yaml").is_file():
            try:
                ctx = open_run(run_id, settings.runs_dir)
                with session_scope(ctx.db_url) as s:
                    run = read_run(s, run_id)
                if run is not None and run.pid == proc.pid:
                    return f"pid {proc.pid} drives run {run_id}"
            except Exception:  # the folder is being made
                pass
        time.sleep(0.2)
    code = proc.poll()
    if code in (None, 0, 3, 6):
        return f"pid {proc.pid} drives run {run_id}" if code is None else f"the command ended (exit code {code})"
    with open(log, "rb") as f:
        f.seek(offset)
        said = f.read().decode(errors="replace").strip().splitlines()
    words = " ".join(line for line in said if line.startswith(("error", "hint", "paused", "stopped")))
    raise PwdAgentError(views.redact(words or (said[-1] if said else f"exit code {code}")))


async def _write(request: Request, work) -> Response:
    """Run a write after the token check; a refused action shows the run page with its reason."""
    if why := _refusal(request):
        return _forbidden(request, why)
    form = await request.form(max_part_size=MAX_UPLOAD)
    try:
        return await run_in_threadpool(work, form)
    except PwdAgentError as exc:
        error = views.redact(exc.message + (f" ({exc.hint})" if exc.hint else ""))
        if "run_id" in request.path_params:
            return await run_in_threadpool(run_page, request, error, 400)
        return _page(request, "launch.html", 400, error=error, form=dict(form))


async def pause(request: Request) -> Response:
    def work(form):
        from pwd_agent.actions import request_pause

        ctx = _ctx(request)
        request_pause(ctx)
        return _back(ctx.run_id, "pause requested: the run stops after its current node")
    return await _write(request, work)


async def resume(request: Request) -> Response:
    def work(form):
        ctx = _ctx(request)
        return _back(ctx.run_id, _spawn(_settings(request), ["resume", ctx.run_id, "-q"], ctx.run_dir, ctx.run_id))
    return await _write(request, work)


SET_FIELDS = {"goal": "loop.goal", "max_rounds": "loop.max_rounds", "max_cost": "llm.max_cost"}


async def set_config(request: Request) -> Response:
    def work(form):
        from pwd_agent.actions import set_values
        from pwd_agent.runs import flat

        ctx = _ctx(request)
        current = flat(ctx.config)
        assignments = []
        for field, key in SET_FIELDS.items():
            if field not in form:
                continue
            text = str(form[field]).strip()
            value = None if text == "" else text
            if value is None and current[key] is None:
                continue
            if value is not None and str(current[key]) == value:
                continue
            assignments.append(f"{key}={'null' if value is None else value}")
        assignments += [str(a).strip() for a in str(form.get("other", "")).split("\n") if str(a).strip()]
        if not assignments:
            return _back(ctx.run_id, "nothing changes")
        how, changes = set_values(ctx, assignments)
        said = "; ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in changes)
        return _back(ctx.run_id, {"unchanged": "nothing changes",
                                  "pending": f"applies at the run's next node boundary: {said}",
                                  "applied": said}[how])
    return await _write(request, work)


async def review(request: Request) -> Response:
    def work(form):
        from pwd_agent.actions import check_answer, waiting_review

        ctx = _ctx(request)
        waiting = waiting_review(ctx)
        action = str(form.get("action", ""))
        reason = str(form.get("reason", "")).strip()
        args = ["review", ctx.run_id, action, "-q"] + (["--reason", reason] if reason else [])
        if action != "edit":
            check_answer(ctx, waiting, action, reason)
        else:
            upload = form.get("file")
            if upload is None or not hasattr(upload, "file"):
                raise PwdAgentError("edit takes a JSONL file", "download the waiting samples, edit them, upload")
            data = upload.file.read()
            name = Path(upload.filename or "upload.jsonl").name or "upload.jsonl"
            with tempfile.TemporaryDirectory() as tmp:  # checked where nothing is kept: a refused file leaves no trace
                path = Path(tmp) / name
                path.write_bytes(data)
                try:
                    check_answer(ctx, waiting, action, reason, path)
                except PwdAgentError as exc:
                    raise PwdAgentError(exc.message.replace(f"{tmp}/", ""), exc.hint) from None
            kept = ctx.run_dir / "reviews" / f"edit-{datetime.now():%Y%m%d-%H%M%S}-{name}"
            kept.parent.mkdir(exist_ok=True)
            kept.write_bytes(data)
            args.insert(3, str(kept.resolve()))
        return _back(ctx.run_id, f"{action}: " + _spawn(_settings(request), args, ctx.run_dir, ctx.run_id))
    return await _write(request, work)


def launch_page(request: Request) -> HTMLResponse:
    return _page(request, "launch.html", form={})


async def launch(request: Request) -> Response:
    def work(form):
        from pwd_agent.runs import _RUN_ID, new_run_id

        config = str(form.get("config", "")).strip()
        corpus = str(form.get("corpus", "")).strip()
        run_id = str(form.get("run_id", "")).strip() or new_run_id()
        if not _RUN_ID.match(run_id):
            raise PwdAgentError(f"invalid run id '{run_id}'", "use letters, digits, '-', '_' or '.'")
        if config and not Path(config).is_file():
            raise PwdAgentError(f"config file not found: {config}")
        if corpus and not Path(corpus).exists():
            raise PwdAgentError(f"corpus folder not found: {corpus}")
        settings = _settings(request)
        if (Path(settings.runs_dir) / run_id / "config.yaml").exists():
            raise PwdAgentError(f"run {run_id} already exists", "pick another run id")
        args = ["run", "--run-id", run_id, "-q"] + (["-c", config] if config else []) + (
            ["--corpus", corpus] if corpus else [])
        said = _spawn(settings, args, Path(settings.runs_dir) / run_id, run_id)
        return _back(run_id, f"launched: {said}")
    return await _write(request, work)


# ---- the app -------------------------------------------------------------------------------------
async def _errors(request: Request, exc: PwdAgentError) -> Response:
    from pwd_agent.errors import RunNotFoundError

    return _page(request, "message.html", 404 if isinstance(exc, RunNotFoundError) else 400, title="refused",
                 error=views.redact(exc.message + (f" ({exc.hint})" if exc.hint else "")))


def create_app(runs_dir: str = "runs", read_only: bool = False, token: str | None = None,
               db_url: str | None = None) -> Starlette:
    routes = [
        Route("/", runs_page),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/launch", launch_page, methods=["GET"]),
        Route("/launch", launch, methods=["POST"]),
        Route("/runs/{run_id}", run_page),
        Route("/runs/{run_id}/summary", summary_fragment),
        Route("/runs/{run_id}/stream", stream),
        Route("/runs/{run_id}/kb", kb_page),
        Route("/runs/{run_id}/coverage", coverage_page),
        Route("/runs/{run_id}/blame", blame_page),
        Route("/runs/{run_id}/items/{item_id:int}", blame_page),
        Route("/runs/{run_id}/plots/{name}.png", plot),
        Route("/runs/{run_id}/gate/patches.jsonl", patches_jsonl),
        Route("/runs/{run_id}/pause", pause, methods=["POST"]),
        Route("/runs/{run_id}/resume", resume, methods=["POST"]),
        Route("/runs/{run_id}/set", set_config, methods=["POST"]),
        Route("/runs/{run_id}/review", review, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={PwdAgentError: _errors})
    app.state.settings = Settings(runs_dir, read_only, token, db_url)
    return app


def serve(runs_dir: str, host: str, port: int, read_only: bool, db_url: str | None = None) -> None:
    import uvicorn

    app = create_app(runs_dir, read_only, db_url=db_url)
    url = f"http://{host}:{port}/"
    print(f"pwd-agent ui: {url} (runs in {Path(runs_dir).resolve()})", flush=True)
    if read_only:
        print("read-only: every write is refused", flush=True)
    else:
        print(f"write token: {app.state.settings.token}", flush=True)
        print(f"open {url}#token={app.state.settings.token} to log in (the part after # never reaches the server)",
              flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}: anyone who can reach it can read the runs", flush=True)
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning", timeout_graceful_shutdown=2)
