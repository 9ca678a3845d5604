"""`snakemake --lint` is clean and the Snakefiles are snakefmt-formatted (as CI checks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEFILES = ["Snakefile", *sorted(str(p.relative_to(REPO)) for p in (REPO / "workflow" / "rules").glob("*.smk"))]


def test_snakemake_lint_is_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Lints for" not in output, output


def test_snakefiles_are_snakefmt_formatted():
    assert len(SNAKEFILES) >= 4, SNAKEFILES
    proc = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", *SNAKEFILES],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"run `snakefmt {' '.join(SNAKEFILES)}`:\n{proc.stdout}{proc.stderr}"
