#!/usr/bin/env bash
# Snakemake runs this once inside the new environment, from the workflow directory
# (the repository root): install the exsitu package the rules call as `python -m exsitu.*`.
# --no-deps: every dependency already comes from exsitu.yaml.
set -euo pipefail
python -m pip install --no-deps --no-build-isolation -e .
