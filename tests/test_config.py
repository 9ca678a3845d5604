"""Bad configuration stops the run before any job, with a message naming the key; the
README documents every key of the schema; the paper overlay builds the paper's DAG."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO, snakemake

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())


def _run_with_overlay(workdir: Path, overlay: str, *args: str):
    path = workdir / "overlay.yaml"
    path.write_text(overlay)
    return snakemake(workdir, "--configfile", str(path), "--cores", "1", *args, check=False)


def _assert_stopped_before_any_job(workdir: Path, proc, *needles: str):
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    for needle in needles:
        assert needle in output, f"{needle!r} not in:\n{output}"
    assert "Select jobs to execute" not in output, output
    assert not (workdir / "results").exists() or not any((workdir / "results").rglob("*.*"))


@pytest.mark.parametrize(
    ("overlay", "needles"),
    [
        ("flow:\n  num_layerz: 3\n", ["num_layerz", "Additional properties"]),
        ("devise: cpu\n", ["devise", "Additional properties"]),
        ("maps:\n  npix: big\n", ["npix", "'big' is not of type 'integer'"]),
        ("cvae:\n  beta: -1.0\n", ["beta", "minimum"]),
        ("device: gpu\n", ["device", "'gpu' is not one of"]),
    ],
)
def test_bad_key_or_type_stops_before_any_job(workflow_copy, overlay, needles):
    proc = _run_with_overlay(workflow_copy, overlay)
    _assert_stopped_before_any_job(workflow_copy, proc, *needles)


def test_tng_without_basepath_names_the_key(workflow_copy):
    proc = _run_with_overlay(workflow_copy, "simulation:\n  source: tng\n  basepath: null\n")
    _assert_stopped_before_any_job(workflow_copy, proc, "simulation.basepath")


def test_paper_overlay_builds_the_paper_dag(workflow_copy):
    proc = snakemake(
        workflow_copy,
        "--configfile",
        "config/paper.yaml",
        "--config",
        "simulation={source: tng, basepath: /nonexistent/TNG100-1/output}",
        "--dry-run",
        "--printshellcmds",
    )
    out = proc.stdout
    assert "simulate_mock" not in out, "TNG runs must not generate the mock universe"
    assert len(re.findall(r"^rule project:", out, flags=re.M)) == 64
    assert '"npix": 128' in out and '"beta": 0.8' in out and '"latent_dim": 10' in out
    assert '"epochs": 200' in out and "--device cuda" in out
    train = out[out.index("rule train_cvae:") :].split("\n\n")[0]
    assert "gpu=1" in train, train


def _schema_keys(node: dict, prefix: str = "") -> list[str]:
    keys = []
    for name, sub in node.get("properties", {}).items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        keys += _schema_keys(sub, dotted + ".")
    return keys


def test_readme_documents_every_config_key():
    readme = (REPO / "README.md").read_text()
    reference = readme[readme.index("## Configuration reference") :]
    missing = [key for key in _schema_keys(SCHEMA) if f"`{key}`" not in reference]
    assert not missing, f"README's configuration reference lacks: {missing}"

    documented = dict(re.findall(r"^\| `([\w.]+)` \| `([^`]*)` \|", reference, flags=re.M))
    stale = {}
    for key in _schema_keys(SCHEMA):
        node = SCHEMA
        for part in key.split("."):
            node = node["properties"][part]
        if "default" in node and key in documented and yaml.safe_load(documented[key]) != node["default"]:
            stale[key] = (documented[key], node["default"])
    assert not stale, f"README defaults differ from the schema's (README, schema): {stale}"


def test_default_config_is_complete_under_the_schema():
    # Every leaf of the schema has a value in config.yaml: users read it as the reference.
    config = yaml.safe_load((REPO / "config.yaml").read_text())

    def walk(node, value, path):
        if "properties" not in node:
            return []
        missing = []
        for name, sub in node["properties"].items():
            if name not in value:
                missing.append(path + name)
            else:
                missing += walk(sub, value[name], path + name + ".")
        return missing

    assert walk(SCHEMA, config, "") == []
