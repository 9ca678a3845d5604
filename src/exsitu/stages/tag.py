"""Tag one shard's star particles in-situ / ex-situ -> results/particles/shard_K.h5.

Catalogue row i belongs to shard i % n_shards. Particles are converted to physical units
about their subhalo and tagged with the StellarAssembly InSitu flags (see ``exsitu.tagging``).
"""

from __future__ import annotations

from collections.abc import Sequence

from exsitu.stages import run_stage, stage_parser
from exsitu.tagging import read_catalog, tag_shard


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__file__, __doc__)
    parser.add_argument("--basepath", required=True, help="TNG 'output' directory")
    parser.add_argument("--catalog", required=True, help="the select stage's CSV")
    parser.add_argument("--shard", type=int, required=True)
    parser.add_argument("--n-shards", type=int, required=True)
    parser.add_argument("--out", required=True, help="per-shard particle file (HDF5)")
    args = parser.parse_args(argv)
    tag_shard(args.basepath, read_catalog(args.catalog), args.shard, args.n_shards, args.out)


if __name__ == "__main__":
    run_stage(main)
