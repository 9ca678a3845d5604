# exsitu-sbi: infer 2D ex-situ stellar mass fraction maps with a cVAE + conditional flow.
# Entry point: configuration, schema validation, the stage rules and the final target.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/predict.smk"


rule all:
    default_target: True
    input:
        "results/report.html",
