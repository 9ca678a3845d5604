"""Write a mock universe in the exact IllustrisTNG on-disk layout -> results/mock/TNGmock/.

The latest snapshot holds ``mock.n_galaxies`` galaxies above 1e10 Msun plus subhalos the
selection must reject; earlier snapshots hold their main progenitors, linked by a SubLink
tree. Deterministic for ``mock.seed`` (see ``exsitu.mock``).
"""

from __future__ import annotations

from collections.abc import Sequence

from exsitu.io import atomic_output
from exsitu.mock.simulate import simulate
from exsitu.settings import MockSettings, section_of
from exsitu.stages import run_stage, stage_parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__file__, __doc__)
    parser.add_argument("--out", required=True, help="directory to create (its output/ is the TNG basepath)")
    parser.add_argument("--snapshots", type=int, nargs="+", required=True, help="snapshot numbers, e.g. 99 91")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes building the snapshots side by side (the same universe)"
    )
    args = parser.parse_args(argv)
    settings = section_of(args.settings, MockSettings)
    with atomic_output(args.out, directory=True) as tmp:
        simulate(tmp, args.snapshots, settings.n_galaxies, settings.seed, workers=args.workers)


if __name__ == "__main__":
    run_stage(main)
