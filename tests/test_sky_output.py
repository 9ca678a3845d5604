"""The prediction writer (exsitu.sky.output): extensions, WCS, NaN outside the footprint,
provenance cards, the PNG panel, and atomicity (nothing left behind after a failure)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from fits_factories import write_generic

from exsitu.sky import PredictionMaps, read_observation, write_prediction

SHAPE = (12, 14)


@pytest.fixture
def galaxy(tmp_path):
    rng = np.random.default_rng(1)
    velocity = rng.normal(0, 50, SHAPE)
    mask = np.zeros(SHAPE, np.int16)
    mask[:, :3] = 1  # footprint: columns >= 3
    path = write_generic(
        tmp_path / "obs.fits", {"velocity": velocity, "dispersion": np.full(SHAPE, 90.0)},
        masks={"velocity": mask}, re_arcsec=3.0, redshift=0.03, psf_fwhm=2.5,
    )  # fmt: skip
    return read_observation(path, ["velocity", "dispersion"])


def samples_for(galaxy, k: int = 40) -> np.ndarray:
    return np.random.default_rng(2).uniform(0, 1, (k, *galaxy.shape)).astype(np.float32)


def test_summaries_from_samples(galaxy):
    samples = samples_for(galaxy)
    pred = PredictionMaps.from_samples(samples, galaxy.footprint)
    inside = galaxy.footprint
    assert pred.n_samples == 40 and pred.samples.shape == (40, *SHAPE)
    np.testing.assert_allclose(pred.mean[inside], samples.mean(axis=0)[inside], rtol=1e-5)
    np.testing.assert_allclose(pred.std[inside], samples.std(axis=0)[inside], rtol=1e-4)
    np.testing.assert_allclose(pred.p84[inside], np.percentile(samples, 84, axis=0)[inside], rtol=1e-5)
    assert (pred.p16[inside] <= pred.p50[inside]).all() and (pred.p50[inside] <= pred.p84[inside]).all()
    assert np.isnan(pred.mean[~inside]).all() and np.isnan(pred.samples[:, ~inside]).all()


def test_write_prediction_file_and_png(galaxy, tmp_path):
    pred = PredictionMaps.from_samples(samples_for(galaxy), galaxy.footprint)
    fits_path, png_path = write_prediction(tmp_path / "out" / "g.fits", pred, galaxy, model_dir="models/flow", seed=7)
    assert png_path == tmp_path / "out" / "g.png" and png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with fits.open(fits_path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "MEAN", "STD", "P16", "P50", "P84", "SAMPLES"]
        head = hdul[0].header
        assert (head["MODELDIR"], head["NSAMPLES"], head["SEED"]) == ("models/flow", 40, 7)
        assert head["QUANTITY"] == "ex-situ stellar mass fraction" and head["INPUT"] == str(galaxy.path)
        assert head["REARCSEC"] == 3.0 and head["CHANNELS"] == "velocity,dispersion"
        assert hdul["SAMPLES"].data.shape == (40, *SHAPE)
        for name in ("MEAN", "STD", "P16", "P50", "P84"):
            data = hdul[name].data
            assert data.shape == SHAPE
            assert np.isnan(data[:, :3]).all() and np.isfinite(data[:, 3:]).all()
            # the input's celestial WCS, unchanged
            wcs = WCS(hdul[name].header)
            assert list(wcs.wcs.ctype) == list(galaxy.wcs.wcs.ctype) == ["RA---TAN", "DEC--TAN"]
            corners = ([0, 13, 0, 13], [0, 0, 11, 11])
            np.testing.assert_allclose(
                wcs.pixel_to_world_values(*corners), galaxy.wcs.pixel_to_world_values(*corners), rtol=0, atol=1e-10
            )
        np.testing.assert_allclose(hdul["MEAN"].data[:, 3:], pred.mean[:, 3:])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["g.fits", "g.png"]


def test_write_without_samples_or_png(galaxy, tmp_path):
    pred = PredictionMaps.from_samples(samples_for(galaxy, k=5), galaxy.footprint, keep_samples=False)
    fits_path, png_path = write_prediction(tmp_path / "g.fits.gz", pred, galaxy, model_dir="m", seed=0, png=False)
    assert png_path is None and not (tmp_path / "g.png").exists()
    with fits.open(fits_path) as hdul:
        assert "SAMPLES" not in hdul and hdul[0].header["NSAMPLES"] == 5


def test_failure_leaves_nothing_and_keeps_old_output(galaxy, tmp_path):
    pred = PredictionMaps.from_samples(samples_for(galaxy), galaxy.footprint)
    pred.samples = pred.samples[:, :-1]  # wrong grid: fails while the file is being built
    with pytest.raises(ValueError, match="samples must be"):
        write_prediction(tmp_path / "g.fits", pred, galaxy, model_dir="m", seed=0)
    assert list(tmp_path.iterdir()) == [galaxy.path]

    (tmp_path / "old.fits").write_bytes(b"previous result")
    with pytest.raises(ValueError):
        write_prediction(tmp_path / "old.fits", pred, galaxy, model_dir="m", seed=0)
    assert (tmp_path / "old.fits").read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obs.fits", "old.fits"]


def test_prediction_on_another_grid_is_refused(galaxy, tmp_path):
    pred = PredictionMaps.from_samples(np.zeros((3, 5, 5)), np.ones((5, 5), bool))
    with pytest.raises(ValueError, match="differs from the observed grid"):
        write_prediction(tmp_path / "g.fits", pred, galaxy, model_dir="m", seed=0)
    assert list(tmp_path.iterdir()) == [galaxy.path]
