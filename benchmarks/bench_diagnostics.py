"""What the evaluation's diagnostics cost on a finished run, step by step, with the flow's headline numbers.

On the test maps of a run (``--run``: the directory holding results/; its model directory's model.json
gives the channels, galaxy scalars, field of view and noise scales), chunk by chunk as the evaluate stage
does it, times: flow sampling (``exsitu.sample.sample_in_chunks``, map i seeded ``--seed + i``), the
per-map tallies of one posterior (``exsitu.posterior_stats.PosteriorTally.add``: PIT, coverage by
stratum, CRPS, TARP with both references, functionals, energy and variogram scores) and within them
TARP alone, the fitted baselines (radial, per-pixel lookup, trees; ``exsitu.fitted_baselines``) and
within them the lookup alone on one core, the deterministic U-net, and the galaxy-bootstrap summary.
Then prints the flow's pooled coverage, TARP and coverage per posterior-median stratum.

    python benchmarks/bench_diagnostics.py --run . [--n-samples 100] [--max-maps 300] [--threads 2]

Every interval is a 95% galaxy-bootstrap percentile interval; seconds are wall time on this machine.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from exsitu.bootstrap import GalaxyBootstrap
from exsitu.calibration import TARP_REFERENCES, tarp_credibility
from exsitu.checkpoint import load_model
from exsitu.dataset import DatasetFiles
from exsitu.evaluation import CHUNK_ELEMENTS
from exsitu.fitted_baselines import load_baselines
from exsitu.modelcard import load_model_dir
from exsitu.posterior_stats import PosteriorTally
from exsitu.sample import maps_in_budget, predict_baseline, sample_in_chunks
from exsitu.scalars import scalar_values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="finished run directory (holds results/)")
    parser.add_argument("--n-samples", type=int, default=100, help="posterior samples per map")
    parser.add_argument("--max-maps", type=int, help="the first test maps only (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    res = args.run / "results"
    device = torch.device("cpu")
    model = load_model_dir(res / "models", device)
    card = model.card
    maps = sorted(str(p) for p in (res / ("maps" if card.observe is None else "observed")).glob("shard_*.h5"))
    dataset = res / "dataset"
    data = DatasetFiles(maps, str(dataset / "split.csv"), str(dataset / "normalisation.json"), card.channels)
    baselines = load_baselines(res / "models" / "baselines.joblib")
    baseline = load_model(str(res / "models" / "baseline.pt"), device)
    rng = np.random.default_rng(args.seed)
    tally = PosteriorTally(card.fov_rhalf)
    seconds: dict[str, float] = defaultdict(float)
    tables = []
    chunk_size = maps_in_budget(args.n_samples, card.npix, CHUNK_ELEMENTS)
    for chunk in data.chunks("test", chunk_size):
        if args.max_maps is not None and int(chunk.table.index[0]) >= args.max_maps:
            break
        tables.append(chunk.table)
        rows = chunk.table.index.to_numpy()
        truth, mask = chunk.exsitu[:, 0].numpy().astype(np.float64), chunk.mask[:, 0].numpy()
        weights = np.where(mask, 10.0 ** chunk.log_sigma.astype(np.float64), 0.0)
        scalars = chunk.scalars(card.scalars)
        start = time.perf_counter()
        _, samples = next(
            sample_in_chunks(
                model.cvae, chunk.conditions, args.n_samples, "flow", seeds=args.seed + rows, flow=model.flow,
                scalars=scalars, noise=card.noise_scales, maps_per_chunk=len(chunk),
            )
        )  # fmt: skip
        samples = samples.numpy()
        seconds["flow sampling"] += time.perf_counter() - start
        start = time.perf_counter()
        tally.add(samples, truth, mask, weights, rng)
        seconds["posterior tallies (all diagnostics)"] += time.perf_counter() - start
        start = time.perf_counter()
        for reference in TARP_REFERENCES:
            tarp_credibility(samples, truth, rng, reference=reference, mask=mask)
        seconds["  of which TARP, both references"] += time.perf_counter() - start
        context = scalar_values(chunk.table, baselines.scalars)
        start = time.perf_counter()
        baselines.predict(chunk.conditions.numpy(), mask, context, workers=-1)
        seconds["fitted baselines (radial, lookup, trees)"] += time.perf_counter() - start
        start = time.perf_counter()
        baselines.lookup.predict(baselines.physical(chunk.conditions.numpy(), mask), mask, context, workers=1)
        seconds["  lookup alone, one core"] += time.perf_counter() - start
        start = time.perf_counter()
        predict_baseline(baseline, chunk.conditions, scalars)
        seconds["deterministic U-net"] += time.perf_counter() - start
    table = pd.concat(tables)
    boot = GalaxyBootstrap(table["galaxy_id"].to_numpy(), n_replicates=1000, seed=args.seed)
    start = time.perf_counter()
    summary = tally.summary(boot, table["log_mstar"].to_numpy(np.float64))
    seconds["bootstrap summary (1000 replicates)"] = time.perf_counter() - start
    n_pixels = int(tally.median.per_map()["pixels"].sum())
    print(
        f"test maps: {len(table)} of {boot.n_galaxies} galaxies, {card.npix}^2, {n_pixels} galaxy pixels, "
        f"K = {args.n_samples}, chunks of {chunk_size} maps, {args.threads} torch threads"
    )
    for step, value in seconds.items():
        print(f"{step:42s} {value:8.2f} s")

    def interval(e: dict) -> str:
        return f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"

    print(f"flow: coverage 68% {interval(summary['coverage']['0.68'])}, 95% {interval(summary['coverage']['0.95'])}")
    for reference, block in summary["tarp"].items():
        print(f"flow: TARP {reference:9s} ATC {interval(block['atc'])}, KS p {block['ks_pvalue']:.2g}")
    for stratum in summary["strata"]:
        if stratum["by"] == "median":
            print(f"flow: 68% coverage, {stratum['label']:22s} {interval(stratum['coverage']['0.68'])}")


if __name__ == "__main__":
    main()
