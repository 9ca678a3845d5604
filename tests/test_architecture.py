"""House rules of the code base: stages apart from the library, one command, typed settings
checked against the schema, one logger convention, figures declared once."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from exsitu import __version__, reporting, settings
from exsitu.io import InputError
from exsitu.stages import STAGES, TOOLS

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "exsitu"


def test_exsitu_help_lists_every_stage_and_the_version():
    out = subprocess.run(["exsitu", "--help"], capture_output=True, text=True, check=True).stdout
    for stage in (*STAGES, *TOOLS):
        assert re.search(rf"^\s+{stage}\b", out, flags=re.M), f"{stage} missing from exsitu --help:\n{out}"
    version = subprocess.run(["exsitu", "--version"], capture_output=True, text=True, check=True).stdout
    assert version.strip() == f"exsitu {__version__}"


def test_every_stage_module_has_a_main_and_a_rule():
    modules = {p.stem for p in (PACKAGE / "stages").glob("*.py") if not p.stem.startswith("_")}
    assert modules == set(STAGES) | set(TOOLS)
    rules = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    for stage in STAGES:
        assert re.search(rf"^rule {stage}:", rules, flags=re.M), f"no rule {stage}"
        assert f'"exsitu {stage} ' in rules, f"rule {stage} does not call `exsitu {stage}`"


@pytest.mark.parametrize("stage", ["project", "train_flow"])
def test_stage_runs_as_module_and_subcommand(stage: str):
    as_module = subprocess.run(
        [sys.executable, "-m", f"exsitu.stages.{stage}", "--help"], capture_output=True, text=True, check=True
    )
    as_command = subprocess.run(["exsitu", stage, "--help"], capture_output=True, text=True, check=True)
    assert as_module.stdout == as_command.stdout and f"usage: exsitu {stage}" in as_command.stdout


def test_the_stages_without_a_network_do_not_import_torch():
    # Each job of these is its own process; torch's import (~1.5 s) would be most of a small shard's time.
    stages = ("simulate_mock", "select", "tag", "plan", "project", "observe", "split", "relations", "report")
    code = "import sys; " + "; ".join(f"import exsitu.stages.{s}" for s in stages) + "; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def _library_modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "stages" not in p.parts and p.name != "cli.py"]


def test_library_has_no_argparse_and_no_namespace_parameters():
    for path in _library_modules():
        tree = ast.parse(path.read_text())
        imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
        names = {a.name for n in imports for a in n.names} | {getattr(n, "module", None) for n in imports}
        assert "argparse" not in names, f"{path.name} imports argparse: parsing belongs to the stages"
    for path in (PACKAGE / "stages").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name not in ("main", "build"):
                annotations = [ast.unparse(a.annotation) for a in node.args.args if a.annotation is not None]
                assert not any("Namespace" in a for a in annotations) or node.name == "run_training", (
                    f"{path.name}:{node.name} takes an argparse Namespace"
                )


def test_loggers_follow_one_convention():
    for path in PACKAGE.rglob("*.py"):
        for call in re.findall(r"logging\.getLogger\(([^)]*)\)", path.read_text()):
            assert call == "__name__", f"{path.relative_to(REPO)}: logging.getLogger({call})"


def test_no_positional_parameter_lists_longer_than_about_six():
    # projection.project keeps its public per-particle-array contract (users call it on their own particles).
    allowed = {("projection.py", "project")}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and (path.name, node.name) not in allowed:
                positional = [a for a in node.args.args if a.arg not in ("self", "cls")]
                assert len(positional) <= 6, f"{path.name}:{node.name} takes {len(positional)} positional parameters"


#: Schema sections that only the Snakefile reads (no stage builds settings from them): ``predict``
#: becomes the flags of ``exsitu predict`` in workflow/rules/predict.smk.
WORKFLOW_ONLY_SECTIONS = {"simulation", "resources", "predict"}


def test_every_settings_section_lives_in_settings_py():
    # Found by reading the sources, not Section.__subclasses__(): that would list only the
    # classes of the modules pytest happened to import before this test.
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(ast.unparse(b) == "Section" for b in node.bases):
                assert path.name == "settings.py", f"{path.name}:{node.name} is a config section outside settings.py"


def test_section_dataclasses_match_the_schema():
    schema = settings.schema()["properties"]
    sections = [c for c in vars(settings).values() if isinstance(c, type) and issubclass(c, settings.Section)]
    sections.remove(settings.Section)
    objects = {name for name, sub in schema.items() if "properties" in sub}
    assert {cls.SECTION for cls in sections} == objects - WORKFLOW_ONLY_SECTIONS
    for cls in sections:
        fields = {f.name for f in dataclasses.fields(cls)}
        assert fields == set(schema[cls.SECTION]["properties"]), cls.__name__
        cls.from_config({})  # every key has a schema default


def test_settings_errors_name_the_key_as_written():
    with pytest.raises(InputError, match=r"config key 'baseline\.lr': -1 is less than or equal to the minimum of 0"):
        settings.BaselineSettings.from_config({"lr": -1})
    with pytest.raises(InputError, match=r"config key 'cvae\.latent_dim': 'ten' is not of type 'integer'"):
        settings.CVAESettings.from_config({"latent_dim": "ten"})
    with pytest.raises(InputError, match=r"config key 'maps': Additional properties are not allowed \('npx'"):
        settings.MapSettings.from_config({"npx": 64})
    inherited = settings.BaselineSettings.from_config({"epochs": 3}).training(
        settings.CVAESettings.from_config({"lr": 0.01})
    )
    assert inherited.epochs == 3 and inherited.lr == 0.01


def test_report_rule_declares_the_figures_the_report_writes():
    rule = (REPO / "workflow" / "rules" / "report.smk").read_text()
    declared = re.findall(r'^\s+"(\w+)",$', rule.split("FIGURES = [")[1].split("]")[0], flags=re.M)
    assert tuple(declared) == reporting.FIGURES
    for name in reporting.FIGURES:
        assert (REPO / "workflow" / "report" / "figures" / f"{name}.rst").read_text().strip()


def test_workflow_schema_is_the_package_schema():
    linked = REPO / "workflow" / "schemas" / "config.schema.yaml"
    assert linked.resolve() == (PACKAGE / "config.schema.yaml").resolve()
