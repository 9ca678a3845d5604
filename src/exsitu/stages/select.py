"""Select the subhalos to map from the group catalogues -> results/catalog/subhalos.csv.

Keeps SubhaloFlag == 1 subhalos whose stellar mass (``selection.mass_field``) exceeds
``selection.min_stellar_mass`` [Msun] at every configured snapshot; ``galaxy_id`` is the
SubLink RootDescendantID (see ``exsitu.catalog``).
"""

from __future__ import annotations

from collections.abc import Sequence

from exsitu.catalog import select_catalog
from exsitu.io import atomic_output
from exsitu.settings import SelectionSettings, section_of
from exsitu.stages import run_stage, stage_parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__file__, __doc__)
    parser.add_argument("--basepath", required=True, help="TNG 'output' directory")
    parser.add_argument("--snapshots", type=int, nargs="+", required=True)
    parser.add_argument("--out", required=True, help="catalogue CSV")
    args = parser.parse_args(argv)
    catalog = select_catalog(args.basepath, args.snapshots, section_of(args.settings, SelectionSettings))
    with atomic_output(args.out) as tmp:
        catalog.to_csv(tmp, index=False)


if __name__ == "__main__":
    run_stage(main)
