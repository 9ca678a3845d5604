"""Generation time of the mock universe on one core, and its galaxy relations against the published bands.

Times ``simulate`` (all snapshots, TNG layout written), then selects, tags (library calls,
one shard) and measures the relations of the z=0 galaxies, printing each binned median
with the band it should fall in and the in-situ/ex-situ metallicity overlap per mass bin.

    python benchmarks/bench_mock.py [--n-galaxies 450] [--seed 42] [--json relations.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from exsitu.catalog import select_snapshot
from exsitu.mock.simulate import simulate
from exsitu.relations import MASS_EDGES, measure_relations
from exsitu.tagging import tag_shard

SNAPSHOTS = [99, 91]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-galaxies", type=int, default=450)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", help="also write the measured relations here")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench_mock_"))
    t0 = time.perf_counter()
    simulate(out / "TNGmock", SNAPSHOTS, args.n_galaxies, args.seed)
    t_gen = time.perf_counter() - t0
    base = str(out / "TNGmock" / "output")
    catalog = pd.concat([select_snapshot(base, s, 1e10, "SubhaloMassType") for s in SNAPSHOTS], ignore_index=True)
    t0 = time.perf_counter()
    tag_shard(base, catalog, 0, 1, str(out / "shard_0.h5"))
    t_tag = time.perf_counter() - t0
    rel = measure_relations([out / "shard_0.h5"])
    if args.json:
        Path(args.json).write_text(json.dumps(rel))
    print(f"mock universe: {args.n_galaxies} z=0 galaxies, seed {args.seed}, snapshots {SNAPSHOTS}")
    print(f"generation {t_gen:.1f} s (one core), tagging {t_tag:.1f} s, {len(catalog)} catalogue rows")
    bands = rel["bands"]
    centres = 0.5 * (np.array(MASS_EDGES[:-1]) + np.array(MASS_EDGES[1:]))
    for key in ("exsitu_fraction", "half_mass_radius", "central_dispersion"):
        print(f"\n{key}  ({bands[key]['citation']})")
        for b, c in enumerate(centres):
            med = rel[key]["median"][b]
            lo, hi = (float(np.interp(c, bands["log_mstar"], bands[key][e])) for e in ("lo", "hi"))
            verdict = "-" if med is None else ("in band" if lo <= med <= hi else "OUT")
            shown = "   n/a" if med is None else f"{med:6.3g}"
            print(f"  logM {c:5.2f}  n={rel[key]['n'][b]:3d}  median {shown}  band [{lo:.3g}, {hi:.3g}]  {verdict}")
    m, prof = rel["metallicity"], rel["exsitu_profile"]
    print(
        "\nper mass bin: log Z/Zsun median in-situ / ex-situ, overlap coefficient, f_ex = 0.5 transition radius [kpc]"
    )
    for b, c in enumerate(centres):
        vals = (m["insitu_median"][b], m["exsitu_median"][b], m["overlap"][b], prof["transition_kpc"][b])
        print(f"  logM {c:5.2f}  " + "  ".join("  n/a" if v is None else f"{v:6.2f}" for v in vals))


if __name__ == "__main__":
    main()
