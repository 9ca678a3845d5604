"""Learning curve: test MAE against the share of training galaxies, for the flow's posterior median and the trees.

On a finished run directory, for each fraction (default 25, 50, 100%) of the TRAINING galaxies (nested random
subsets drawn with ``--seed``: every galaxy of the 25% subset is in the 50% one), a copy of split.csv keeps only
those galaxies' training rows (validation and test rows untouched; the normalisation stays the full training
set's). The pipeline's stage CLIs then train the cVAE and the flow, recalibrate the decoder's noise and fit the
baselines on it, with the run's settings, and the benchmark scores the test maps: per-pixel MAE of the flow's
posterior median (``evaluate.n_samples`` draws of the full predictive, the recalibrated noise) and of the trees'
median, each test galaxy counted once (maps weighted 1 / n_los), with 95% galaxy-bootstrap intervals.

If the MAE still falls from 50% to 100%, more training galaxies would help; if it is flat, the model (or the
information in the maps) limits it. Run after ``snakemake --cores 2``, with the overlays the run used:

    python benchmarks/bench_learning_curve.py --run . --out learning_curve.json
    python benchmarks/bench_learning_curve.py --run /tmp/wf --configfile tests/config/tiny.yaml
    python benchmarks/bench_learning_curve.py --run . --methods trees     # seconds: the trees only

Models, logs and the modified split tables go to ``--workdir`` (a temporary directory by default).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from exsitu.bootstrap import GalaxyBootstrap
from exsitu.checkpoint import load_model
from exsitu.dataset import DatasetFiles, MapSet
from exsitu.device import resolve_device
from exsitu.fitted_baselines import load_baselines
from exsitu.priors import WEIGHTINGS
from exsitu.recalibration import read_noise_scales
from exsitu.sample import sample_in_chunks
from exsitu.scalars import scalar_values

METHODS = ("flow", "trees")


def run_config(run: Path, overlays: Sequence[str]) -> dict[str, Any]:
    """The run's config.yaml with the ``--configfile`` overlays merged over it, as Snakemake merges them."""

    def merge(base: dict, over: Mapping) -> dict:
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(out.get(key, {}), value) if isinstance(value, Mapping) else value
        return out

    config = yaml.safe_load((run / "config.yaml").read_text())
    for path in overlays:
        config = merge(config, yaml.safe_load(Path(path).read_text()) or {})
    return config


def nested_subsets(table: pd.DataFrame, fractions: Sequence[float], seed: int) -> dict[float, pd.DataFrame]:
    """split.csv copies keeping the training rows of the first ceil(f G) of the G training galaxies (one order)."""
    train = table["subset"] == "train"
    galaxies = np.random.default_rng(seed).permutation(np.unique(table.loc[train, "galaxy_id"]))
    out = {}
    for f in fractions:
        kept = set(galaxies[: max(1, math.ceil(f * len(galaxies)))].tolist())
        out[f] = table[~train | table["galaxy_id"].isin(kept)]
    return out


def stage(name: str, log: Path, settings: Mapping[str, Any], **flags: str | Sequence[str]) -> float:
    """Run ``python -m exsitu.stages.<name>`` with ``--flag value`` pairs and ``--settings``; returns its wall time."""
    cmd = [sys.executable, "-m", f"exsitu.stages.{name}", "--settings", json.dumps(settings)]
    for flag, value in flags.items():
        cmd += [f"--{flag.replace('_', '-')}", *([value] if isinstance(value, str) else value)]
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"{name} failed ({proc.returncode}); see {log}")
    return time.perf_counter() - start


def flow_median(
    models: Path, test: MapSet, n_samples: int, seed: int, scalars: Sequence[str], device: torch.device
) -> np.ndarray:
    """(N, P, P) per-pixel median of the flow's full predictive on the test maps, with the recalibrated noise.

    Test map i is sampled with seed ``seed + i``, as the evaluate stage samples it; ``scalars``: the galaxy
    scalars the networks take (``conditions.scalars``).
    """
    cvae, flow = load_model(str(models / "cvae.pt"), device), load_model(str(models / "flow.pt"), device)
    noise = read_noise_scales(models / "noise_scale.json")
    medians = []
    for _, samples in sample_in_chunks(
        cvae, test.conditions, n_samples, "flow", seeds=seed + np.arange(len(test)), flow=flow,
        scalars=test.scalars(scalars), noise=noise,
    ):  # fmt: skip
        medians.append(samples.median(dim=1).values.numpy())
    return np.concatenate(medians)


