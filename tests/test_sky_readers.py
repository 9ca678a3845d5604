"""Readers of observed galaxies (exsitu.sky): MaNGA DAP MAPS + Pipe3D and the generic layout,
on files written in those layouts by tests/fits_factories.py; and one clear error per bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from astropy.cosmology import FlatLambdaCDM
from astropy.io import fits
from astropy.wcs import WCS
from fits_factories import DONOTUSE, UNRELIABLE, write_generic, write_manga_maps, write_pipe3d

from exsitu.io import InputError
from exsitu.sky import read_observation
from exsitu.sky.observed import kpc_per_arcsec

SHAPE = (25, 27)
CENTRE = (13.3, 11.6)  # x (column), y (row)
RE = 4.0  # arcsec
SCINPVEL = 9000.0  # km/s
VOFFSET = 37.0  # systemic velocity relative to SCINPVEL [km/s]
SIGMACORR = 40.0


def mock_galaxy() -> dict[str, np.ndarray]:
    """Model-unit maps of a rotating disc on SHAPE, odd in x about the centre."""
    rows, cols = np.indices(SHAPE, dtype=np.float64)
    x, y = (cols - CENTRE[0]) * 0.5, (rows - CENTRE[1]) * 0.5
    r = np.hypot(x, y)
    return {
        "mass": 9.0 - r / RE,
        "velocity": 150 * np.tanh(x / 3.0),
        "dispersion": 80 + 60 * np.exp(-r / RE),
        "age": 3.0 + 6.0 * np.exp(-r / RE),
        "metallicity": 0.1 - 0.05 * r / RE,
    }


def manga_file(tmp_path: Path, name: str = "maps.fits", **overrides) -> Path:
    truth = mock_galaxy()
    kwargs = {
        "stellar_vel": truth["velocity"] + VOFFSET,
        "stellar_sigma": np.sqrt(truth["dispersion"] ** 2 + SIGMACORR**2),
        "sigmacorr": SIGMACORR,
        "centre_xy": CENTRE,
        "re_arcsec": RE,
        "scinpvel": SCINPVEL,
    }
    kwargs.update(overrides)
    return write_manga_maps(tmp_path / name, **kwargs)


def pipe3d_file(tmp_path: Path, footprint: np.ndarray | None = None, **overrides) -> Path:
    truth = mock_galaxy()
    kwargs = {
        "mass": truth["mass"],
        "age_gyr": truth["age"],
        "metallicity": truth["metallicity"],
        "footprint": np.ones(SHAPE, bool) if footprint is None else footprint,
        "redshift": SCINPVEL / 299792.458,
    }
    kwargs.update(overrides)
    return write_pipe3d(tmp_path / "p3d.fits", **kwargs)


# ----------------------------------------------------------------------------- MaNGA DAP


def test_manga_kinematics_round_trip(tmp_path):
    path = manga_file(tmp_path, primary_cards={"RFWHM": 2.7})
    galaxy = read_observation(path, ["velocity", "dispersion"])
    truth = mock_galaxy()
    assert list(galaxy.maps) == ["velocity", "dispersion"]
    assert galaxy.source == "manga-dap" and galaxy.shape == SHAPE
    # systemic velocity from a plane fitted inside 0.5 Re at the centre (a median is 7.5 km/s off here)
    assert galaxy.vsys_kms == pytest.approx(VOFFSET, abs=1.0)
    np.testing.assert_allclose(galaxy.maps["velocity"].value, truth["velocity"] + VOFFSET - galaxy.vsys_kms, atol=1e-3)
    # SIGMACORR (first channel) removed in quadrature
    np.testing.assert_allclose(galaxy.maps["dispersion"].value, truth["dispersion"], rtol=1e-5)
    assert galaxy.re_arcsec == pytest.approx(RE, rel=1e-5)
    assert galaxy.redshift == pytest.approx(SCINPVEL / 299792.458)
    assert galaxy.spaxel_arcsec == pytest.approx(0.5)
    assert galaxy.psf_fwhm_arcsec == 2.7
    np.testing.assert_allclose(galaxy.centre_xy, CENTRE, atol=1e-4)
    assert galaxy.wcs.naxis == 2 and galaxy.footprint.all()


def test_manga_given_vsys_is_subtracted_exactly(tmp_path):
    galaxy = read_observation(manga_file(tmp_path), ["velocity"], vsys=10.0)
    np.testing.assert_allclose(galaxy.maps["velocity"].value, mock_galaxy()["velocity"] + VOFFSET - 10.0, atol=1e-3)
    assert galaxy.vsys_kms == 10.0


def test_manga_dispersion_ivar_and_imaginary_correction(tmp_path):
    truth = mock_galaxy()
    raw = np.sqrt(truth["dispersion"] ** 2 + SIGMACORR**2)
    raw[3, 4] = 30.0  # below the 40 km/s correction: no real astrophysical dispersion
    ivar = np.full(SHAPE, 0.01)
    galaxy = read_observation(manga_file(tmp_path, stellar_sigma=raw, sigma_ivar=ivar), ["dispersion"])
    disp = galaxy.maps["dispersion"]
    assert not disp.valid[3, 4] and np.isnan(disp.value[3, 4]) and disp.ivar[3, 4] == 0
    # ivar_astro = ivar * sigma_astro^2 / sigma_raw^2
    np.testing.assert_allclose(disp.ivar[10, 10], 0.01 * truth["dispersion"][10, 10] ** 2 / raw[10, 10] ** 2, rtol=1e-5)


def test_manga_donotuse_and_ivar_masking(tmp_path):
    mask = np.zeros(SHAPE, np.int32)
    mask[0, :] = DONOTUSE
    mask[1, :] = UNRELIABLE  # informational, not DONOTUSE: still used
    ivar = np.ones(SHAPE)
    ivar[2, :5] = 0.0
    galaxy = read_observation(manga_file(tmp_path, vel_mask=mask, vel_ivar=ivar), ["velocity"])
    valid = galaxy.maps["velocity"].valid
    assert not valid[0].any() and valid[1].all() and not valid[2, :5].any() and valid[2, 5:].all()
    assert np.isnan(galaxy.maps["velocity"].value[0]).all()


def test_manga_dr15_layout_and_gzip(tmp_path):
    path = manga_file(tmp_path, name="manga-1-2-MAPS-HYB10-GAU-MILESHC.fits.gz", release="DR15")
    galaxy = read_observation(path, ["dispersion"])
    np.testing.assert_allclose(galaxy.maps["dispersion"].value, mock_galaxy()["dispersion"], rtol=1e-5)
    assert galaxy.psf_fwhm_arcsec == pytest.approx(2.54)  # no RFWHM/GFWHM: MaNGA median
    assert galaxy.re_arcsec == pytest.approx(RE, rel=1e-5)


def test_manga_with_pipe3d_round_trip(tmp_path):
    footprint = np.ones(SHAPE, bool)
    footprint[:, :2] = False
    galaxy = read_observation(
        manga_file(tmp_path), ["mass", "velocity", "dispersion", "age", "metallicity"], pipe3d_file(tmp_path, footprint)
    )
    truth = mock_galaxy()
    assert list(galaxy.maps) == ["mass", "velocity", "dispersion", "age", "metallicity"]
    for name in ("mass", "age", "metallicity"):
        got = galaxy.maps[name]
        assert (got.valid == footprint).all()
        np.testing.assert_allclose(got.value[footprint], truth[name][footprint], rtol=1e-5, atol=1e-5)
    assert (galaxy.footprint == footprint).all()
    # errors of 0.1 dex -> ivar in model units
    np.testing.assert_allclose(galaxy.maps["mass"].ivar[5, 5], 100.0, rtol=1e-4)
    age = truth["age"][5, 5]
    np.testing.assert_allclose(galaxy.maps["age"].ivar[5, 5], 1 / (age * np.log(10) * 0.1) ** 2, rtol=1e-4)


def test_pipe3d_mass_conversion_uses_spaxel_area_in_kpc():
    # log10(Msun/spaxel) -> log10(Msun/kpc^2): 0.5" at z = 0.03 is ~0.31 kpc, so ~ +1.0 dex
    assert 0.5 * kpc_per_arcsec(0.03) == pytest.approx(0.31, abs=0.01)


# ----------------------------------------------------------------------------- generic


def test_generic_round_trip_with_mask_and_ivar(tmp_path):
    truth = mock_galaxy()
    mask = np.zeros(SHAPE, np.int16)
    mask[:3] = 1
    ivar = np.full(SHAPE, 4.0)
    ivar[5, 5] = 0
    path = write_generic(
        tmp_path / "g.fits", truth, re_arcsec=RE, redshift=0.02, psf_fwhm=1.0,
        ivars={"velocity": ivar}, masks={"mass": mask}, centre_xy=(10.0, 12.0), pixscale_key=True, spaxel_arcsec=0.2,
    )  # fmt: skip
    galaxy = read_observation(path, ["mass", "velocity"])
    assert galaxy.source == "generic" and list(galaxy.maps) == ["mass", "velocity"]
    np.testing.assert_allclose(galaxy.maps["mass"].value[3:], truth["mass"][3:], rtol=1e-6)
    assert not galaxy.maps["mass"].valid[:3].any() and galaxy.maps["mass"].ivar is None
    assert not galaxy.maps["velocity"].valid[5, 5] and galaxy.maps["velocity"].ivar[6, 6] == 4.0
    assert (galaxy.re_arcsec, galaxy.redshift, galaxy.psf_fwhm_arcsec, galaxy.spaxel_arcsec) == (RE, 0.02, 1.0, 0.2)
    assert galaxy.centre_xy == (10.0, 12.0) and galaxy.vsys_kms is None


def test_generic_defaults_spaxel_from_wcs_and_centre_of_grid(tmp_path):
    path = write_generic(tmp_path / "g.fits", {"age": mock_galaxy()["age"]}, re_arcsec=RE, redshift=0.02, psf_fwhm=1)
    galaxy = read_observation(path, ["age"])
    assert galaxy.spaxel_arcsec == pytest.approx(0.5)
    assert galaxy.centre_xy == ((SHAPE[1] - 1) / 2, (SHAPE[0] - 1) / 2)


# ----------------------------------------------------------------------------- bad input


def error_of(path, channels=("velocity",), **kwargs) -> str:
    with pytest.raises(InputError) as info:
        read_observation(path, list(channels), **kwargs)
    return str(info.value)


def test_missing_channel_names_the_pipe3d_file(tmp_path):
    message = error_of(manga_file(tmp_path), ["mass", "velocity"])
    assert "mass needs a Pipe3D file (--pipe3d or --pipe3d-dir)" in message


def test_missing_generic_channel_names_the_extension(tmp_path):
    path = write_generic(
        tmp_path / "g.fits", {"velocity": mock_galaxy()["velocity"]}, re_arcsec=RE, redshift=0.02, psf_fwhm=1
    )
    assert "channel 'dispersion' needs image extension DISPERSION" in error_of(path, ["velocity", "dispersion"])


def test_missing_dap_extension_is_named(tmp_path):
    path = manga_file(tmp_path)
    with fits.open(path) as hdul:
        del hdul["STELLAR_SIGMACORR"]
        hdul.writeto(tmp_path / "nocorr.fits")
    assert "extension STELLAR_SIGMACORR is missing" in error_of(tmp_path / "nocorr.fits", ["dispersion"])


def test_unknown_channel(tmp_path):
    assert "unknown channel" in error_of(manga_file(tmp_path), ["colour"])


def test_not_fits_and_missing_file(tmp_path):
    (tmp_path / "notes.fits").write_text("these are not FITS bytes\n" * 50)
    assert "not a FITS file" in error_of(tmp_path / "notes.fits")
    assert "file not found" in error_of(tmp_path / "absent.fits")


def test_truncated_fits_and_truncated_gzip(tmp_path):
    path = manga_file(tmp_path)
    raw = path.read_bytes()
    (tmp_path / "cut.fits").write_bytes(raw[: len(raw) - 5000])
    assert "truncated" in error_of(tmp_path / "cut.fits")
    packed = gzip.compress(raw)
    (tmp_path / "cut.fits.gz").write_bytes(packed[: len(packed) // 2])
    assert "truncated" in error_of(tmp_path / "cut.fits.gz")


def test_wrong_shape_extension(tmp_path):
    message = error_of(manga_file(tmp_path, vel_ivar=np.ones((SHAPE[0], SHAPE[1] - 1))))
    assert "STELLAR_VEL_IVAR has shape" in message


def test_pipe3d_on_another_grid(tmp_path):
    small = {k: v[:-1] for k, v in mock_galaxy().items()}
    p3d = pipe3d_file(tmp_path, footprint=np.ones(small["mass"].shape, bool), mass=small["mass"],
                      age_gyr=small["age"], metallicity=small["metallicity"])  # fmt: skip
    assert "extension SSP (per plane) has shape" in error_of(manga_file(tmp_path), ["mass"], pipe3d_path=p3d)


def test_pipe3d_plane_names_are_checked(tmp_path):
    p3d = pipe3d_file(tmp_path)
    with fits.open(p3d, mode="update") as hdul:
        hdul["SSP"].header["DESC_19"] = "velocity dispersion"
    assert "SSP plane 19" in error_of(manga_file(tmp_path), ["mass"], pipe3d_path=p3d)


def test_all_spaxels_masked(tmp_path):
    message = error_of(manga_file(tmp_path, vel_mask=np.full(SHAPE, DONOTUSE)))
    assert "no valid spaxel" in message


def test_nan_inside_the_mask(tmp_path):
    vel = mock_galaxy()["velocity"] + VOFFSET
    vel[4, 4] = np.nan
    assert "NaN/inf" in error_of(manga_file(tmp_path, stellar_vel=vel))
    # ...but NaN where DONOTUSE is set is simply masked
    mask = np.zeros(SHAPE, np.int32)
    mask[4, 4] = DONOTUSE
    galaxy = read_observation(manga_file(tmp_path, stellar_vel=vel, vel_mask=mask), ["velocity"])
    assert not galaxy.maps["velocity"].valid[4, 4]


def test_nan_in_sigmacorr_inside_the_mask(tmp_path):
    corr = np.full(SHAPE, SIGMACORR)
    corr[6, 6] = np.inf
    assert "NaN/inf" in error_of(manga_file(tmp_path, sigmacorr=corr), ["dispersion"])


def test_re_missing_or_not_positive(tmp_path):
    # R/Re = 0 everywhere: the DAP file gives no usable Re
    path = manga_file(tmp_path)
    with fits.open(path, mode="update") as hdul:
        hdul["SPX_ELLCOO"].data[1] = 0.0
    assert "effective radius missing" in error_of(path)
    assert "must be positive" in error_of(path, re_arcsec=-1.0)
    generic = write_generic(
        tmp_path / "g.fits", {"age": mock_galaxy()["age"]}, re_arcsec=None, redshift=0.02, psf_fwhm=1
    )
    assert "effective radius (PRIMARY key REARCSEC [arcsec]) is missing" in error_of(generic, ["age"])
    generic = write_generic(
        tmp_path / "g.fits", {"age": mock_galaxy()["age"]}, re_arcsec=0.0, redshift=0.02, psf_fwhm=1
    )
    assert "must be positive" in error_of(generic, ["age"])


def test_neither_layout(tmp_path):
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((3, 3)), name="FLUX")]).writeto(tmp_path / "cube.fits")
    assert "neither a MaNGA DAP MAPS file" in error_of(tmp_path / "cube.fits")


def test_pipe3d_flipped_grid_is_caught_by_its_wcs(tmp_path):
    p3d = pipe3d_file(tmp_path)
    with fits.open(p3d, mode="update") as hdul:
        hdul["SSP"].header["CDELT2"] *= -1  # same shape, Dec running the other way
    assert "the SSP grid is not the MAPS grid" in error_of(manga_file(tmp_path), ["mass"], pipe3d_path=p3d)


def test_pipe3d_without_plane_names_reads_by_position(tmp_path):
    p3d = pipe3d_file(tmp_path, describe=False)
    galaxy = read_observation(manga_file(tmp_path), ["metallicity"], pipe3d_path=p3d)
    np.testing.assert_allclose(galaxy.maps["metallicity"].value, mock_galaxy()["metallicity"], atol=1e-5)


# ----------------------------------------------------------------------------- galaxy scalars and names


def test_manga_scalars_name_flux_and_centre(tmp_path):
    path = manga_file(tmp_path, name="manga-8485-1901-MAPS-HYB10-MILESHC-MASTARSSP.fits.gz")
    galaxy = read_observation(path, ["velocity"])
    z = SCINPVEL / 299792.458
    # Re in proper kpc at z in TNG's Planck 2015 cosmology, computed here independently
    kpc = RE * FlatLambdaCDM(H0=67.74, Om0=0.3089).kpc_proper_per_arcmin(z).value / 60
    assert galaxy.name == "8485-1901" and galaxy.scalars["redshift"] == pytest.approx(z, rel=1e-12)
    assert galaxy.scalars["log_rhalf_kpc"] == pytest.approx(np.log10(kpc), abs=2e-3)
    assert "log_mstar" not in galaxy.scalars
    # SPX_MFLUX (exp(-R/Re) in the factory) is the light weight
    rows, cols = np.indices(SHAPE)
    np.testing.assert_allclose(galaxy.flux, np.exp(-np.hypot(cols - CENTRE[0], rows - CENTRE[1]) * 0.5 / RE), rtol=1e-6)
    wcs = WCS(fits.getheader(path, "SPX_ELLCOO")).celestial
    np.testing.assert_allclose(galaxy.centre_radec(), wcs.pixel_to_world_values(*CENTRE), atol=1e-9)
    # a header PLATEIFU wins over the file name; given values override the file's
    named = manga_file(tmp_path, primary_cards={"PLATEIFU": "7443-12703"})
    galaxy = read_observation(named, ["velocity"], redshift=0.05, log_mstar=10.8)
    assert galaxy.name == "7443-12703" and galaxy.redshift == 0.05 and galaxy.scalars["log_mstar"] == 10.8


def test_generic_scalars_name_and_given_redshift(tmp_path):
    maps = {"age": mock_galaxy()["age"]}
    path = write_generic(
        tmp_path / "g.fits", maps, re_arcsec=3.0, redshift=None, psf_fwhm=1.5,
        primary_cards={"LOGMSTAR": 10.4, "PLATEIFU": "1-2"},
    )  # fmt: skip
    assert "redshift (PRIMARY key Z) is missing" in error_of(path, ["age"])
    galaxy = read_observation(path, ["age"], redshift=0.02)
    assert galaxy.scalars["log_mstar"] == 10.4 and galaxy.name == "1-2" and galaxy.flux is None
    assert galaxy.scalars["log_rhalf_kpc"] == pytest.approx(np.log10(3.0 * kpc_per_arcsec(0.02)))
    unnamed = write_generic(tmp_path / "other.fits.gz", maps, re_arcsec=3.0, redshift=0.02, psf_fwhm=1.5)
    assert read_observation(unnamed, ["age"]).name == "other"


def test_pipe3d_found_by_plateifu_in_a_directory(tmp_path):
    maps = manga_file(tmp_path, name="manga-8485-1901-MAPS-HYB10-MILESHC-MASTARSSP.fits")
    assert "no Pipe3D file for 8485-1901" in error_of(maps, ["mass"], pipe3d_dir=tmp_path)
    (tmp_path / "8485").mkdir()
    pipe3d_file(tmp_path).rename(tmp_path / "8485" / "manga-8485-1901.Pipe3D.cube.fits")  # the SAS layout
    galaxy = read_observation(maps, ["mass"], pipe3d_dir=tmp_path)
    assert galaxy.pipe3d_path == tmp_path / "8485" / "manga-8485-1901.Pipe3D.cube.fits"
    np.testing.assert_allclose(galaxy.maps["mass"].value, mock_galaxy()["mass"], atol=1e-4)
