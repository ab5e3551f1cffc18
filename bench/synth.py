"""Wall time of a full `npx cdk synth` (both stacks) and of the infrastructure test suite.

Run with `make bench-synth` (or `python -m bench.synth [--runs N]`). The goal is a synth of
both stacks in under 10 s on a 2-core machine; the figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 10.0


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    # cdk.json runs `python3 app.py`: the venv's python must come first.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    return env


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, env=_environment(), capture_output=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stdout.decode() + done.stderr.decode())
        raise SystemExit(f"{' '.join(command)} failed with exit code {done.returncode}")
    return elapsed


def time_synth(runs: int) -> list[float]:
    """Seconds per `npx cdk synth --quiet` into a fresh output directory."""
    seconds = []
    for _ in range(runs):
        outdir = tempfile.mkdtemp(prefix="bench-cdk.out-")
        try:
            seconds.append(_timed(["npx", "cdk", "synth", "--quiet", "--output", outdir]))
        finally:
            shutil.rmtree(outdir, ignore_errors=True)
    return seconds


def time_tests() -> float:
    """Seconds for the infrastructure tests (tests/infra), one run."""
    return _timed([sys.executable, "-m", "pytest", "tests/infra", "-q"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="synth runs (default 3)")
    args = parser.parse_args()

    synth = time_synth(args.runs)
    median = statistics.median(synth)
    print(f"cores: {os.cpu_count()}")
    print(f"cdk synth (both stacks), {args.runs} runs: " + ", ".join(f"{s:.2f}s" for s in synth))
    print(
        f"cdk synth median: {median:.2f}s; goal {GOAL_SECONDS:.0f}s; "
        f"ratio median/goal = {median / GOAL_SECONDS:.2f}"
    )
    tests = time_tests()
    print(f"infra test suite (pytest tests/infra): {tests:.2f}s")


if __name__ == "__main__":
    main()
