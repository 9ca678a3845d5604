"""Mock IFU observations of ideal maps (MaNGA preset): redshift, spaxels, PSF, noise, footprint.

Input is the map contract of :mod:`exsitu.projection` (conditions (L,5,P,P), exsitu (L,1,P,P),
mask (L,1,P,P) on a field of ``fov_kpc`` = fov_rhalf x the 3D half-mass radius); output is
the same contract on a field of fov_rhalf x the PROJECTED half-mass radius R_proj, the
observable analogue of the effective radius Re, centred on the galaxy. Per projection:

1. Redshift z uniform in ``redshift``, restricted (if ``ifu_arcsec`` is set) to the z at which
   the footprint spans between MaNGA's smallest and largest bundle: MaNGA selects each galaxy
   in a redshift window tied to its luminosity so that 1.5 Re fills one of its IFUs, which
   makes the angular size of every target similar (Wake et al. 2017, AJ 154, 86); kpc ->
   arcsec with the angular diameter distance of the TNG (Planck 2015) cosmology.
2. The mass-weighted MOMENTS (sum m, m v, m (v^2 + sigma^2), m age, m Z) are rebuilt from
   the ideal maps, regridded flux-conservingly onto 0.5" spaxels (:mod:`exsitu.regrid`) and
   convolved with a Gaussian PSF; only then are the ratios (mean velocity, dispersion, age,
   metallicity) formed. Convolving ratio maps would be wrong: a spaxel's spectrum is the
   light-weighted sum of the spectra of everything the PSF scatters into it, so the
   observed mean velocity is sum(PSF * m v) / sum(PSF * m), not PSF * (sum m v / sum m).
   Light is taken to follow mass (constant M/L), so mass weights stand in for light weights.
3. S/N per spaxel ``snr = snr_at_re * sqrt(Sigma / Sigma_e)``: Poisson (source-limited)
   noise with light tracing mass, so S/N grows as the square root of the surface brightness;
   Sigma is the PSF-convolved surface density and Sigma_e its mean at R = R_proj. The
   default ``snr_at_re`` = 20 is MaNGA-like: the Primary sample reaches a median r-band
   S/N ~ 73 per 1.4 A pixel in spectra stacked over 1-1.5 Re (Yan et al. 2016, AJ 152, 197),
   i.e. ~15 per spaxel at ~1.25 Re once the spatial covariance of the cubes is taken out
   (noise x 4.2 for large stacks, Law et al. 2016, AJ 152, 83), ~20 at 1 Re. Spaxels are
   treated as independent (the covariance within a PSF is ignored: optimistic).
4. Spaxels outside a hexagon of apothem ``coverage_re`` x R_proj (MaNGA Primary: 1.5 Re,
   Wake et al. 2017), without mass, or with S/N < ``min_snr`` are masked (the MaNGA DAP
   excludes spaxels with g-band S/N < 1 from binning, Westfall et al. 2019, AJ 158, 231).
   If ``voronoi_snr`` is set, the remaining spaxels are Voronoi-binned to that S/N
   (Cappellari & Copin 2003, MNRAS 342, 345; the DAP's VOR10/HYB10 use 10): a bin's spaxels
   all take the bin's moment ratios and the bin's noise.
5. Noise per spaxel (or bin) of S/N s, with the instrumental dispersion sigma_inst (MaNGA:
   ~72 km/s, Law et al. 2016) setting the effective line width sigma_eff = sqrt(sigma^2 +
   sigma_inst^2): velocity and dispersion errors sigma_eff / s each (for a Gaussian LOSVD
   the formal V and sigma errors are comparable, Cappellari & Emsellem 2004, PASP 116, 138);
   log surface density 1 / (s ln 10) dex (the flux error); age and metallicity
   ``age_error_dex`` and ``metallicity_error_dex`` x 10 / s dex (full-spectral-fitting
   errors of ~0.1-0.2 dex at S/N ~ 10-20, Cid Fernandes et al. 2014, A&A 561, A130).
   Ages are clipped to the age of the Universe at z (fits cannot return older templates).
6. Observed spaxel maps go to the P x P output grid as moments weighted by the observed
   mass (co-adding spectra), over valid spaxels only; an output pixel is valid if valid
   spaxels cover at least half of it and it holds intrinsic mass.

The target ex-situ map stays INTRINSIC (no PSF, no noise), regridded as moments
(sum m f_ex / sum m) onto the same output grid: we infer the galaxy's true accretion map;
the PSF and noise belong to the forward model of the observables only, so the network
learns to deconvolve rather than to predict a blurred target.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.ndimage import gaussian_filter

from exsitu.projection import Z_FLOOR
from exsitu.regrid import PixelGrid, covered_fraction, regrid_sum
from exsitu.settings import ObserveSettings
from exsitu.units import ZSUN, tng_cosmology

if TYPE_CHECKING:
    from astropy.cosmology import LambdaCDM

log = logging.getLogger(__name__)

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
PSF_TRUNCATE = 4.0  # Gaussian kernel radius in sigma; spaxel grids are padded by it so no flux leaves
HEX_COS30 = math.sqrt(3.0) / 2.0  # apothem / circumradius of a regular hexagon
REFERENCE_SNR = 10.0  # S/N at which age_error_dex and metallicity_error_dex are quoted
# vorbin's centroidal-tessellation pass only makes bins rounder and their S/N more uniform (it keeps
# the bin count); binning dominates observe's time and the pass adds ~15% to it
# (benchmarks/bench_observe.py), so it is off.
VORONOI_CVT = False
MIN_COVER = 0.5  # an output pixel is observed if valid spaxels cover at least this fraction of it


@dataclass
class Observation:
    """Observed maps of L projections (the map contract) and what each observation was.

    Attributes:
        conditions: (L, 5, P, P) float32, channels and units of :data:`exsitu.projection.CHANNELS`.
        exsitu: (L, 1, P, P) float32 intrinsic (unconvolved) mass-weighted ex-situ fraction.
        mask: (L, 1, P, P) bool: inside the footprint, above the S/N cut and holding mass.
        fov_kpc: (L,) output field of view [kpc] = fov_rhalf x R_proj.
        redshift: (L,) redshift of each observation.
        arcsec_per_kpc: (L,) proper angular scale at that redshift [arcsec/kpc].
        psf_fwhm_pix: (L,) PSF FWHM in output pixels.
        n_spaxels: (L,) valid spaxels (footprint & S/N & mass).
        n_bins: (L,) Voronoi bins over them (= n_spaxels without binning).
    """

    conditions: np.ndarray
    exsitu: np.ndarray
    mask: np.ndarray
    fov_kpc: np.ndarray
    redshift: np.ndarray
    arcsec_per_kpc: np.ndarray
    psf_fwhm_pix: np.ndarray
    n_spaxels: np.ndarray
    n_bins: np.ndarray


def arcsec_per_kpc(z: float | np.ndarray, cosmo: LambdaCDM | None = None) -> np.ndarray:
    """Proper angular scale [arcsec per kpc] at redshift ``z``: 206264.8 / angular diameter distance [kpc].

    ``cosmo``: None is TNG's (:func:`exsitu.units.tng_cosmology`, built on first use: astropy.cosmology takes ~1 s
    to import, which every projection job paid when the observation was off)."""
    return np.asarray(
        (tng_cosmology() if cosmo is None else cosmo).arcsec_per_kpc_proper(z).to_value("arcsec/kpc"), dtype=np.float64
    )


def draw_redshifts(
    rproj_kpc: np.ndarray, settings: ObserveSettings, rng: np.random.Generator, cosmo: LambdaCDM | None = None
) -> np.ndarray:
    """(L,) redshifts, uniform in ``settings.redshift`` where the footprint's angular size fits the IFUs.

    The footprint hexagon (apothem ``coverage_re`` x R_proj [kpc]) spans D = 2 coverage_re R_proj / cos 30
    kpc between vertices; D x arcsec_per_kpc(z) falls with z (for z < 1.6), so the z at which it lies
    within ``ifu_arcsec`` form an interval [z_a, z_b], clipped to the redshift range (a galaxy too big
    even at z_max sits at z_max, one too small even at z_min at z_min).
    """
    rproj = np.asarray(rproj_kpc, dtype=np.float64).reshape(-1)
    z_lo, z_hi = settings.redshift
    lo, hi = np.full(rproj.shape, z_lo), np.full(rproj.shape, z_hi)
    if settings.ifu_arcsec is not None and z_hi > z_lo:
        z_grid = np.linspace(z_lo, z_hi, 256)
        scale = arcsec_per_kpc(z_grid, cosmo)[::-1]  # increasing, for np.interp
        size_kpc = 2.0 * settings.coverage_re * rproj / HEX_COS30
        lo = np.interp(settings.ifu_arcsec[1] / size_kpc, scale, z_grid[::-1])  # clamps to the range
        hi = np.interp(settings.ifu_arcsec[0] / size_kpc, scale, z_grid[::-1])
    return rng.uniform(lo, hi)


def projected_half_mass_radius(pos: np.ndarray, mass: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """(L,) exact projected (circular) half-mass radius [kpc] of particles along each line of sight.

    Args:
        pos: (n, 3) positions [kpc] about the galaxy centre; mass: (n,) [Msun].
        rotations: (L, 3, 3), rows image x, image y, line of sight (as in :func:`exsitu.projection.project`).
    Returns the radius R in the image plane enclosing half the mass (interpolated between particles).
    Use all the galaxy's star particles (those behind the catalogue's 3D half-mass radius), so that
    R_proj <= r_3D holds particle by particle.
    """
    pos = np.asarray(pos, dtype=np.float64)
    m = np.asarray(mass, dtype=np.float64)
    rotations = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
    out = np.empty(rotations.shape[0])
    for k, rot in enumerate(rotations):
        xy = pos @ rot[:2].T
        r2 = np.einsum("ij,ij->i", xy, xy)
        order = np.argsort(r2)
        cum = np.cumsum(m[order])
        out[k] = math.sqrt(float(np.interp(0.5 * cum[-1], cum, r2[order])))
    return out


def moments_from_maps(conditions: np.ndarray, mask: np.ndarray, pixel_area: float | np.ndarray) -> np.ndarray:
    """Mass-weighted moments (..., 5, P, P) float64 from maps in the ideal contract.

    Channels: M [Msun per pixel] = 10^mass x pixel_area, M v, M (sigma^2 + v^2) [Msun km^2/s^2],
    M age [Msun Gyr], M Z [Msun, Z a mass fraction]; zero where ``mask`` is false.
    ``pixel_area`` [kpc^2]. Inverse: :func:`maps_from_moments`.
    """
    c = np.asarray(conditions, dtype=np.float64)
    good = np.asarray(mask, dtype=bool)[..., 0, :, :] if np.ndim(mask) == c.ndim else np.asarray(mask, bool)
    m = np.where(good, 10.0 ** c[..., 0, :, :] * pixel_area, 0.0)
    v, s, age, met = c[..., 1, :, :], c[..., 2, :, :], c[..., 3, :, :], c[..., 4, :, :]
    return np.stack([m, m * v, m * (s * s + v * v), m * age, m * ZSUN * 10.0**met], axis=-3)


def maps_from_moments(moments: np.ndarray, pixel_area: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps in the ideal contract from moments (as :func:`moments_from_maps` returns) and pixel area [kpc^2].

    Returns (conditions (..., 5, P, P) float64, good (..., P, P) bool where M > 0); channels are 0
    where not good. The metallicity floor is the projection's (:data:`exsitu.projection.Z_FLOOR`).
    """
    mom = np.asarray(moments, dtype=np.float64)
    m = mom[..., 0, :, :]
    good = m > 0
    safe = np.where(good, m, 1.0)
    v = mom[..., 1, :, :] / safe
    out = np.stack(
        [
            np.log10(safe / pixel_area),
            v,
            np.sqrt(np.maximum(mom[..., 2, :, :] / safe - v * v, 0.0)),
            mom[..., 3, :, :] / safe,
            np.log10(np.maximum(mom[..., 4, :, :] / safe, Z_FLOOR) / ZSUN),
        ],
        axis=-3,
    )
    return np.where(good[..., None, :, :], out, 0.0), good


