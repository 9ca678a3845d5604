"""Measure the galaxies' scaling relations against published ones -> results/catalog/relations.json.

Median and scatter of the ex-situ fraction, half-mass radius and central dispersion against
stellar mass, the ex-situ fraction against radius by mass bin and the in-situ / ex-situ
metallicity distributions, at the latest snapshot, with the published bands they are checked
against (see ``exsitu.relations``). The report shows them as "mock against TNG/Illustris".
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
    parser.add_argument("--out", required=True, help="relations JSON")
    args = parser.parse_args(argv)
    relations = measure_relations(args.particles)
    with atomic_output(args.out) as tmp:
        tmp.write_text(json.dumps(relations, indent=1))


if __name__ == "__main__":
    run_stage(main)
