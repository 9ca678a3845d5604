"""Shared fixtures: a copy of the workflow in a temporary directory, and one real tiny
end-to-end Snakemake run that the integration tests (data, model, report, rerun,
browser) read from, so the suite pays for the pipeline once."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "config" / "tiny.yaml"
WORKFLOW_FILES = ["Snakefile", "config.yaml", "workflow", "envs", "profiles", "config", "tests/config"]


def copy_workflow(dest: Path) -> Path:
    """Copy the workflow definition (not results) into ``dest``; return ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            # Links are followed: workflow/schemas/config.schema.yaml points into src/.
            shutil.copytree(src, dest / name, dirs_exist_ok=True)
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run the real snakemake CLI in ``workdir`` with the tiny overlay; return the result."""
    cmd = [sys.executable, "-m", "snakemake", "--configfile", str(TINY), *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


@pytest.fixture
def workflow_copy(tmp_path: Path) -> Path:
    """A fresh copy of the workflow with no results."""
    return copy_workflow(tmp_path / "wf")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workflow directory after a full local ``snakemake --cores 2`` on the tiny config."""
    workdir = copy_workflow(tmp_path_factory.mktemp("tiny") / "wf")
    snakemake(workdir, "--cores", "2")
    return workdir


OBSERVED = REPO / "tests" / "config" / "observed.yaml"


@pytest.fixture(scope="session")
def tiny_observed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline with observe on (MaNGA preset) and a kinematics-only model (velocity, dispersion)."""
    workdir = copy_workflow(tmp_path_factory.mktemp("tiny_observed") / "wf")
    snakemake(workdir, "--cores", "2", "--configfile", str(TINY), str(OBSERVED))
    return workdir
