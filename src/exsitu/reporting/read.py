"""Read everything the run report shows (step 1 of 3: read, compute, render).

:func:`read_report_inputs` opens the files the earlier stages wrote and returns one
:class:`ReportData`: the tables and JSON documents as they are, and from summaries.h5 only the
arrays the report draws (the example maps of Fig. 2, the integrated fractions, the radial
baseline), so the report's memory does not grow with the number of test maps. Every missing file,
key or dataset is one :class:`exsitu.io.InputError` naming the file and what is missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from exsitu.io import InputError, read_json, read_table

#: metrics.json keys the report reads (the schema is exsitu.evaluation's docstring).
METRICS_KEYS: tuple[str, ...] = (
    "n_maps", "n_pixels", "n_galaxies", "n_samples", "few_galaxies", "exact_01_share", "channels", "scalars",
    "training_prior", "weighting", "noise", "likelihood", "apertures", "modes", "baselines", "comparisons",
)  # fmt: skip
#: The per-stage columns of Snakemake's benchmark TSVs the report shows: wall time [s], peak RSS [MB].
BENCHMARK_COLUMNS: tuple[str, ...] = ("s", "max_rss")


@dataclass(frozen=True)
class ReportPaths:
    """The files a report summarises (all written by earlier stages)."""

    catalog: str | os.PathLike  # results/catalog/subhalos.csv
    plan: str | os.PathLike  # results/catalog/projections.csv
    split: str | os.PathLike  # results/dataset/split.csv
    histories: tuple[str | os.PathLike, ...]  # results/models/<model>_history.csv
    metrics: str | os.PathLike  # results/evaluation/metrics.json
    summaries: str | os.PathLike  # results/evaluation/summaries.h5
    benchmarks: str | os.PathLike  # directory of Snakemake benchmark TSVs
    relations: str | os.PathLike  # results/catalog/relations.json
    model_card: str | os.PathLike  # results/models/model.json
    noise_scale: str | os.PathLike  # results/models/noise_scale.json (with the residual diagnostics)


@dataclass(frozen=True)
class Examples:
    """The example test maps of Fig. 2 (E maps, P x P pixels)."""

    conditions: np.ndarray  # (E, C, P, P) condition maps in physical units
    channels: tuple[str, ...]  # their names (C,)
    truth: np.ndarray  # (E, P, P) true ex-situ fraction
    mask: np.ndarray  # (E, P, P) bool galaxy pixels
    medians: dict[str, np.ndarray]  # posterior -> (E, P, P) per-pixel posterior median
    flow_std: np.ndarray  # (E, P, P) the flow posterior's per-pixel standard deviation
    labels: tuple[str, ...]  # one per map: subhalo, snapshot, total ex-situ fraction


@dataclass(frozen=True)
class IntegratedFractions:
    """Mass-weighted ex-situ fractions per test map (N,) and aperture (names of metrics.json ``apertures``)."""

    true: dict[str, np.ndarray]  # aperture -> (N,) of the true map
    flow: dict[str, np.ndarray]  # aperture -> (N, 3) the flow posterior's 16th, 50th, 84th percentiles
    trees: dict[str, np.ndarray]  # aperture -> (N,) the tree baseline's prediction
    log_mstar: np.ndarray  # (N,) log10 M* [Msun] of each map's galaxy


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows, as read from the run's files (see :class:`ReportPaths`)."""

    catalog: pd.DataFrame
    plan: pd.DataFrame
    split: pd.DataFrame
    histories: dict[str, pd.DataFrame]  # model name (cvae, flow, baseline) -> training history
    metrics: dict[str, Any]  # metrics.json
    relations: dict[str, Any]  # relations.json
    card: dict[str, Any]  # model.json
    noise_scale: dict[str, Any]  # noise_scale.json; ``diagnostics``: exsitu.residual_diagnostics
    benchmarks: pd.DataFrame  # one row per job: stage, s [wall seconds], max_rss [MB]
    examples: Examples
    integrated: IntegratedFractions
    radial: tuple[np.ndarray, np.ndarray]  # the radial baseline: r / r_half and its ex-situ fraction


