"""The conda environment the rules declare (envs/exsitu.yaml) must provide what the
package declares in pyproject.toml, or `--software-deployment-method conda` runs the
rules without a dependency (or with an older one) than `pip install -e .` would."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ENV = REPO / "envs" / "exsitu.yaml"
# The orchestrator runs outside the rule environment; it is not needed inside it.
ORCHESTRATION = {"snakemake", "snakemake-executor-plugin-slurm"}
# PyPI name -> conda-forge name where they differ.
CONDA_NAME = {"torch": "pytorch"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _split(spec: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", spec)
    assert match, f"cannot parse requirement {spec!r}"
    return _norm(match.group(1)), match.group(2).replace(" ", "")


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return dict(_split(spec) for spec in project["dependencies"])


def _env() -> dict[str, str]:
    deps: dict[str, str] = {}
    for item in yaml.safe_load(ENV.read_text())["dependencies"]:
        specs = item["pip"] if isinstance(item, dict) else [item]
        for spec in specs:
            name, version = _split(spec)
            deps[name] = version
    return deps


def test_env_file_provides_every_runtime_dependency_with_the_same_bound():
    env = _env()
    missing, different = [], []
    for name, version in _pyproject().items():
        if name in ORCHESTRATION:
            continue
        conda = _norm(CONDA_NAME.get(name, name))
        if conda not in env:
            missing.append(name)
        elif env[conda] != version:
            different.append(f"{name}: pyproject {version!r} vs env {env[conda]!r}")
    assert not missing, f"{ENV.name} lacks dependencies of pyproject.toml: {missing}"
    assert not different, f"version bounds differ: {different}"


def test_env_python_matches_requires_python():
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert _env()["python"] == requires


def test_every_rule_uses_the_env_file_and_the_package_gets_installed():
    rules = sorted((REPO / "workflow" / "rules").glob("*.smk"))
    for smk in rules:
        text = smk.read_text()
        n_rules = len(re.findall(r"^rule \w+:", text, flags=re.M))
        n_conda = text.count('conda:\n        "../../envs/exsitu.yaml"')
        assert n_conda == n_rules, f"{smk.name}: {n_rules} rules but {n_conda} conda: directives"
    # Snakemake runs <env>.post-deploy.sh inside the new environment; the rules call
    # `python -m exsitu.<stage>`, so it must install the package.
    deploy = ENV.with_name("exsitu.post-deploy.sh").read_text()
    assert "pip install" in deploy and " -e ." in deploy