def convolve_psf(image: np.ndarray, fwhm_pix: float) -> np.ndarray:
    """Convolve the last two axes with a normalised circular Gaussian of FWHM ``fwhm_pix`` pixels.

    Extensive maps only (moments, not their ratios). Flux that the kernel (truncated at
    :data:`PSF_TRUNCATE` sigma) carries past the edge is lost, so pad the grid by that much.
    """
    sigma = fwhm_pix / FWHM_PER_SIGMA
    axes_sigma = (0.0,) * (np.ndim(image) - 2) + (sigma, sigma)
    return gaussian_filter(np.asarray(image, dtype=np.float64), axes_sigma, mode="constant", truncate=PSF_TRUNCATE)


def hexagon_mask(x: np.ndarray, y: np.ndarray, apothem: float) -> np.ndarray:
    """True inside a regular hexagon centred on the origin with inscribed radius ``apothem``.

    Flat sides face +-y, vertices lie on the x axis at +-apothem / cos 30 (same length unit as x, y).
    """
    ax, ay = np.abs(x), np.abs(y)
    return (ay <= apothem) & (HEX_COS30 * ax + 0.5 * ay <= apothem)


def snr_map(surface_density: np.ndarray, sigma_e: float, snr_at_re: float) -> np.ndarray:
    """Per-spaxel S/N = snr_at_re x sqrt(Sigma / Sigma_e) (source-limited noise, light tracing mass).

    ``surface_density`` and ``sigma_e`` in the same unit (e.g. Msun/kpc^2); all zero if sigma_e <= 0.
    """
    sigma = np.maximum(np.asarray(surface_density, dtype=np.float64), 0.0)
    if not sigma_e > 0:
        return np.zeros_like(sigma)
    return snr_at_re * np.sqrt(sigma / sigma_e)


