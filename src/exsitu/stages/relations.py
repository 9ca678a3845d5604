"""Measure the galaxies' population and scaling relations against TNG100-1 and published ones -> relations.json.

The mass function, the ex-situ fraction at fixed mass (percentiles, centrals and satellites), sizes
and their correlation with the ex-situ fraction, against the real TNG100-1 population; central
dispersions and sizes against published bands; the ex-situ fraction against radius; and how well
metallicity and age separate in-situ from ex-situ stars, pooled and within each galaxy (see
``exsitu.relations``). The report shows them as "the simulated galaxies against TNG100-1".
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from exsitu.io import atomic_output
from exsitu.relations import measure_relations
from exsitu.stages import run_stage, stage_parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__file__, __doc__)
    parser.add_argument("--particles", nargs="+", required=True, help="the tag stage's shard files")
    parser.add_argument("--catalog", help="the select stage's subhalos.csv (central flags)")
    parser.add_argument("--out", required=True, help="relations JSON")
    args = parser.parse_args(argv)
    relations = measure_relations(args.particles, args.catalog)
    with atomic_output(args.out) as tmp:
        tmp.write_text(json.dumps(relations, indent=1))


if __name__ == "__main__":
    run_stage(main)
