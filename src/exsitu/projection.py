"""Project star particles onto P x P maps along many lines of sight (the map kernel).

One pass of ``np.bincount`` per summed quantity (m, m v, m v^2, m age, m Z, m f_ex) over
the flattened pixel index; particles outside the field of view go to one overflow bin
instead of being filtered out, which saves copying every weight array per projection.
Particles are processed in cache-sized blocks, all lines of sight per block, so the
inputs are read from memory once (the kernel is memory bound; this halves its time on a
busy machine and keeps its peak memory to tens of MB).
With ``smoothing="adaptive"`` every particle is first given a kernel class from its local 3D
density (:mod:`exsitu.smoothing`); particles with a point kernel are binned as above, those of
each Gaussian class on a grid padded by the class kernel's radius, which is then convolved
with the class kernel (FFT), cropped and added.
Use it on your own particles too: positions in kpc about the galaxy centre, velocities in
km/s relative to the galaxy, masses in Msun, ages in Gyr, metallicities as mass fractions.
"""

from __future__ import annotations

import numpy as np

from exsitu.contracts import N_CHANNELS
from exsitu.io import InputError
from exsitu.smoothing import adaptive_kernels, padded_grid, spread
from exsitu.units import ZSUN

# Pixels whose mean metallicity is below this (mass fraction) are clipped before the log.
Z_FLOOR = 1e-6
BLOCK = 32768  # particles per block (at least 4 P^2, so the per-block map sums stay cheap)
SMOOTHING = ("adaptive", "none")
# Smoothed pixels are galaxy pixels above this fraction of the mean particle mass: below the
# kernel taps except the far corners of the widest kernels, and far above FFT round-off
# (~1e-16 of the peak pixel), whose noise would otherwise dominate the faintest pixels' means.
MASK_FLOOR = 1e-6