def voronoi_bins(x: np.ndarray, y: np.ndarray, signal: np.ndarray, snr: np.ndarray, target_snr: float) -> np.ndarray:
    """(n,) bin index in [0, n_bins) of spaxels at (x, y) [spaxel units] binned to ``target_snr``.

    Spaxels already at the target are bins of their own (as the accretion of Cappellari & Copin
    2003 makes them); the rest go to ``vorbin`` (signal, noise = signal / snr, so bins add noise
    in quadrature), or form one bin if together they cannot reach the target.
    """
    snr = np.asarray(snr, dtype=np.float64)
    weak = snr < target_snr
    index = np.full(snr.size, -1)
    n_strong = int(np.count_nonzero(~weak))
    index[~weak] = np.arange(n_strong)
    sig, noise = signal[weak], signal[weak] / snr[weak]
    if sig.size == 0:
        return index
    if sig.size < 3 or sig.sum() / math.sqrt(float(np.sum(noise**2))) < target_snr:
        index[weak] = n_strong
        return index
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*VorBin is deprecated")  # it still does the job
        from vorbin.voronoi_2d_binning import voronoi_2d_binning

        snr2 = snr[weak] ** 2  # our noise is Poisson-like, so a bin's S/N^2 is the sum of its spaxels'
        try:
            bin_num = voronoi_2d_binning(
                x[weak],
                y[weak],
                sig,
                noise,
                target_snr,
                pixelsize=1.0,
                plot=False,
                quiet=True,
                cvt=VORONOI_CVT,
                sn_func=lambda i, _s, _n: math.sqrt(snr2[i].sum()),
            )[0]
        except IndexError:
            # vorbin fails when no compact bin reaches 0.8 x target (scattered spaxels): one bin, as above.
            log.debug(
                "vorbin found no bin reaching %.3g x 0.8 among %d spaxels; binning them together", target_snr, sig.size
            )
            bin_num = np.zeros(sig.size, int)
    index[weak] = n_strong + np.unique(bin_num, return_inverse=True)[1]
    return index


