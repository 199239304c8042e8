"""The docs match the code: generated pages are current; README and docs/*.md name only what exists."""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from conftest import ROOT, main_here
from pwd_agent import docgen
from pwd_agent.config import RunConfig, leaves

GENERATED = docgen.generated()
HINT = f"regenerate with `{docgen.REGENERATE}` and commit the result"
# Hand-written pages whose names are checked; generated pages are checked by content instead.
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p not in GENERATED)]
PAGE_IDS = [str(p.relative_to(ROOT)) for p in PAGES]


@pytest.mark.parametrize("path", list(GENERATED), ids=lambda p: p.name)
def test_generated_docs_are_current(path: Path):
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: {HINT}"
    assert path.read_text() == GENERATED[path], f"{path.relative_to(ROOT)} is stale: {HINT}"


def test_cli_doc_names_every_command_and_option():
    text = GENERATED[docgen.DOCS / "cli.md"]
    root = docgen.cli_command()
    for name in docgen.command_names():
        assert f"## `pwd-agent {name}`" in text, f"docs/cli.md lacks `pwd-agent {name}`: {HINT}"
        command = root
        for word in name.split():
            command = command.commands[word]
        for option in (o for p in command.params for o in p.opts if o.startswith("-")):
            assert f"`{option}`" in text, f"docs/cli.md lacks {option} of `pwd-agent {name}`: {HINT}"


def test_config_doc_names_every_key():
    text = GENERATED[docgen.DOCS / "config.md"]
    missing = [key for key, _, _ in leaves(RunConfig()) if f"| `{key}` |" not in text]
    assert not missing, f"docs/config.md lacks {missing}: {HINT}"


def test_check_flag_names_the_stale_file_and_the_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(docgen, "generated", lambda: {tmp_path / "cli.md": "new\n"})
    monkeypatch.setattr(docgen, "ROOT", tmp_path)
    (tmp_path / "cli.md").write_text("old\n")
    assert docgen.main(["--check"]) == 1
    assert f"cli.md is stale: regenerate it with `{docgen.REGENERATE}`" in capsys.readouterr().err
    (tmp_path / "cli.md").write_text("new\n")
    assert docgen.main(["--check"]) == 0


def test_cli_docstring_names_every_command():
    import pwd_agent.cli

    missing = [n for n in docgen.command_names() if not re.search(rf"^ +{n}\b", pwd_agent.cli.__doc__, re.M)]
    assert not missing, f"pwd_agent/cli.py's docstring has no line for {missing}"


def test_ctrl_c_exits_with_the_code_the_docstring_gives(monkeypatch, capsys):
    import pwd_agent.cli
    import pwd_agent.runs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pwd_agent.runs, "open_run", interrupted)
    assert "130 interrupted (Ctrl-C" in pwd_agent.cli.__doc__
    assert main_here(monkeypatch, capsys, "status", "r").returncode == pwd_agent.cli.EXIT_INTERRUPTED == 130


# --- names in hand-written pages ----------------------------------------------------------------


