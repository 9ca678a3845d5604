"""Project one shard's galaxies along the planned lines of sight -> results/maps/shard_K.h5.

Each map covers ``maps.fov_rhalf`` stellar half-mass radii with ``maps.npix``^2 pixels and
follows the map contract of docs/design.md (see ``exsitu.maps`` and ``exsitu.projection``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from exsitu.maps import project_shard, read_plan
from exsitu.settings import MapSettings, section_of
from exsitu.stages import run_stage, stage_parser

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__file__, __doc__)
    parser.add_argument("--particles", required=True, help="the tag stage's shard file")
    parser.add_argument("--plan", required=True, help="the plan stage's CSV")
    parser.add_argument("--shard", type=int, required=True)
    parser.add_argument("--out", required=True, help="map shard (HDF5)")
    args = parser.parse_args(argv)
    settings = section_of(args.settings, MapSettings)
    n = project_shard(args.particles, read_plan(args.plan, args.shard), args.shard, settings, args.out)
    log.info("shard %d: %d maps of %dx%d pixels", args.shard, n, settings.npix, settings.npix)


if __name__ == "__main__":
    run_stage(main)