def observe_maps(
    conditions: np.ndarray,
    exsitu: np.ndarray,
    mask: np.ndarray,
    fov_kpc: np.ndarray,
    rproj_kpc: np.ndarray,
    *,
    fov_rhalf: float,
    settings: ObserveSettings,
    rng: np.random.Generator,
    cosmo: LambdaCDM | None = None,
) -> Observation:
    """Observe L ideal projections (see the module docstring for the model); deterministic for ``rng``'s state.

    Args:
        conditions, exsitu, mask: (L, 5, P, P), (L, 1, P, P), (L, 1, P, P) ideal maps (the project stage's).
        fov_kpc: (L,) ideal field of view [kpc] (fov_rhalf x r_3D).
        rproj_kpc: (L,) projected half-mass radius [kpc] (:func:`projected_half_mass_radius`).
        fov_rhalf: the output field is fov_rhalf x R_proj on a side (the maps.fov_rhalf setting).
    Returns: :class:`Observation` on P x P grids of fov_rhalf x R_proj.
    """
    conditions = np.asarray(conditions)
    n, p = conditions.shape[0], conditions.shape[-1]
    fov = np.broadcast_to(np.asarray(fov_kpc, dtype=np.float64), (n,))
    rproj = np.broadcast_to(np.asarray(rproj_kpc, dtype=np.float64), (n,))
    if not (np.all(fov > 0) and np.all(rproj > 0)):
        raise ValueError("observe_maps needs positive fields of view and projected half-mass radii")
    cosmo = tng_cosmology() if cosmo is None else cosmo
    z = draw_redshifts(rproj, settings, rng, cosmo)
    scale = arcsec_per_kpc(z, cosmo).reshape(n)
    age_max = np.asarray(cosmo.age(z).to_value("Gyr")).reshape(n)
    obs = Observation(
        conditions=np.zeros((n, 5, p, p), np.float32),
        exsitu=np.zeros((n, 1, p, p), np.float32),
        mask=np.zeros((n, 1, p, p), bool),
        fov_kpc=(fov_rhalf * rproj).astype(np.float32),
        redshift=z,
        arcsec_per_kpc=scale,
        psf_fwhm_pix=settings.psf_fwhm_arcsec / scale / (fov_rhalf * rproj / p),
        n_spaxels=np.zeros(n, np.int64),
        n_bins=np.zeros(n, np.int64),
    )
    for k in range(n):
        ideal = PixelGrid.square(p, fov[k])
        out = PixelGrid.square(p, fov_rhalf * rproj[k])
        moments = moments_from_maps(conditions[k], mask[k], ideal.area)
        cond, valid, obs.n_spaxels[k], obs.n_bins[k] = _observe_one(
            moments, ideal, out, rproj[k], scale=scale[k], age_max=age_max[k], settings=settings, rng=rng
        )
        # Intrinsic truth on the output grid: regridded moments, never convolved.
        truth = regrid_sum(np.stack([moments[0], moments[0] * np.asarray(exsitu[k, 0], np.float64)]), ideal, out)
        good = valid & (truth[0] > 0)
        obs.conditions[k] = np.where(good, cond, 0.0)
        obs.exsitu[k, 0] = np.where(good, np.clip(truth[1] / np.where(good, truth[0], 1.0), 0.0, 1.0), 0.0)
        obs.mask[k, 0] = good
    return obs


