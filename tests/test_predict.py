"""exsitu predict on files written in the MaNGA DAP and generic layouts from mock galaxies, with
models trained by the real pipeline: the posterior equals the evaluate stage's for the same maps
and seed, a kinematics-only MaNGA-preset model with galaxy scalars reads a DAP MAPS file alone (the
scalars from its header, or from flags), and bad input fails with one message and no output."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from astropy import units as u
from astropy.cosmology import FlatLambdaCDM
from astropy.io import fits
from fits_factories import write_generic, write_manga_maps

from exsitu.dataset import DatasetFiles
from exsitu.io import InputError
from exsitu.modelcard import MODEL_CARD, load_model_dir
from exsitu.predict import model_grid, model_scalars, predict_maps
from exsitu.scalars import scalar_values
from exsitu.sky import read_observation

CPU = torch.device("cpu")
SPAXEL = 0.5  # arcsec
#: TNG's cosmology (Planck 2015, as the TNG100 headers give it), written here independently of exsitu.units.
TNG = FlatLambdaCDM(H0=67.74, Om0=0.3089)
C_KMS = 299792.458


def first_test_maps(
    workdir: Path, n: int, channels: tuple[str, ...], scalars: tuple[str, ...] = ()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``n`` test maps of a finished run, physical units: conditions (n, C, P, P), mask (n, P, P) and
    the galaxy ``scalars`` (n, S) of the split table."""
    res = workdir / "results"
    shards = sorted(str(p) for p in (res / ("observed" if (res / "observed").exists() else "maps")).glob("*.h5"))
    stats_json = res / "dataset" / "normalisation.json"
    stats = json.loads(stats_json.read_text())
    keep = [stats["channels"].index(c) for c in channels]
    mean = np.asarray(stats["mean"], np.float32)[keep][:, None, None]
    std = np.asarray(stats["std"], np.float32)[keep][:, None, None]
    test = DatasetFiles(shards, str(res / "dataset" / "split.csv"), str(stats_json), channels).load("test")
    assert len(test) >= n
    mask = test.mask[:n, 0].numpy()
    conditions = np.where(mask[:, None], test.conditions[:n].numpy() * std + mean, 0.0).astype(np.float32)
    return conditions, mask, scalar_values(test.table.iloc[:n], scalars)


def aligned_re(model, npix: int) -> float:
    """Re [arcsec] that puts the model's P x P grid exactly on a P x P grid of 0.5" spaxels."""
    radius = npix * SPAXEL / model.card.fov_rhalf
    return radius / (4.0 / 3.0) if model.card.radius == "3d" else radius


def test_predict_reproduces_the_evaluate_posterior(tiny_observed_run: Path) -> None:
    model = load_model_dir(tiny_observed_run / "results" / "models", CPU)
    assert model.card.channels == ("velocity", "dispersion") and model.card.radius == "projected"
    assert model.card.scalars == ("log_rhalf_kpc", "redshift") and model.card.observe["psf_fwhm_arcsec"] == 2.5
    with h5py.File(tiny_observed_run / "results" / "evaluation" / "samples.h5") as h5:
        saved = h5["samples"][()].astype(np.float32)
    # Evaluate samples test map i with seed evaluate.seed + i (0 + i in the tiny config): predict with
    # that seed on that map alone gives the same samples.
    n = min(len(saved), 4)
    conditions, mask, scalars = first_test_maps(tiny_observed_run, n, model.card.channels, model.card.scalars)
    k = saved.shape[1]  # min(n_saved_samples, n_samples): the tiny config draws n_samples = 10
    for i in range(n):
        one = slice(i, i + 1)
        samples = predict_maps(model, conditions[one], mask[one], 10, seed=i, scalars=scalars[one])
        np.testing.assert_allclose(samples[0, :k], saved[i], atol=2e-3)  # samples.h5 stores float16
    with pytest.raises(InputError, match=r"the model needs scalars \['log_rhalf_kpc', 'redshift'\]"):
        predict_maps(model, conditions, mask, 10, seed=0)


