"""The built wheel, installed into a fresh venv, runs: prompts and data ship inside the package."""

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    return next(out.glob("pwd_agent-*.whl"))


def test_the_wheel_holds_every_package_prompt_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "pwd_agent").rglob("*.py")}
    prompts = {f"pwd_agent/{p.relative_to(ROOT).as_posix()}" for p in (ROOT / "prompts").rglob("*.txt")}
    data = {p.relative_to(ROOT).as_posix() for p in (ROOT / "pwd_agent" / "data").glob("*.jsonl")}
    assert prompts and data
    assert modules | prompts | data <= names, sorted((modules | prompts | data) - names)


def test_a_fresh_venv_with_the_wheel_runs_prompts_check_and_config(wheel, tmp_path):
    """The wheel alone, no checkout: a venv without pwd-agent gets the wheel (its console script
    included); the dependencies come from the test's own environment on PYTHONPATH, which carries
    no pwd_agent (the checkout's editable install is a .pth finder, not read from PYTHONPATH)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True)
    env = {"PYTHONPATH": sysconfig.get_paths()["purelib"], "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import pwd_agent, pwd_agent.prompting as p; "
                            "print(pwd_agent.__file__); print(p.PROMPTS_DIR)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(path.startswith(str(venv)) for path in where), where  # the wheel's copy, not the checkout
    check = subprocess.run([str(venv / "bin" / "pwd-agent"), "prompts", "check"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert check.stdout.count("ok") >= len(list((ROOT / "prompts").rglob("*.txt")))
    config = subprocess.run([str(venv / "bin" / "pwd-agent"), "config"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert config.returncode == 0 and "builder.text_passages" in config.stdout, config.stderr


def test_the_wheel_states_its_license(wheel):
    """An SPDX expression and the license text inside the distribution (PEP 639)."""
    with zipfile.ZipFile(wheel) as archive:
        [info] = {name.split("/")[0] for name in archive.namelist() if ".dist-info/" in name}
        assert "License-Expression: MIT" in archive.read(f"{info}/METADATA").decode().splitlines()
        assert archive.read(f"{info}/licenses/LICENSE").decode().startswith("MIT License")
