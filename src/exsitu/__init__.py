"""exsitu-sbi: simulation-based inference of 2D ex-situ stellar mass fraction maps.

Stages (each a module with a ``main()`` that Snakemake calls as ``python -m exsitu.<stage>``):
simulate_mock, select, tag, plan, project, split, train_cvae, train_flow, train_baseline,
evaluate, report. The projection kernel for users' own particle data is
:func:`exsitu.projection.project`.
"""

__version__ = "0.1.0"
