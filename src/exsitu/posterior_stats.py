"""Calibration and accuracy of one posterior of ex-situ maps, gathered chunk of test maps by chunk.

For every chunk of maps and their K posterior samples, :class:`PosteriorTally` keeps per-map
numbers only (never a (maps, samples, pixels) array beyond the chunk): the point estimates' tallies
(posterior median and mean, ``exsitu.point_metrics``), per-pixel coverage of the central credible
intervals (randomized PIT, ``exsitu.calibration``) in total and by stratum (posterior median,
radius; mass terciles from the per-map totals; truth for the figure), CRPS, TARP credibilities of
whole maps with both references, the functionals astronomers quote (``exsitu.functionals``:
integrated fractions, radial-profile rings, the gradient) and the mass shares at the clip, with their PIT
and posterior quantiles,
and both whole-map scores (energy and variogram, ``exsitu.recalibration.sample_scores``).
:meth:`PosteriorTally.summary` gives the posterior's block of metrics.json.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from exsitu.bootstrap import GalaxyBootstrap
from exsitu.calibration import (
    COVERAGE_LEVELS,
    TARP_REFERENCES,
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

#: Levels of the stratified coverage and of the functionals' coverage.
STRATUM_LEVELS: tuple[float, ...] = (0.68, 0.95)
#: Nominal levels of the coverage curve.
CURVE_LEVELS = np.linspace(0.0, 1.0, 51)


def _covered(pit: np.ndarray, levels: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """(..., L) bool: the truth inside the central interval of each level, from its PIT (...)."""
    return np.abs(pit - 0.5)[..., None] <= np.asarray(levels) / 2


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
        rng: np.random.Generator,
        true: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """One chunk: samples (n, K, P, P), truth and mass weights (n, P, P), galaxy pixels (n, P, P) bool;
        ``true``: the truth's functionals (``exsitu.functionals.map_functionals``; computed here when None), so a caller
        that tallies several posteriors of one chunk computes them once.

        Returns the chunk's per-map summaries for summaries.h5: ``median``, ``mean``, ``std`` maps
        (n, P, P) and ``<functional>`` posterior quantiles (n, 3: p16, p50, p84).
        """
        median, mean, std = np.median(samples, axis=1), samples.mean(axis=1), samples.std(axis=1)
        sampled = map_functionals(samples, weights[:, None], self.fov_rhalf, self.clip)  # name -> (n, K)
        if true is None:
            true = map_functionals(truth, weights, self.fov_rhalf, self.clip)  # name -> (n,)
        quantiles = {name: np.percentile(v, [16, 50, 84], axis=1).T for name, v in sampled.items()}
        self.median.add(median, truth, mask, {a: quantiles[f"integrated_{a}"][:, 1] for a in APERTURES})
        self.mean.add(mean, truth, mask, {a: sampled[f"integrated_{a}"].mean(axis=1) for a in APERTURES})

        pit = np.full(mask.shape, 0.5)
        pit[mask] = randomized_pit(np.moveaxis(samples, 1, -1)[mask], truth[mask], rng)
        covered = _covered(pit, COVERAGE_LEVELS) & mask[..., None]
        curve = _covered(pit, CURVE_LEVELS) & mask[..., None]
        strata = pixel_strata(median, truth, mask, self.fov_rhalf)
        self.strata = [definition for definition, _ in strata]
        hits, pixels = stratum_tallies(_covered(pit, STRATUM_LEVELS) & mask[..., None], [sel for _, sel in strata])
        pixel_crps = np.zeros(mask.shape)
        pixel_crps[mask] = crps(np.moveaxis(samples, 1, -1)[mask], truth[mask])
        scores = sample_scores(samples, truth, mask)
        tarp = {ref: tarp_credibility(samples, truth, rng, reference=ref, mask=mask) for ref in TARP_REFERENCES}
        functional_pit = {}
        for name in sampled:
            finite = np.isfinite(true[name])
            value = np.full(len(truth), np.nan)
            if finite.any():
                value[finite] = randomized_pit(sampled[name][finite], true[name][finite], rng)
            functional_pit[name] = value
        self._keep(
            hits=covered.sum(axis=(1, 2)),
            curve=curve.sum(axis=(1, 2)),
            stratum_hits=hits,
            stratum_pixels=pixels,
            crps=pixel_crps.sum(axis=(1, 2)),
            std=np.where(mask, std, 0.0).sum(axis=(1, 2)),
            energy=scores["energy"].numpy(),
            variogram=scores["variogram"].numpy(),
            **{f"tarp/{ref}": v for ref, v in tarp.items()},
            **{f"pit/{name}": v for name, v in functional_pit.items()},
            **{f"true/{name}": v for name, v in true.items()},
            **{f"quantiles/{name}": v for name, v in quantiles.items()},
        )
        return {"median": median, "mean": mean, "std": std, **quantiles}

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
        the energy and variogram scores per map.
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
        }
