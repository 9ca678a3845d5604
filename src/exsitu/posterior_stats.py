"""Calibration and accuracy of one posterior of ex-situ maps, gathered chunk of test maps by chunk.

For every chunk of maps and their K posterior samples, :class:`PosteriorTally` keeps per-map
numbers only (never a (maps, samples, pixels) array beyond the chunk): the point estimates' tallies
(posterior median and mean, ``exsitu.point_metrics``), per-pixel coverage of the central credible
intervals (randomized PIT, ``exsitu.calibration``) in total and by stratum (posterior median,
radius; mass terciles from the per-map totals; truth for the figure), CRPS, TARP credibilities of
whole maps with both references, the functionals astronomers quote (``exsitu.functionals``:
integrated fractions, radial-profile rings, the gradient) and the mass shares at the clip, with their PIT
and posterior quantiles,
both whole-map scores (energy and variogram, ``exsitu.recalibration.sample_scores``), and the squared error
against the samples' spread by spatial scale (``exsitu.spatial_scales``).
:meth:`PosteriorTally.summary` gives the posterior's block of metrics.json.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from exsitu.bootstrap import GalaxyBootstrap
from exsitu.calibration import (
    COVERAGE_LEVELS,
    TARP_REFERENCES,
    RandomSource,
    coverage_by_stratum,
    crps,
    functional_coverage_by_median,
    mass_terciles,
    pixel_strata,
    randomized_pit,
    rank_histogram,
    stratum_tallies,
    tarp_credibility,
    tarp_summary,
)
from exsitu.functionals import APERTURES, functional_names, map_functionals
from exsitu.point_metrics import PointTally
from exsitu.recalibration import sample_scores
from exsitu.sample import maps_in_budget
from exsitu.spatial_scales import SCALES, SMOOTHING_PIXELS, error_and_spread

#: Levels of the stratified coverage and of the functionals' coverage.
STRATUM_LEVELS: tuple[float, ...] = (0.68, 0.95)
#: Float elements of samples per slice of a chunk for the statistics that are computed map by map (median, CRPS,
#: functionals, scores): on the 2-core development CPU they took 0.9 s for 163 test maps x 100 samples in slices of
#: 16 MB against 1.8 s at once (67 MB; the slices stay in the caches).
SLICE_ELEMENTS = 2**22
#: Nominal levels of the coverage curve.
CURVE_LEVELS = np.linspace(0.0, 1.0, 51)


def _covered(pit: np.ndarray, levels: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """(..., L) bool: the truth inside the central interval of each level, from its PIT (...)."""
    return np.abs(pit - 0.5)[..., None] <= np.asarray(levels) / 2


def _joined(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-slice dicts of arrays as one dict, each array concatenated along the maps."""
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


