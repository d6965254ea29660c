"""Runs a benchmark as a user would, for the smoke tests, and reads its JSON report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_bench(module: str, args: list[str], json_path: Path, timeout: float) -> dict[str, Any]:
    """Run ``python -m module``; on a time-out it gets SIGTERM (it stops its servers) first.

    The report on stdout must be the one written to ``--json``.
    """
    argv = [sys.executable, "-m", module, *args, "--json", str(json_path), "--log-level", "WARNING"]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            # Its own session holds the benchmark and what it started, nothing else.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        raise AssertionError(f"{module} did not finish within {timeout}s") from None
    assert proc.returncode == 0, stderr[-4000:]
    report: dict[str, Any] = json.loads(json_path.read_text(encoding="utf-8"))
    assert json.loads(stdout) == report, "stdout and --json differ"
    return report
