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


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (REPO / "README.md").read_text()
    first_block = readme.split("```")[1].split("\n", 1)[1]  # drop the language tag
    commands = [line for line in first_block.splitlines() if line.strip()]
    assert len(commands) == 2, f"the README must start with exactly two commands, found {commands}"
    assert commands[0].rstrip().endswith("snakemake --cores 2"), commands[0]
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci_lines, f".ci/run does not run the README's test command {commands[1]!r}"


def test_ruff_lint_and_format_are_clean():
    for args in (["check", "src", "tests", "benchmarks"], ["format", "--check", "src", "tests", "benchmarks"]):
        proc = subprocess.run(
            [sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, f"ruff {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
