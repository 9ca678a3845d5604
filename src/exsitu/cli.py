"""The ``exsitu`` command: one subcommand per pipeline stage (``exsitu project --help``)."""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

from exsitu import __version__
from exsitu.stages import STAGES, TOOLS, run_stage


def _summary(stage: str) -> str:
    """First docstring line of a stage module, read without importing it (torch loads slowly)."""
    spec = importlib.util.find_spec(f"exsitu.stages.{stage}")
    doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text())) if spec and spec.origin else None
    return (doc or "").splitlines()[0] if doc else ""


def main(argv: Sequence[str] | None = None) -> None:
    """Dispatch ``exsitu <stage> [flags]`` to ``exsitu.stages.<stage>.main``."""
    parser = argparse.ArgumentParser(
        prog="exsitu",
        description="exsitu-sbi: infer 2D ex-situ stellar mass fraction maps (cVAE + conditional flow). "
        "Each subcommand runs one pipeline stage; see docs/design.md.",
    )
    parser.add_argument("--version", action="version", version=f"exsitu {__version__}")
    commands = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for stage in (*STAGES, *TOOLS):
        commands.add_parser(stage, help=_summary(stage), add_help=False)
    args, rest = parser.parse_known_args(argv)
    module = importlib.import_module(f"exsitu.stages.{args.stage}")
    run_stage(module.main, rest)


if __name__ == "__main__":
    main()
