"""Measure the demo run: wall time and peak memory of the whole process tree (run + trainer).

Usage: python bench/demo_wall_memory.py [-c examples/demo.yaml] [extra pwd-agent args...]
Prints one JSON line; the README quotes it. Polls /proc every 0.2 s (Linux only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def tree_rss_bytes(root: int) -> int:
    """Sum of the resident memory of `root` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def main() -> None:
    args = sys.argv[1:] or ["-c", "examples/demo.yaml"]
    run_id = f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    command = [str(Path(sys.executable).with_name("pwd-agent")), "run", *args, "--run-id", run_id, "-q"]
    start, peak = time.time(), 0
    proc = subprocess.Popen(command)
    while proc.poll() is None:
        peak = max(peak, tree_rss_bytes(proc.pid))
        time.sleep(0.2)
    print(json.dumps({
        "run_id": run_id,
        "exit_code": proc.returncode,
        "wall_s": round(time.time() - start, 1),
        "peak_rss_gib": round(peak / 2**30, 2),
        "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