def test_kinematics_only_model_predicts_from_a_dap_maps_file(tiny_observed_run: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_observed_run / "results" / "models", model_dir)  # the directory travels whole
    model = load_model_dir(model_dir, CPU)
    conditions, mask, _ = first_test_maps(tiny_observed_run, 1, model.card.channels)
    p = model.card.npix
    velocity, dispersion = conditions[0]
    corr = 20.0  # instrumental dispersion [km/s] the DAP file carries
    donotuse = np.where(mask[0], 0, 1 << 30).astype(np.int32)
    re_arcsec, scinpvel = aligned_re(model, p), 12000.0
    dap = write_manga_maps(
        tmp_path / "manga-8485-1901-MAPS-HYB10-MILESHC-MASTARSSP.fits.gz",
        stellar_vel=np.where(mask[0], velocity, 0.0), stellar_sigma=np.sqrt(dispersion**2 + corr**2),
        sigmacorr=corr, centre_xy=(p / 2 - 0.5, p / 2 - 0.5), re_arcsec=re_arcsec, scinpvel=scinpvel,
        vel_mask=donotuse, sigma_mask=donotuse,
    )  # fmt: skip
    # The scalars come from the DAP file alone: z = SCINPVEL / c, Re [kpc] from SPX_ELLCOO at that z.
    z = scinpvel / C_KMS
    re_kpc = (re_arcsec * u.arcsec / TNG.arcsec_per_kpc_proper(z)).to_value(u.kpc)
    scalars = model_scalars(model, read_observation(dap, model.card.channels))
    np.testing.assert_allclose(scalars, [np.log10(re_kpc), z], rtol=1e-6)
    out = tmp_path / "out" / "prediction.fits"
    proc = subprocess.run(
        ["exsitu", "predict", "--model-dir", str(model_dir), "--out", str(out), "--samples", "8", "--vsys", "0",
         "--seed", "3", str(dap)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    expected = predict_maps(model, conditions, mask, 8, seed=3, scalars=scalars[None])[0]
    with fits.open(out) as hdul:
        assert [h.name for h in hdul[1:]] == ["MEAN", "STD", "P16", "P50", "P84", "SAMPLES"]
        mean, samples = hdul["MEAN"].data, hdul["SAMPLES"].data
        assert hdul["MEAN"].header["CTYPE1"].startswith("RA") and hdul["SAMPLES"].data.shape == (8, p, p)
    assert np.all(np.isnan(mean[~mask[0]])) and np.all(np.isfinite(mean[mask[0]]))
    np.testing.assert_allclose(samples[:, mask[0]], expected[:, mask[0]], atol=1e-3)
    np.testing.assert_allclose(mean[mask[0]], expected.mean(axis=0)[mask[0]], atol=1e-3)
    assert out.with_suffix(".png").exists()
    # Flags override the header's scalars, and the scalars reach the network: another redshift, other samples.
    flagged = tmp_path / "out" / "flagged.fits"
    proc = subprocess.run(
        ["exsitu", "predict", "--model-dir", str(model_dir), "--out", str(flagged), "--samples", "8", "--vsys", "0",
         "--seed", "3", "--redshift", "0.1", str(dap)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    re_kpc = (re_arcsec * u.arcsec / TNG.arcsec_per_kpc_proper(0.1)).to_value(u.kpc)
    expected = predict_maps(model, conditions, mask, 8, seed=3, scalars=[[np.log10(re_kpc), 0.1]])[0]
    with fits.open(flagged) as hdul:
        np.testing.assert_allclose(hdul["SAMPLES"].data[:, mask[0]], expected[:, mask[0]], atol=1e-3)
        assert np.abs(hdul["SAMPLES"].data - samples)[:, mask[0]].max() > 1e-3


def test_model_needs_channels_the_input_lacks(tiny_run: Path, tmp_path: Path) -> None:
    """The all-channel model of the ideal run asks for mass, age and metallicity a DAP file lacks."""
    p = 16
    velocity = np.zeros((p, p))
    dap = write_manga_maps(
        tmp_path / "dap.fits", stellar_vel=velocity, stellar_sigma=velocity + 100.0, sigmacorr=10.0,
        centre_xy=(p / 2 - 0.5, p / 2 - 0.5), re_arcsec=2.0, scinpvel=3000.0,
    )  # fmt: skip
    out = tmp_path / "x.fits"
    proc = subprocess.run(
        ["exsitu", "predict", "--model-dir", str(tiny_run / "results" / "models"), "--out", str(out), str(dap)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 1 and "mass" in proc.stderr and "Pipe3D" in proc.stderr
    assert not out.exists()


def test_generic_layout_and_bad_model_directories(tiny_run: Path, tmp_path: Path) -> None:
    model = load_model_dir(tiny_run / "results" / "models", CPU)
    conditions, mask, _ = first_test_maps(tiny_run, 1, model.card.channels)
    p = model.card.npix
    maps = {c: np.where(mask[0], conditions[0, i], np.nan) for i, c in enumerate(model.card.channels)}
    path = write_generic(
        tmp_path / "ifu.fits", maps, re_arcsec=aligned_re(model, p), redshift=0.03, psf_fwhm=2.5,
        masks={c: (~mask[0]).astype(np.int32) for c in maps}, centre_xy=(p / 2 - 0.5, p / 2 - 0.5),
    )  # fmt: skip
    galaxy = read_observation(path, model.card.channels)
    grid = model_grid(model, galaxy)
    assert grid.pixel == pytest.approx(SPAXEL) and grid.shape == (p, p)

    def run(model_dir: Path, *extra: str) -> subprocess.CompletedProcess:
        out = tmp_path / "o.fits"
        proc = subprocess.run(
            ["exsitu", "predict", "--model-dir", str(model_dir), "--out", str(out), *extra, str(path)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert proc.returncode != 0 and not out.exists(), proc.stderr
        return proc

    assert "no model.json" in run(tmp_path).stderr
    foreign = tmp_path / "foreign"
    shutil.copytree(tiny_run / "results" / "models", foreign)
    card = json.loads((foreign / MODEL_CARD).read_text())
    old = {key: value for key, value in card.items() if key not in ("noise", "scalars")}
    (foreign / MODEL_CARD).write_text(json.dumps({**old, "format": "exsitu-model-dir-1", "noise_scale": 0.4}))
    assert "model directory format 'exsitu-model-dir-1'" in run(foreign).stderr
    (foreign / MODEL_CARD).write_text(json.dumps({**card, "noise": {"lowrank": 0.4}}))
    assert "'noise' must hold 'lowrank' and 'diagonal'" in run(foreign).stderr
    (foreign / MODEL_CARD).write_text(json.dumps({**card, "files": {"cvae": "flow.pt", "flow": "cvae.pt"}}))
    assert f"{foreign / 'flow.pt'}: holds a flow model, expected the cvae" in run(foreign).stderr
    assert "--samples must be at least 1" in run(tiny_run / "results" / "models", "--samples", "0").stderr
    with pytest.raises(InputError, match="do not fit the model"):
        predict_maps(model, conditions[:, :2], mask, 4, seed=0)
