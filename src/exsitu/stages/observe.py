"""Observe one shard's ideal maps as a MaNGA-like IFU survey would -> results/observed/shard_K.h5.

Each projection is placed at a redshift from ``observe.redshift``, degraded to spaxels and a
Gaussian PSF (on the mass-weighted moments), given noise from an S/N model tied to surface
density, cut at ``observe.min_snr``, Voronoi-binned and cut to a hexagonal footprint; the maps
are rescaled to the projected half-mass radius. The ex-situ map stays the intrinsic one
(see ``exsitu.observe`` and ``exsitu.maps.observe_shard``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from exsitu.maps import observe_shard
from exsitu.settings import ObserveSettings, section_of
from exsitu.stages import run_stage, stage_parser

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__file__, __doc__)
    parser.add_argument("--maps", required=True, help="the project stage's map shard")
    parser.add_argument("--shard", type=int, required=True, help="the shard number the file must hold")
    parser.add_argument("--out", required=True, help="observed map shard (HDF5, same contract)")
    args = parser.parse_args(argv)
    n = observe_shard(args.maps, args.shard, section_of(args.settings, ObserveSettings), args.out)
    log.info("%s: %d maps observed", args.out, n)


if __name__ == "__main__":
    run_stage(main)
