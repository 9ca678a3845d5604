"""Generation time of the mock universe on one core, and its galaxy population against TNG100-1.

Times ``simulate`` (all snapshots, TNG layout written), then selects, tags (library calls,
one shard) and measures the relations of the z=0 galaxies: per TNG100 mass bin the share of
galaxies and the ex-situ fraction's percentiles beside TNG100-1's, sizes and their correlation
with the ex-situ fraction, the checks of ``exsitu.relations.TOLERANCES``, and per galaxy how well
metallicity and age separate in-situ from ex-situ stars.

    python benchmarks/bench_mock.py [--n-galaxies 450] [--seed 42] [--json relations.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd

from exsitu.catalog import select_snapshot
from exsitu.mock.simulate import simulate
from exsitu.relations import measure_relations
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
    catalog.to_csv(out / "subhalos.csv", index=False)
    t0 = time.perf_counter()
    tag_shard(base, catalog, 0, 1, str(out / "shard_0.h5"))
    t_tag = time.perf_counter() - t0
    rel = measure_relations([out / "shard_0.h5"], out / "subhalos.csv")
    if args.json:
        Path(args.json).write_text(json.dumps(rel))
    print(f"mock universe: {args.n_galaxies} z=0 galaxies, seed {args.seed}, snapshots {SNAPSHOTS}")
    print(f"generation {t_gen:.1f} s (one core), tagging {t_tag:.1f} s, {len(catalog)} catalogue rows")
    tng = rel["tng100"]
    print("\nlog M*        n  share (TNG)    f_ex p16 / median / p84 (TNG)                 r_1/2 kpc (TNG)  rho (TNG)")
    for b in tng["bins"]:
        t = b["tng100"]
        fex = " / ".join("  n/a" if b[k] is None else f"{b[k]:.3f}" for k in ("fex_p16", "fex_median", "fex_p84"))
        ref = " / ".join(f"{t[k]:.3f}" for k in ("fex_p16", "fex_median", "fex_p84"))
        rho = "  n/a" if b["rho_fex_rhalf"] is None else f"{b['rho_fex_rhalf']:+.2f}"
        print(
            f"{b['log_mstar'][0]:.2f}-{b['log_mstar'][1]:.2f} {b['n']:4d}  {b['share']:.3f} ({t['share']:.3f})  "
            f"{fex} ({ref})  {b['rhalf_median_kpc'] or 0:5.2f} ({t['rhalf_median_kpc']:5.2f})  "
            f"{rho} ({t['rho_fex_rhalf']:+.2f})"
        )
    if tng["mean_rho"] is None:
        print("mean rho: n/a (no mass bin holds enough galaxies)")
    else:
        print(f"mean rho {tng['mean_rho']:+.3f} (TNG100 {tng['tng100_mean_rho']:+.3f})")
    missed = [c for c in tng["checks"] if not c["passed"]]
    print(f"checks: {len(tng['checks']) - len(missed)} of {len(tng['checks'])} hold")
    for c in missed:
        print(
            f"  MISSED {c['what']} {c['bin']}: {c['mock']:.3f} against {c['tng100']:.3f} (tolerance {c['tolerance']})"
        )
    within = rel["within_galaxy"]
    print("\nper galaxy, median per bin: Z overlap, Z in-ex [dex], age overlap, age in-ex [Gyr]")
    for k, b in enumerate(tng["bins"]):
        vals = [
            within[key]["median"][k]
            for key in (
                "metallicity_overlap",
                "metallicity_insitu_minus_exsitu",
                "age_overlap",
                "age_insitu_minus_exsitu",
            )
        ]
        print(f"  {b['log_mstar'][0]:.2f}  " + "  ".join("  n/a" if v is None else f"{v:6.2f}" for v in vals))


if __name__ == "__main__":
    main()