class PosteriorTally:
    """Per-map statistics of one posterior's samples (see the module doc)."""

    def __init__(self, fov_rhalf: float, clip: float) -> None:
        """``fov_rhalf``: the maps' side [half-mass radii]; ``clip``: the likelihood's ``cvae.logit_eps``."""
        self.fov_rhalf, self.clip = fov_rhalf, clip
        self.median, self.mean = PointTally(), PointTally()
        self.columns: dict[str, list[np.ndarray]] = {}
        self.strata = None

    def _keep(self, **values: np.ndarray) -> None:
        for name, value in values.items():
            self.columns.setdefault(name, []).append(np.asarray(value))

    def add(
        self,
        samples: np.ndarray,
        truth: np.ndarray,
        mask: np.ndarray,
        weights: np.ndarray,
        rng: RandomSource,
        true: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """One chunk: samples (n, K, P, P), truth and mass weights (n, P, P), galaxy pixels (n, P, P) bool;
        ``true``: the truth's functionals (``exsitu.functionals.map_functionals``; computed here when None), so a caller
        that tallies several posteriors of one chunk computes them once. ``rng``: the random numbers of the PITs and
        TARP references, one generator or one per map (``exsitu.calibration.map_generators``: then a map's numbers do
        not depend on the chunk it is in).

        Returns the chunk's per-map summaries for summaries.h5: ``median``, ``mean``, ``std`` maps
        (n, P, P) and ``<functional>`` posterior quantiles (n, 3: p16, p50, p84).
        """
        stats, sampled = self._per_map_statistics(samples, truth, mask, weights)  # sampled: name -> (n, K)
        median, mean, std = stats["median"], stats["mean"], stats["std"]
        if true is None:
            true = map_functionals(truth, weights, self.fov_rhalf, self.clip)  # name -> (n,)
        quantiles = {name: np.percentile(v, [16, 50, 84], axis=1).T for name, v in sampled.items()}
        self.median.add(median, truth, mask, {a: quantiles[f"integrated_{a}"][:, 1] for a in APERTURES})
        self.mean.add(mean, truth, mask, {a: sampled[f"integrated_{a}"].mean(axis=1) for a in APERTURES})

        pit = np.where(mask, randomized_pit(np.moveaxis(samples, 1, -1), truth, rng), 0.5)
        covered = _covered(pit, COVERAGE_LEVELS) & mask[..., None]
        curve = _covered(pit, CURVE_LEVELS) & mask[..., None]
        strata = pixel_strata(median, truth, mask, self.fov_rhalf)
        self.strata = [definition for definition, _ in strata]
        hits, pixels = stratum_tallies(_covered(pit, STRATUM_LEVELS) & mask[..., None], [sel for _, sel in strata])
        tarp = {ref: tarp_credibility(samples, truth, rng, reference=ref, mask=mask) for ref in TARP_REFERENCES}
        # Every map draws its number, defined or not, so its draws do not depend on the other maps.
        functional_pit = {
            name: np.where(np.isfinite(true[name]), randomized_pit(v, true[name], rng), np.nan)
            for name, v in sampled.items()
        }
        self._keep(
            hits=covered.sum(axis=(1, 2)),
            curve=curve.sum(axis=(1, 2)),
            stratum_hits=hits,
            stratum_pixels=pixels,
            crps=stats["crps"].sum(axis=(1, 2)),
            std=np.where(mask, std, 0.0).sum(axis=(1, 2)),
            energy=stats["energy"],
            variogram=stats["variogram"],
            **{name: stats[name] for scale in SCALES for name in (f"error/{scale}", f"spread/{scale}")},
            **{f"tarp/{ref}": v for ref, v in tarp.items()},
            **{f"pit/{name}": v for name, v in functional_pit.items()},
            **{f"true/{name}": v for name, v in true.items()},
            **{f"quantiles/{name}": v for name, v in quantiles.items()},
        )
        return {"median": median, "mean": mean, "std": std, **quantiles}

    def _per_map_statistics(
        self, samples: np.ndarray, truth: np.ndarray, mask: np.ndarray, weights: np.ndarray
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The statistics of ``add`` that need no random numbers, slice of :data:`SLICE_ELEMENTS` by slice: the
        ``median``, ``mean`` and ``std`` maps and the ``crps`` per pixel (n, P, P) (0 off the galaxy) and the
        ``energy`` and ``variogram`` scores and the ``error/<scale>`` and ``spread/<scale>`` sums of
        ``exsitu.spatial_scales`` (n,); then every functional of every sample (name -> (n, K)).

        Each is computed map by map, so the slices give the values of the whole chunk bit for bit.
        """
        step = maps_in_budget(samples.shape[1], samples.shape[-1], SLICE_ELEMENTS)
        stats: list[dict[str, np.ndarray]] = []
        sampled: list[dict[str, np.ndarray]] = []
        for start in range(0, len(samples), step):
            rows = slice(start, start + step)
            s, t, m = samples[rows], truth[rows], mask[rows]
            pixel_crps = np.zeros(m.shape)
            pixel_crps[m] = crps(np.moveaxis(s, 1, -1)[m], t[m])
            scores = sample_scores(s, t, m)
            stats.append(
                {"median": np.median(s, axis=1), "mean": s.mean(axis=1), "std": s.std(axis=1), "crps": pixel_crps,
                 "energy": scores["energy"].numpy(), "variogram": scores["variogram"].numpy(),
                 **error_and_spread(s, t, m)}
            )  # fmt: skip
            sampled.append(map_functionals(s, weights[rows][:, None], self.fov_rhalf, self.clip))
        return _joined(stats), _joined(sampled)

    def per_map(self, name: str) -> np.ndarray:
        """A per-map column over every chunk so far (e.g. ``tarp/uniform``, ``pit/integrated_fov``)."""
        return np.concatenate(self.columns[name])

    def summary(self, boot: GalaxyBootstrap, log_mstar: np.ndarray) -> dict[str, Any]:
        """The posterior's block of metrics.json (every galaxy once, 95% galaxy-bootstrap intervals).

        ``point``: the point-estimate blocks of the posterior ``median`` (the MAE-optimal summary) and
        ``mean``; ``mean_std`` per galaxy pixel; ``coverage`` (per-pixel, pooled) at ``COVERAGE_LEVELS`` and
        the ``coverage_curve``; ``strata`` (by posterior median, radius, mass tercile, and by truth, which
        a calibrated posterior bends: it under-covers rare true values); ``crps``; ``tarp`` (uniform and
        held-out posterior references); ``functionals``: per functional the coverage at 68% and 95%, the
        rank histogram (with a KS test of uniformity) and the number of maps it is defined on, and for the
        integrated fractions ``by_median``, the coverage in bins of their posterior median with the shares of
        truths below and above the 68% interval (``exsitu.calibration.functional_coverage_by_median``); ``scores``:
        the energy and variogram scores per map; ``spread_by_scale``: per spatial scale the squared error over the
        samples' spread (sums over galaxy pixels and maps), 1 for a calibrated posterior (``exsitu.spatial_scales``).
        """
        pixels = self.median.per_map()["pixels"]
        true_integrated = {a: self.per_map(f"true/integrated_{a}") for a in APERTURES}
        hits = self.per_map("hits")
        coverage = boot.ratio(hits, pixels)
        curve = boot.ratio(self.per_map("curve"), pixels)
        strata_hits, strata_pixels = self.per_map("stratum_hits"), self.per_map("stratum_pixels")
        strata = coverage_by_stratum(self.strata, strata_hits, strata_pixels, boot, STRATUM_LEVELS)
        level_index = [COVERAGE_LEVELS.index(level) for level in STRATUM_LEVELS]
        for definition, maps in mass_terciles(log_mstar, boot):
            chosen = maps[:, None]
            strata += coverage_by_stratum(
                [definition], (hits[:, level_index] * chosen)[:, None], (pixels * maps)[:, None], boot, STRATUM_LEVELS
            )
        functionals = {}
        for name in functional_names():
            pit = self.per_map(f"pit/{name}")
            defined = np.isfinite(pit)
            inside = _covered(np.where(defined, pit, 0.5), STRATUM_LEVELS) & defined[:, None]
            entry: dict[str, Any] = {"n_maps": int(defined.sum())}
            if defined.sum() >= 2:
                sub = GalaxyBootstrap(boot.galaxies[boot.galaxy_index[defined]], n_replicates=len(boot.counts))
                entry["coverage"] = {
                    f"{level:g}": e.to_dict()
                    for level, e in zip(STRATUM_LEVELS, sub.mean(inside[defined].astype(np.float64)))
                }
                entry["rank_histogram"] = rank_histogram(pit[defined], sub).to_dict()
                if name.startswith("integrated_"):
                    median = self.per_map(f"quantiles/{name}")[defined, 1]
                    entry["by_median"] = functional_coverage_by_median(pit[defined], median, sub, STRATUM_LEVELS)
            functionals[name] = entry
        return {
            "point": {
                "median": self.median.summary(boot, true_integrated, log_mstar),
                "mean": self.mean.summary(boot, true_integrated, log_mstar),
            },
            "mean_std": boot.ratio(self.per_map("std"), pixels).to_dict(),
            "coverage": {f"{level:g}": e.to_dict() for level, e in zip(COVERAGE_LEVELS, coverage)},
            "coverage_curve": {"nominal": CURVE_LEVELS.tolist(), "observed": [e.value for e in curve]},
            "strata": [s.to_dict() for s in strata],
            "crps": boot.ratio(self.per_map("crps"), pixels).to_dict(),
            "tarp": {ref: tarp_summary(self.per_map(f"tarp/{ref}"), boot).to_dict() for ref in TARP_REFERENCES},
            "functionals": functionals,
            "scores": {name: boot.mean(self.per_map(name)).to_dict() for name in ("energy", "variogram")},
            "spread_by_scale": {
                "smoothing_pixels": SMOOTHING_PIXELS,
                **{
                    scale: boot.ratio(self.per_map(f"error/{scale}"), self.per_map(f"spread/{scale}")).to_dict()
                    for scale in SCALES
                },
            },
        }