def project(
    pos: np.ndarray,
    vel: np.ndarray,
    mass: np.ndarray,
    age: np.ndarray,
    metallicity: np.ndarray,
    exsitu_flag: np.ndarray,
    rotations: np.ndarray,
    fov_kpc: float,
    npix: int,
    *,
    smoothing: str = "adaptive",
    neighbours: int = 32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mass-weighted maps of one galaxy along ``L`` lines of sight.

    Args:
        pos: (n, 3) positions [kpc] relative to the galaxy centre.
        vel: (n, 3) velocities [km/s] relative to the galaxy's bulk velocity.
        mass: (n,) current masses [Msun], the weight of every map.
        age: (n,) stellar ages [Gyr]. metallicity: (n,) mass fractions.
        exsitu_flag: (n,) bool or 0/1, the particle is ex-situ.
        rotations: (L, 3, 3); rows are the image x axis, image y axis and line of sight.
        fov_kpc: full field of view; map[iy, ix] covers x in
            [-fov/2 + ix*fov/P, -fov/2 + (ix+1)*fov/P), same for y. No depth cut.
        npix: P.
        smoothing: "none": each particle counts in the pixel it falls in (binned averages).
            "adaptive": each particle is spread by a Gaussian kernel whose width follows its
            k-NN radius in 3D (:mod:`exsitu.smoothing`); every summed moment (m, m v, m v^2,
            m age, m Z, m f_ex) uses the same per-particle kernel, so the ratios stay
            mass-weighted means. Mass conservation: each kernel sums to exactly 1 over the
            padded grid, so the mass map holds every particle's mass except the part of its
            kernel outside the field and the mass of pixels below the mask floor (at most
            P^2 * MASK_FLOOR mean particle masses). A galaxy whose kernels all end inside the
            field keeps its total mass to that (< 1e-6 relative for >= P^2 particles).
        neighbours: k of the k-NN radius (adaptive only); a galaxy with fewer particles gets
            the minimum kernel and a warning.

    Returns:
        conditions (L, C, P, P) float32 with channels ``contracts.CHANNELS`` in ``contracts.UNITS``
        (velocity is the mean LOS velocity, dispersion its mass-weighted spread);
        exsitu (L, 1, P, P) float32 mass-weighted ex-situ fraction in [0, 1];
        mask (L, 1, P, P) bool, the galaxy pixels: with "none" pixels holding at least one
        particle, with "adaptive" pixels whose smoothed mass exceeds :data:`MASK_FLOOR` times
        the mean particle mass (the kernels' footprints, less the far corners of the widest). Outside the mask every
        channel is 0.

    Raises:
        InputError: unknown ``smoothing`` or a ``neighbours`` that is not a positive integer.
    """
    if smoothing not in SMOOTHING:
        raise InputError(f"maps.smoothing must be one of {', '.join(SMOOTHING)}, got {smoothing!r}")
    if isinstance(neighbours, bool) or not isinstance(neighbours, (int, np.integer)) or neighbours < 1:
        raise InputError(f"maps.kernel_neighbours must be a positive integer, got {neighbours!r}")
    rotations = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
    n_los, p = rotations.shape[0], int(npix)
    pos = np.asarray(pos, dtype=np.float64)
    vel = np.asarray(vel, dtype=np.float64)
    m = np.asarray(mass, dtype=np.float64)
    quantities = (
        m,
        np.asarray(age, dtype=np.float64),
        np.asarray(metallicity, dtype=np.float64),
        np.asarray(exsitu_flag, dtype=np.float64),
    )
    scale = p / float(fov_kpc)
    if smoothing == "none":
        sums = _moment_sums(pos, vel, quantities, rotations, scale=scale, offset=0.5 * p, grid=p)[:, :, : p * p]
        return _maps(sums, float(fov_kpc), p, 0.0)
    kernels = adaptive_kernels(pos, fov_kpc, p, int(neighbours))
    point = kernels.cls == 0
    # Point-kernel particles: the plain binning over all particles, the others weighted 0
    # (every moment is a multiple of m), which is cheaper than copying the point subset.
    sums = _moment_sums(
        pos, vel, (np.where(point, m, 0.0), *quantities[1:]), rotations, scale=scale, offset=0.5 * p, grid=p
    )
    sums = sums[:, :, : p * p]
    for c, sigma in enumerate(kernels.sigma_px, start=1):
        members = np.flatnonzero(kernels.cls == c)
        if not members.size:
            continue
        pad, g = padded_grid(sigma, p)
        sub = tuple(q[members] for q in quantities)
        raw = _moment_sums(pos[members], vel[members], sub, rotations, scale=scale, offset=0.5 * p + pad, grid=g)[
            :, :, : g * g
        ]
        sums += spread(raw.reshape(n_los * 6, g, g), sigma, p).reshape(n_los, 6, p * p)
    return _maps(sums, float(fov_kpc), p, MASK_FLOOR * float(m.mean()) if m.size else 0.0)


def _moment_sums(
    pos: np.ndarray,
    vel: np.ndarray,
    quantities: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    rotations: np.ndarray,
    *,
    scale: float,
    offset: float,
    grid: int,
) -> np.ndarray:
    """(L, 6, grid^2 + 1) sums of m, m age, m Z, m f_ex, m v, m v^2 per cell of a grid x grid map.

    A particle's cell is floor(u*scale + offset) for image coordinates u [kpc]; the last bin
    collects the particles outside the grid.
    """
    m, age, metallicity, exsitu_flag = quantities
    n_los = rotations.shape[0]
    overflow = grid * grid
    # Blocks of particles small enough that every per-block array stays in the CPU cache
    # while all lines of sight are binned: memory traffic is one read of the inputs.
    block = max(BLOCK, 4 * overflow)
    sums = np.zeros((n_los, 6, overflow + 1))
    for lo in range(0, m.size, block):
        sl = slice(lo, lo + block)
        idx, vlos = _binning(pos[sl], vel[sl], rotations, scale, offset, grid)
        mb = m[sl]
        weights = [mb, mb * age[sl], mb * metallicity[sl], mb * exsitu_flag[sl]]
        for k in range(n_los):
            mv = mb * vlos[k]
            for j, w in enumerate((*weights, mv, mv * vlos[k])):
                sums[k, j] += np.bincount(idx[k], w, minlength=overflow + 1)
    return sums


def _maps(sums: np.ndarray, fov_kpc: float, p: int, floor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Conditions, ex-situ fraction and mask from (L, 6, P*P) moment sums; galaxy pixels have mass > floor."""
    n_los = sums.shape[0]
    conditions = np.zeros((n_los, N_CHANNELS, p, p), np.float32)
    exsitu = np.zeros((n_los, 1, p, p), np.float32)
    mask = np.zeros((n_los, 1, p, p), bool)
    for k in range(n_los):
        sm, sma, smz, smx, smv, smv2 = sums[k]
        good = sm > floor
        msum = sm[good]
        vmean = smv[good] / msum
        out = np.zeros((N_CHANNELS + 1, p * p))  # the channels in contract order, then the ex-situ fraction
        out[0, good] = np.log10(msum / (fov_kpc / p) ** 2)
        out[1, good] = vmean
        out[2, good] = np.sqrt(np.maximum(smv2[good] / msum - vmean**2, 0.0))
        out[3, good] = sma[good] / msum
        out[4, good] = np.log10(np.maximum(smz[good] / msum, Z_FLOOR) / ZSUN)
        out[N_CHANNELS, good] = np.clip(smx[good] / msum, 0.0, 1.0)
        conditions[k] = out[:N_CHANNELS].reshape(N_CHANNELS, p, p)
        exsitu[k, 0] = out[N_CHANNELS].reshape(p, p)
        mask[k, 0] = good.reshape(p, p)
    return conditions, exsitu, mask


def _binning(
    pos: np.ndarray,
    vel: np.ndarray,
    rotations: np.ndarray,
    scale: float,
    offset: float,
    grid: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per line of sight: flattened cell index (grid^2 for outside) and LOS velocity, each (L, n)."""
    n_los = rotations.shape[0]
    u = np.concatenate([rotations[:, 0], rotations[:, 1]]) @ pos.T  # (2L, n): image x rows, then y rows
    u *= scale
    u += offset
    np.floor(u, out=u)
    cell = u.astype(np.int32)
    # Negative cells wrap to huge unsigned values: one comparison tests both ends.
    outside = cell.view(np.uint32) >= grid
    idx = cell[n_los:] * grid + cell[:n_los]
    idx[outside[:n_los] | outside[n_los:]] = grid * grid
    return idx, rotations[:, 2] @ vel.T
