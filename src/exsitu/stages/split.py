"""Split the maps into train/val/test, grouped by galaxy -> split.csv + normalisation.json.

No galaxy (all its projections, both snapshots) is in two subsets; the normalisation is the
per-channel mean and std over the training set's galaxy pixels (see ``exsitu.splitting``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from exsitu.io import atomic_output
from exsitu.settings import SplitSettings, section_of
from exsitu.splitting import split_maps
from exsitu.stages import run_stage, stage_parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__file__, __doc__)
    parser.add_argument("--maps", nargs="+", required=True, help="the project stage's shard files")
    parser.add_argument("--out-table", required=True, help="split CSV")
    parser.add_argument("--out-stats", required=True, help="normalisation JSON")
    args = parser.parse_args(argv)
    table, stats = split_maps(args.maps, section_of(args.settings, SplitSettings))
    with atomic_output(args.out_table) as tmp_table, atomic_output(args.out_stats) as tmp_stats:
        table.to_csv(tmp_table, index=False)
        tmp_stats.write_text(json.dumps(stats, indent=2))


if __name__ == "__main__":
    run_stage(main)
