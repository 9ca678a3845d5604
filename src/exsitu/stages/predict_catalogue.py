"""Merge the catalogues of `exsitu predict` shards into one catalogue.fits + catalogue.csv.

Each shard directory holds the catalogue of the galaxies it predicted (input i in shard i mod n,
with its position i in the ``index`` column) and their prediction files. The merged catalogue
lists every galaxy once, in input order, its ``fits`` column pointing into the shard directory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from exsitu.stages import run_stage, stage_parser
from exsitu.survey import STATUS_OK, merge_catalogues

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__file__, __doc__)
    parser.add_argument("--shards", nargs="+", required=True, help="shard directories written by exsitu predict")
    parser.add_argument("--out-dir", required=True, help="directory for catalogue.fits and catalogue.csv")
    args = parser.parse_args(argv)
    table = merge_catalogues(args.shards, args.out_dir)
    failed = int((table["status"] != STATUS_OK).sum())
    if failed:
        log.warning("%d of %d galaxies failed; the catalogue's reason column says why", failed, len(table))


if __name__ == "__main__":
    run_stage(main)