def snippets(text: str) -> list[tuple[int, str]]:
    """(line, code) of every code-block line (backslash continuations joined) and inline code span."""
    found, prose, fenced, pending = [], [], False, None
    for number, line in enumerate(text.split("\n"), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            prose.append("")
            continue
        prose.append("" if fenced else line)
        if not fenced:
            continue
        start, code = pending or (number, "")
        code += " " + line.rstrip().removesuffix("\\")
        pending = (start, code) if line.rstrip().endswith("\\") else None
        if pending is None:
            found.append((start, code))
    body = "\n".join(prose)
    # A span may wrap onto the next line of its paragraph, never past a blank line.
    for match in re.finditer(r"`((?:[^`\n]|\n(?![ \t]*\n))+)`", body):
        found.append((body.count("\n", 0, match.start()) + 1, " ".join(match.group(1).split())))
    return sorted(found)


def invocations(code: str) -> list[tuple[list[str], list[str]]]:
    """(words, options) of each `pwd-agent ...` in a piece of code: the lowercase words right after it
    (a command and maybe a subcommand) and the -x/--long options up to the next command or `&&`/`;`."""
    out = []
    for command in re.split(r"&&|;", code):
        for segment in re.split(r"(?:^|(?<=[\s/'\"(]))pwd-agent(?=\s|$)", command)[1:]:
            words = []
            for token in segment.split():
                if not re.fullmatch(r"[a-z][a-z-]*", token) or len(words) == 2:
                    break
                words.append(token)
            options = re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", segment)
            out.append((words, options))
    return out


def _command(words: list[str]):
    """(the click command the words name, the words used, the first word a group does not know or None)."""
    command, used = docgen.cli_command(), 0
    for word in words:
        if not hasattr(command, "commands"):  # a command's own arguments follow
            break
        if word not in command.commands:
            return command, used, word
        command, used = command.commands[word], used + 1
    return command, used, None


def unknown_commands(text: str) -> list[str]:
    bad = []
    for line, code in snippets(text):
        for words, options in invocations(code):
            command, used, stray = _command(words)
            name = " ".join(["pwd-agent", *words[:used]])
            if stray is not None:
                bad.append(f"line {line}: `{name} {stray}` is no command")
                continue
            known = {o for p in command.params for o in [*p.opts, *p.secondary_opts]} | {"--help"}
            bad += [f"line {line}: `{name}` has no option {o}" for o in options if o not in known]
    return bad


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([\w.-]+)\s*:(?!=)", text, re.M))


def unknown_make_targets(text: str) -> list[str]:
    targets, bad = make_targets(), []
    for line, code in snippets(text):
        for match in re.finditer(r"(?:^|(?<=[\s(]))make((?:\s+[a-z][\w-]*)+)", code):
            bad += [f"line {line}: `make {t}`: no such target" for t in match.group(1).split() if t not in targets]
    return bad


# `train.jsonl`, `corpus.py`: file names whose stem happens to be a section's name.
FILE_SUFFIXES = {"py", "md", "json", "jsonl", "yaml", "yml", "log", "txt", "html", "png", "db", "sqlite", "csv", "toml"}


def module_names(module: str) -> set[str]:
    """Top-level names of pwd_agent/<module>.py: `student.load_model` names code, not a key."""
    path = ROOT / "pwd_agent" / f"{module}.py"
    if not path.is_file():
        return set()
    tree = ast.parse(path.read_text())
    return {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)} | {
        n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def unknown_config_keys(text: str) -> list[str]:
    """Tokens `section.key` (`section.key_*` a family) whose section is a real config section, anywhere
    in the page, that name no key."""
    config = RunConfig()
    sections = [n for n in type(config).model_fields if isinstance(getattr(config, n), BaseModel)]
    keys = {key for key, _, _ in leaves(config)}
    pattern = rf"(?<![\w./$-])({'|'.join(sections)})\.([a-z_*][a-z0-9_*]*)(?![\w-])"
    bad = []
    for match in re.finditer(pattern, text):
        section, name = match.groups()
        if name in FILE_SUFFIXES or name in module_names(section):
            continue
        if not fnmatch.filter(keys, f"{section}.{name}"):
            bad.append(f"line {text.count(chr(10), 0, match.start()) + 1}: `{section}.{name}` is no config key")
    return bad


@pytest.mark.parametrize("check", [unknown_commands, unknown_make_targets, unknown_config_keys],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("path", PAGES, ids=PAGE_IDS)
def test_pages_name_only_what_exists(path: Path, check):
    if not path.is_file():
        pytest.skip(f"{path.name} does not exist")
    bad = check(path.read_text())
    assert not bad, f"{path.relative_to(ROOT)} names what does not exist:\n" + "\n".join(bad)


def test_the_name_checks_catch_what_they_should():
    page = ("```\npwd-agent run --goal 0.8 --nope \\\n  --set loop.goal=1\npwd-agent prompts check --dir p\n"
            "pwd-agent frobnicate RUN\npwd-agent prompts chek\nmake demo  # then\nmake deploy\n```\n"
            "Set `builder.v1_budget`, `gates.*`, `llm.price_*_per_m`, `eval.nope_*` and `train.repair_form` "
            "(train.jsonl), `pwd-agent logs RUN -f --tail`; `pip install 'pwd-agent[trl]'`, `bin/pwd-agent list`.")
    assert unknown_commands(page) == ["line 2: `pwd-agent run` has no option --nope",
                                      "line 5: `pwd-agent frobnicate` is no command",
                                      "line 6: `pwd-agent prompts chek` is no command",
                                      "line 10: `pwd-agent logs` has no option --tail"]
    assert unknown_make_targets(page) == ["line 8: `make deploy`: no such target"]
    assert unknown_config_keys(page) == ["line 10: `eval.nope_*` is no config key",
                                         "line 10: `train.repair_form` is no config key"]
