"""exsitu-sbi: simulation-based inference of 2D ex-situ stellar mass fraction maps.

The pipeline's stages live in :mod:`exsitu.stages` (one module per Snakemake rule, run as
``exsitu <stage>``); everything they compute is in the library modules beside it, e.g. the
projection kernel for users' own particle data, :func:`exsitu.projection.project`. The
stages, file contracts and physics conventions are described in ``docs/design.md``.
"""

__version__ = "0.1.0"
