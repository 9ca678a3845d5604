"""Plan the lines of sight of every galaxy -> results/catalog/projections.csv.

Rare (mostly high ex-situ) galaxies get more projections so the training set's ex-situ
distribution is flatter; orientations are isotropic (see ``exsitu.sightlines``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from exsitu.io import atomic_output
from exsitu.settings import PlanSettings, section_of
from exsitu.sightlines import make_plan, read_galaxies
from exsitu.stages import run_stage, stage_parser

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__file__, __doc__)
    parser.add_argument("--particles", nargs="+", required=True, help="the tag stage's shard files")
    parser.add_argument("--out", required=True, help="projection plan CSV")
    args = parser.parse_args(argv)
    plan = make_plan(read_galaxies(args.particles), section_of(args.settings, PlanSettings))
    log.info("%d projections of %d galaxies", len(plan), plan[["snapshot", "subhalo_id"]].drop_duplicates().shape[0])
    with atomic_output(args.out) as tmp:
        plan.to_csv(tmp, index=False, float_format="%.17g")


if __name__ == "__main__":
    run_stage(main)