def read_benchmarks(directory: str | os.PathLike) -> pd.DataFrame:
    """One row per job of Snakemake's benchmark TSVs under ``directory``: ``stage`` (the TSV's first path part,
    so shards of a stage share it), ``s`` (wall time [s]) and ``max_rss`` (peak resident memory [MB], NaN where
    not measured), oldest first (stages then appear in the order the run finished them)."""
    rows = []
    for tsv in sorted(Path(directory).glob("**/*.tsv"), key=lambda path: path.stat().st_mtime):
        frame = pd.read_csv(tsv, sep="\t")
        if "s" not in frame.columns or frame.empty:
            continue
        last = frame.iloc[-1]
        rows.append(
            {
                "stage": tsv.relative_to(directory).parts[0].removesuffix(".tsv"),
                "s": float(last["s"]),
                "max_rss": pd.to_numeric(last.get("max_rss"), errors="coerce"),
            }
        )
    return pd.DataFrame(rows, columns=["stage", *BENCHMARK_COLUMNS])


def _dataset(h5: h5py.File, name: str, index: np.ndarray | None = None) -> np.ndarray:
    """Dataset ``name`` of summaries.h5 (rows ``index``, increasing, or all), or an InputError naming it."""
    if name not in h5:
        raise InputError(f"{h5.filename}: dataset '{name}' is missing (rerun the evaluate stage)")
    return h5[name][()] if index is None else h5[name][index]


def _examples(h5: h5py.File, posteriors: list[str]) -> Examples:
    index = _dataset(h5, "examples/index")
    conditions = _dataset(h5, "examples/conditions")
    labels = [
        f"subhalo {s} snap {n}, total {t:.2f}"
        for s, n, t in zip(*(_dataset(h5, key, index) for key in ("subhalo_id", "snapshot", "exsitu_total")))
    ]
    return Examples(
        conditions=conditions,
        channels=tuple(str(c) for c in h5["examples/conditions"].attrs.get("channels", ())),
        truth=_dataset(h5, "truth", index).astype(np.float32),
        mask=_dataset(h5, "mask", index).astype(bool),
        medians={name: _dataset(h5, f"median/{name}", index).astype(np.float32) for name in posteriors},
        flow_std=_dataset(h5, "std/flow", index).astype(np.float32),
        labels=tuple(labels),
    )


def _integrated(h5: h5py.File, apertures: list[str]) -> IntegratedFractions:
    return IntegratedFractions(
        true={a: _dataset(h5, f"integrated/true/{a}") for a in apertures},
        flow={a: _dataset(h5, f"functionals/flow/integrated_{a}") for a in apertures},
        trees={a: _dataset(h5, f"integrated/trees/{a}") for a in apertures},
        log_mstar=_dataset(h5, "log_mstar"),
    )


def read_report_inputs(paths: ReportPaths) -> ReportData:
    """Read the run's files (see :class:`ReportPaths`) into one :class:`ReportData`."""
    catalog = read_table(paths.catalog, ["snapshot", "subhalo_id", "galaxy_id"], "catalogue")
    plan = read_table(paths.plan, ["snapshot", "subhalo_id", "galaxy_id", "exsitu_total"], "projection plan")
    split = read_table(paths.split, ["subset", "galaxy_id"], "split")
    histories = {
        Path(p).stem.removesuffix("_history"): read_table(p, ["epoch", "train_loss", "val_loss"], "training history")
        for p in paths.histories
    }
    if "cvae" not in histories:
        raise InputError(f"--histories {[str(p) for p in paths.histories]}: the cVAE's cvae_history.csv is missing")
    metrics = read_json(paths.metrics, METRICS_KEYS, "metrics file")
    relations = read_json(paths.relations, ("mass_edges", "tng100", "within_galaxy", "bands"), "relations file")
    card = read_json(paths.model_card, ("channels", "npix", "fov_rhalf", "radius"), "model card")
    noise_scale = read_json(paths.noise_scale, ("noise", "noise_scale", "diagnostics"), "noise-scale file")
    try:
        summaries = h5py.File(paths.summaries, "r")
    except (FileNotFoundError, OSError) as err:
        raise InputError(f"{paths.summaries}: not a readable HDF5 file ({err})") from None
    with summaries:
        examples = _examples(summaries, list(metrics["modes"]))
        integrated = _integrated(summaries, list(metrics["apertures"]))
        radial = (_dataset(summaries, "radial/radius"), _dataset(summaries, "radial/exsitu"))
    return ReportData(
        catalog=catalog,
        plan=plan,
        split=split,
        histories=histories,
        metrics=metrics,
        relations=relations,
        card=card,
        noise_scale=noise_scale,
        benchmarks=read_benchmarks(paths.benchmarks),
        examples=examples,
        integrated=integrated,
        radial=radial,
    )
