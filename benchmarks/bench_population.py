"""How often a mock universe of the default size holds the TNG100 checks, over many universes.

One universe of 750 galaxies holds 10-100 galaxies per bin above 10^10.75 Msun, so whether it
passes a check of ``exsitu.relations.TOLERANCES`` is partly luck. This benchmark draws
``--universes`` independent universes (seeds ``--first-seed``, ``--first-seed + 1``, ...; keep the
default run's seed 42 out of them) from the mock's galaxy population -- stellar masses, central or
satellite, halo and assembly history (``exsitu.mock.galaxies.draw_population``), without
particles -- and applies ``exsitu.relations.compare_with_tng100`` to each. It prints, per check,
the share of universes that pass it with a 95% Wilson interval, and the f_ex percentiles of all
universes pooled beside TNG100-1's: the pooled figures are the population's bias, the pass rates
what a new seed can expect.

The ex-situ fraction here is the assembly history's (accreted over total stellar mass); the
relations stage measures it from tagged particles, which agrees to sampling noise. Sizes need
particles, so the rho(f_ex, R1/2) check is left to the relations stage (``bench_mock.py``).

``--shmr`` swaps the stellar-to-halo mass relation of hosts and satellites (``exsitu.mock.assembly.SHMR``):
``behroozi2013`` for Behroozi et al. 2013's, ``kravtsov2018-dwarf-slope-behroozi2013`` for the mock's with
Behroozi's dwarf slope alone. It measures how much of the low-mass ex-situ fraction that slope sets (README,
"Where the low-mass ex-situ fractions come from").

``--quench-log-mstar`` sets the in-situ quenching mass (``exsitu.mock.assembly.QUENCH_LOG_MSTAR``), the
parameter scanned when the halo draw was made exact; the last line, the pooled deviations from TNG100 in units of
the tolerances (RMS and worst over the 28 f_ex and share checks), is the score of that scan.

    python benchmarks/bench_population.py [--universes 40] [--n-galaxies 750] [--first-seed 1000] [--shmr NAME]
                                          [--quench-log-mstar 10.5]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import stats

from exsitu.literature import BEHROOZI_2013, KRAVTSOV_2018, tng100_population
from exsitu.mock import assembly
from exsitu.mock.galaxies import draw_population
from exsitu.relations import compare_with_tng100

#: --shmr choices: the stellar-to-halo relations the population can be drawn with.
RELATIONS = {
    "kravtsov2018": KRAVTSOV_2018,
    "behroozi2013": BEHROOZI_2013,
    "kravtsov2018-dwarf-slope-behroozi2013": replace(KRAVTSOV_2018, alpha=BEHROOZI_2013.alpha),
}


def draw_universe(seed: int, n_galaxies: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log M* [Msun], f_ex, is_central) of the z = 0 galaxies of the mock universe of ``seed``."""
    galaxies = draw_population(np.random.default_rng(seed), n_galaxies)
    return (
        np.array([g.log_mstar for g in galaxies]),
        np.array([g.exsitu_fraction for g in galaxies]),
        np.array([not g.is_satellite for g in galaxies]),
    )


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def _in_tolerances(check: dict) -> float:
    """How far a check's mock figure is from TNG100's in units of its tolerance (shares: of the log ratio)."""
    if check["what"] == "share":
        return abs(np.log(check["mock"] / check["tng100"])) / np.log(check["tolerance"])
    return abs(check["mock"] - check["tng100"]) / check["tolerance"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--universes", type=int, default=40)
    parser.add_argument("--n-galaxies", type=int, default=750)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--shmr", choices=RELATIONS, default="kravtsov2018", help="stellar-to-halo mass relation")
    parser.add_argument("--quench-log-mstar", type=float, default=assembly.QUENCH_LOG_MSTAR)
    parser.add_argument("--json", help="also write the pass rates and pooled percentiles here")
    args = parser.parse_args()
    # Before the first draw: the population caches its median relation.
    assembly.SHMR = RELATIONS[args.shmr]
    assembly.QUENCH_LOG_MSTAR = args.quench_log_mstar
    seeds = range(args.first_seed, args.first_seed + args.universes)
    if 42 in seeds:
        parser.error("seed 42 is the default universe's; choose --first-seed so that it is left out")
    t0 = time.perf_counter()
    universes = [draw_universe(s, args.n_galaxies) for s in seeds]
    elapsed = time.perf_counter() - t0
    passes: dict[tuple[str, str], list[bool]] = {}
    every = []  # per universe: all its checks pass (without sizes there is no rho check)
    for log_m, fex, central in universes:
        result = compare_with_tng100(log_m, fex, np.full(fex.size, np.nan), central)
        every.append(result["all_passed"])
        for check in result["checks"]:
            passes.setdefault((check["what"], check["bin"]), []).append(check["passed"])
    log_m, fex, central = (np.concatenate(parts) for parts in zip(*universes))
    pooled = compare_with_tng100(log_m, fex, np.full(fex.size, np.nan), central)

    print(f"{args.universes} universes of {args.n_galaxies} galaxies (seeds {seeds.start}-{seeds.stop - 1}), ", end="")
    print(f"drawn in {elapsed:.0f} s without particles, stellar-to-halo relation {args.shmr}")
    print("\ncheck                 bin          pass rate  [95% Wilson]   universes checked")
    rates = []
    for (what, where), outcome in passes.items():
        ci = stats.binomtest(int(sum(outcome)), len(outcome)).proportion_ci(method="wilson")
        rates.append({"what": what, "bin": where, "passed": int(sum(outcome)), "checked": len(outcome)})
        rates[-1].update(low=ci.low, high=ci.high)
        print(f"{what:20s}  {where:11s}  {np.mean(outcome):.2f}      [{ci.low:.2f}, {ci.high:.2f}]   {len(outcome)}")
    print(f"universes that pass every f_ex and share check: {np.mean(every):.2f}")
    print("\nlog M*        pooled f_ex p16 / median / p84      TNG100-1              centrals / satellites median")
    for row in pooled["bins"]:
        tng = row["tng100"]
        mock = " / ".join(_fmt(row[k]) for k in ("fex_p16", "fex_median", "fex_p84"))
        ref = " / ".join(_fmt(tng[k]) for k in ("fex_p16", "fex_median", "fex_p84"))
        split = f"{_fmt(row['fex_median_centrals'])} / {_fmt(row['fex_median_satellites'])}"
        print(f"{tng['log_mstar'][0]:.2f}-{tng['log_mstar'][1]:.2f}  {mock}   {ref}   {split}")
    deviations = np.array([_in_tolerances(c) for c in pooled["checks"] if c["what"] != "mean_rho"])
    rms, worst = float(np.sqrt(np.mean(deviations**2))), float(deviations.max())
    print(f"pooled deviation from TNG100 in tolerances: RMS {rms:.2f}, worst {worst:.2f}", end=" ")
    print(f"(quenching at 10^{args.quench_log_mstar})")
    if args.json:
        keys = ("log_mstar", "n", "share", "fex_p16", "fex_median", "fex_p84")
        record = {
            "universes": args.universes,
            "n_galaxies": args.n_galaxies,
            "shmr": args.shmr,
            "seeds": [seeds.start, seeds.stop - 1],
            "pass_rates": rates,
            "all_passed_share": float(np.mean(every)),
            "pooled": [{k: row[k] for k in keys} for row in pooled["bins"]],
            "quench_log_mstar": args.quench_log_mstar,
            "pooled_deviation": {"rms": rms, "worst": worst},
            "tng100": tng100_population()["bins"],
        }
        Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