def mae(prediction: np.ndarray, test: MapSet, boot: GalaxyBootstrap) -> dict[str, float]:
    """Per-pixel MAE over galaxy pixels, each test galaxy counted once, with its bootstrap interval."""
    mask, truth = test.mask[:, 0].numpy(), test.exsitu[:, 0].numpy()
    error = np.where(mask, np.abs(prediction - truth), 0.0).sum(axis=(1, 2))
    return boot.ratio(error, mask.sum(axis=(1, 2)).astype(np.float64)).to_dict()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="finished run directory (holds results/)")
    parser.add_argument("--configfile", nargs="*", default=[], help="the overlays the run used")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seed", type=int, default=0, help="seed of the galaxy subsets")
    parser.add_argument("--weighting", choices=WEIGHTINGS, help="the trees' training prior (default: the run's)")
    parser.add_argument("--workdir", type=Path, help="where models and logs go (default: a temporary directory)")
    parser.add_argument("--out", type=Path, help="JSON file for the results")
    args = parser.parse_args(argv)
    config = run_config(args.run, args.configfile)
    res = args.run / "results"
    maps = sorted(str(p) for p in (res / ("observed" if config["observe"]["enabled"] else "maps")).glob("shard_*.h5"))
    stats = str(res / "dataset" / "normalisation.json")
    table = pd.read_csv(res / "dataset" / "split.csv")
    channels = config["conditions"]["channels"]
    device = resolve_device(config["device"])
    work = args.workdir or Path(tempfile.mkdtemp(prefix="learning_curve_"))
    test = DatasetFiles(maps, str(res / "dataset" / "split.csv"), stats, channels).load("test")
    boot = GalaxyBootstrap(test.table["galaxy_id"].to_numpy(), seed=args.seed)
    section = {name: config[name] for name in ("cvae", "flow", "recalibrate", "conditions")}
    rows = []
    for fraction, subset in nested_subsets(table, sorted(args.fractions), args.seed).items():
        out = work / f"train_{fraction:g}"
        out.mkdir(parents=True, exist_ok=True)
        split = out / "split.csv"
        subset.to_csv(split, index=False)
        data = {"maps": maps, "split": str(split), "stats": stats}
        train = subset[subset["subset"] == "train"]
        row = {"fraction": fraction, "train_galaxies": int(train["galaxy_id"].nunique()), "train_maps": len(train)}
        seconds = {}
        if "flow" in args.methods:
            common = {**data, "device": config["device"]}
            seconds["train_cvae"] = stage(
                "train_cvae", out / "train_cvae.log", {k: section[k] for k in ("cvae", "conditions")}, **common,
                checkpoint=str(out / "cvae_checkpoint.pt"), model=str(out / "cvae.pt"), history=str(out / "cvae.csv"),
            )  # fmt: skip
            seconds["train_flow"] = stage(
                "train_flow", out / "train_flow.log", {k: section[k] for k in ("flow", "conditions")}, **common,
                cvae=str(out / "cvae.pt"), checkpoint=str(out / "flow_checkpoint.pt"), model=str(out / "flow.pt"),
                history=str(out / "flow.csv"),
            )  # fmt: skip
            seconds["recalibrate"] = stage(
                "recalibrate", out / "recalibrate.log", {k: section[k] for k in ("recalibrate", "conditions")},
                **common, cvae=str(out / "cvae.pt"), flow=str(out / "flow.pt"), out=str(out / "noise_scale.json"),
            )  # fmt: skip
            start = time.perf_counter()
            median = flow_median(
                out, test, config["evaluate"]["n_samples"], config["evaluate"]["seed"],
                config["conditions"]["scalars"], device,
            )  # fmt: skip
            seconds["flow_sampling"] = time.perf_counter() - start
            row["flow"] = mae(median, test, boot)
        if "trees" in args.methods:
            weighting = args.weighting or config["plan"].get("weighting", "natural")
            row["weighting"] = weighting
            seconds["fit_baselines"] = stage(
                "fit_baselines", out / "fit_baselines.log", {"conditions": section["conditions"]}, **data,
                weighting=weighting, out=str(out / "baselines.joblib"),
            )  # fmt: skip
            baselines = load_baselines(out / "baselines.joblib")
            mask = test.mask[:, 0].numpy()
            physical = baselines.physical(test.conditions.numpy(), mask)
            median, _, _ = baselines.trees.predict(physical, mask, scalar_values(test.table, baselines.scalars))
            row["trees"] = mae(median, test, boot)
        row["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
        rows.append(row)
        print(json.dumps(row), flush=True)

    print(
        f"\ntest: {len(test)} maps of {boot.n_galaxies} galaxies; MAE per galaxy pixel [95% galaxy-bootstrap interval]"
    )
    print("| training galaxies | share | " + " | ".join(f"{m} MAE" for m in args.methods) + " |")
    print("|---|---|" + "---|" * len(args.methods))
    for row in rows:
        cells = [f"{row[m]['value']:.4f} [{row[m]['low']:.4f}, {row[m]['high']:.4f}]" for m in args.methods]
        print(f"| {row['train_galaxies']} | {row['fraction']:.0%} | " + " | ".join(cells) + " |")
    if args.out:
        result = {"run": str(args.run), "seed": args.seed, "test_maps": len(test), "test_galaxies": boot.n_galaxies}
        args.out.write_text(json.dumps({**result, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