def _observe_one(
    moments: np.ndarray,
    ideal: PixelGrid,
    out: PixelGrid,
    rproj: float,
    *,
    scale: float,
    age_max: float,
    settings: ObserveSettings,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """One projection's observed conditions (5, P, P) and validity (P, P) on ``out``, plus spaxel and bin counts."""
    spaxel_kpc = settings.spaxel_arcsec / scale
    fwhm_spx = settings.psf_fwhm_arcsec / settings.spaxel_arcsec
    # Spaxels cover the output field plus the PSF's reach, so light from just outside scatters in.
    pad = math.ceil(PSF_TRUNCATE * fwhm_spx / FWHM_PER_SIGMA)
    n_spx = math.ceil(out.shape[0] * out.pixel / spaxel_kpc) + 2 * pad
    spx = PixelGrid((n_spx, n_spx), spaxel_kpc)
    seen = convolve_psf(regrid_sum(moments, ideal, spx), fwhm_spx)
    sigma = seen[0] / spx.area
    x, y = spx.centers()
    r = np.hypot(x, y)
    ring = np.abs(r - rproj) <= max(0.5 * spaxel_kpc, 0.1 * rproj)
    snr = snr_map(sigma, float(sigma[ring].mean()), settings.snr_at_re)
    valid = hexagon_mask(x, y, settings.coverage_re * rproj) & (snr >= settings.min_snr) & (sigma > 0)
    if not valid.any():
        return np.zeros((5, *out.shape)), np.zeros(out.shape, bool), 0, 0
    iy, ix = np.nonzero(valid)
    if settings.voronoi_snr is None:
        bins = np.arange(iy.size)
    else:
        bins = voronoi_bins(ix.astype(float), iy.astype(float), sigma[valid], snr[valid], settings.voronoi_snr)
    n_bins = int(bins.max()) + 1
    # Bin moments and S/N (noise adds in quadrature: S/N^2 adds) -> bin ratios -> noise per bin.
    bin_mom = np.stack([np.bincount(bins, c[valid], n_bins) for c in seen])
    bin_snr = np.sqrt(np.bincount(bins, snr[valid] ** 2, n_bins))
    bin_area = np.bincount(bins, minlength=n_bins) * spx.area
    maps = maps_from_moments(bin_mom[:, None, :], bin_area[None, :])[0][:, 0, :]
    noisy = _add_noise(maps, bin_snr, age_max, settings, rng)
    # Back to spaxels, as moments weighted by the observed mass, then onto the output grid.
    obs_mom = np.zeros((5, *spx.shape))
    obs_mom[:, iy, ix] = moments_from_maps(noisy[:, None, bins], np.ones((1, iy.size), bool), spx.area)[:, 0, :]
    cover = covered_fraction(spx, out, valid)
    cond, good = maps_from_moments(regrid_sum(obs_mom, spx, out), np.maximum(cover, 1e-12) * out.area)
    return cond, good & (cover >= MIN_COVER), int(iy.size), n_bins


def _add_noise(
    maps: np.ndarray, snr: np.ndarray, age_max: float, settings: ObserveSettings, rng: np.random.Generator
) -> np.ndarray:
    """Noisy copy of (5, n) maps (ideal-contract channels) measured at S/N ``snr`` (n,); see the module docstring."""
    noise = rng.standard_normal(maps.shape)
    sigma_eff = np.hypot(maps[2], settings.sigma_inst_kms)
    rel = REFERENCE_SNR / snr
    out = maps.copy()
    out[0] += noise[0] / (snr * math.log(10.0))
    out[1] += noise[1] * sigma_eff / snr
    out[2] = np.maximum(maps[2] + noise[2] * sigma_eff / snr, 0.0)
    out[3] = np.minimum(maps[3] * 10.0 ** (noise[3] * settings.age_error_dex * rel), age_max)
    out[4] += noise[4] * settings.metallicity_error_dex * rel
    return out
