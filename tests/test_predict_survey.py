"""exsitu predict over many galaxies (exsitu.survey): a batch with broken files among good ones,
the catalogue against single-file predict and against the integrated fractions computed here
from the model-grid samples, a model that needs a galaxy scalar the input lacks, the list-file
syntax, and the Snakemake predict_catalogue target on the tiny run's model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from conftest import copy_workflow, snakemake
from fits_factories import write_generic
from test_predict import CPU, aligned_re, first_test_maps

from exsitu.functionals import aperture, integrated_fraction
from exsitu.io import InputError
from exsitu.modelcard import MODEL_CARD, load_model_dir
from exsitu.predict import model_scalars, predict_maps
from exsitu.radial import pixel_radius
from exsitu.sky import read_observation
from exsitu.survey import COLUMNS, FLAGS, collect_inputs, read_input_list, shard_of, unique_name

N_GOOD = 3
SEED = 5
K = 16


def write_galaxies(run: Path, directory: Path, model) -> list[Path]:
    """The first N_GOOD test maps of ``run`` in the generic layout, each spaxel one model pixel, with their
    stellar mass (LOGMSTAR: the galaxy scalar log_mstar the model takes)."""
    directory.mkdir(parents=True, exist_ok=True)
    conditions, mask, log_mstar = first_test_maps(run, N_GOOD, model.card.channels, ("log_mstar",))
    p = model.card.npix
    paths = []
    for i in range(N_GOOD):
        maps = {c: np.where(mask[i], conditions[i, j], np.nan) for j, c in enumerate(model.card.channels)}
        paths.append(
            write_generic(
                directory / f"gal{i}.fits",
                maps,
                re_arcsec=aligned_re(model, p),
                redshift=0.02 + 0.01 * i,
                psf_fwhm=2.5,
                masks={c: (~mask[i]).astype(np.int32) for c in maps},
                centre_xy=(p / 2 - 0.5, p / 2 - 0.5),
                primary_cards={"LOGMSTAR": float(log_mstar[i, 0])} | ({"PLATEIFU": f"100-{i}"} if i == 0 else {}),
            )  # fmt: skip
        )
    return paths


def read_csv_catalogue(directory: Path) -> pd.DataFrame:
    """catalogue.csv of ``directory``, empty text cells as "" (numbers missing stay NaN)."""
    table = pd.read_csv(directory / "catalogue.csv")
    text = [name for name, (form, _, _) in COLUMNS.items() if form == "A"]
    table[text] = table[text].astype(object).fillna("")
    return table


def run_predict(model_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["exsitu", "predict", "--model-dir", str(model_dir), "--seed", str(SEED), "--samples", str(K), *args],
        capture_output=True, text=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def survey(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A batch of N_GOOD good galaxies (a directory), a broken file and a galaxy without a channel
    (a list file), predicted once with the tiny run's model."""
    tmp = tmp_path_factory.mktemp("survey")
    model_dir = tiny_run / "results" / "models"
    model = load_model_dir(model_dir, CPU)
    good = write_galaxies(tiny_run, tmp / "galaxies", model)
    (tmp / "broken.fits").write_bytes(good[0].read_bytes()[:5000])  # truncated
    velocity = {"velocity": np.zeros((8, 8))}
    lacking = write_generic(tmp / "lacking.fits", velocity, re_arcsec=2.0, redshift=0.03, psf_fwhm=2.5)
    (tmp / "galaxies.txt").write_text(f"# galaxies that fail\nbroken.fits\n{lacking.name} log_mstar=10.5\n")
    out = tmp / "out"
    proc = run_predict(model_dir, str(tmp / "galaxies"), "--list", str(tmp / "galaxies.txt"), "--out-dir", str(out))
    return {"model": model, "good": good, "tmp": tmp, "proc": proc, "out": tmp / "out"}


def test_batch_with_broken_files_writes_the_others_and_flags_them(survey: dict) -> None:
    proc, out = survey["proc"], survey["out"]
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "2 of 5 galaxies failed" in proc.stderr
    table = read_csv_catalogue(out)
    assert list(table.columns) == list(COLUMNS) and list(table["index"]) == [0, 1, 2, 3, 4]
    assert list(table["name"]) == ["100-0", "gal1", "gal2", "broken", "lacking"]
    assert list(table["status"]) == ["ok", "ok", "ok", "failed", "failed"]
    assert "truncated" in table["reason"][3] and "broken.fits" in table["reason"][3]
    assert "lacking.fits: channel 'mass' needs image extension MASS" in table["reason"][4]
    for name in ("100-0", "gal1", "gal2"):
        assert (out / f"{name}.fits").is_file() and (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob("broken*")) and not list(out.glob("lacking*"))
    ok = table[table["status"] == "ok"]
    assert (ok["weighting"] == "mass").all() and (ok["n_spaxels"] > 0).all()
    assert (ok["flags"] & FLAGS["radius_3d"]).all()  # the tiny run trains on ideal maps
    for r in ("1re", "1p5re"):
        p16, p50, p84 = (ok[f"f_exsitu_{r}_{q}"] for q in ("p16", "p50", "p84"))
        assert ((p16 <= p50) & (p50 <= p84) & (p16 >= 0) & (p84 <= 1)).all()
    np.testing.assert_allclose(ok["z"], [0.02, 0.03, 0.04])
    # the FITS catalogue holds the same values, with units
    with fits.open(out / "catalogue.fits") as hdul:
        data, header = hdul["CATALOGUE"].data, hdul["CATALOGUE"].header
        units = {header[f"TTYPE{i}"]: header.get(f"TUNIT{i}") for i in range(1, header["TFIELDS"] + 1)}
        assert (units["ra"], units["re_arcsec"], units["re_kpc"]) == ("deg", "arcsec", "kpc")
        np.testing.assert_array_equal(data["f_exsitu_1re_p50"], table["f_exsitu_1re_p50"].to_numpy())
        assert [s.strip() for s in data["status"]] == list(table["status"])
    # --allow-failures: the same batch exits 0
    again = run_predict(survey["model"].directory, str(survey["tmp"] / "broken.fits"), "--out-dir",
                        str(survey["tmp"] / "again"), "--allow-failures")  # fmt: skip
    assert again.returncode == 0 and (survey["tmp"] / "again" / "catalogue.csv").is_file()


def test_catalogue_equals_single_file_predict_and_the_model_grid_fractions(survey: dict, tiny_run: Path) -> None:
    model, out = survey["model"], survey["out"]
    table = read_csv_catalogue(out).set_index("name")
    single = survey["tmp"] / "single.fits"
    proc = run_predict(model.directory, str(survey["good"][1]), "--out", str(single))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with fits.open(single) as one, fits.open(out / "gal1.fits") as batch:
        for name in ("MEAN", "STD", "P50", "SAMPLES"):
            np.testing.assert_array_equal(one[name].data, batch[name].data)
        head = one[0].header
        cards = {"FX10P50": "f_exsitu_1re_p50", "FX15P84": "f_exsitu_1p5re_p84", "NSPAXELS": "n_spaxels"}
        for key, column in cards.items():  # header cards are text: equal to the last digit FITS keeps
            assert head[key] == pytest.approx(table.loc["gal1", column], rel=1e-14)
    # the integrated fractions from the model-grid samples, computed here: the galaxy's grid is the
    # model grid, so its maps are the test maps; weights: surface density; apertures: circles of
    # r Re = r * 3/4 half-mass radii (the model was trained on ideal maps scaled by the 3D radius)
    conditions, mask, _ = first_test_maps(tiny_run, N_GOOD, model.card.channels)
    radius = pixel_radius(model.card.npix, model.card.fov_rhalf)
    sigma = 10.0 ** conditions[:, model.card.channels.index("mass")] * mask
    for i, name in enumerate(["100-0", "gal1", "gal2"]):
        scalars = model_scalars(model, read_observation(survey["good"][i], model.card.channels))[None]
        own = predict_maps(model, conditions[i : i + 1], mask[i : i + 1], K, SEED, scalars=scalars)[0]  # own seed
        for r, column in ((1.0, "f_exsitu_1re"), (1.5, "f_exsitu_1p5re")):
            w = sigma[i] * (radius <= r * 0.75)
            fractions = (own * w).sum(axis=(-2, -1)) / w.sum()
            p16, p50, p84 = np.percentile(fractions, [16, 50, 84])
            row = table.loc[name]
            np.testing.assert_allclose([row[f"{column}_p16"], row[f"{column}_p50"], row[f"{column}_p84"]],
                                       [p16, p50, p84], rtol=1e-4)  # fmt: skip


def test_missing_scalar_is_one_error_and_no_file(tiny_run: Path, survey: dict, tmp_path: Path) -> None:
    model_dir = tiny_run / "results" / "models"
    assert json.loads((model_dir / MODEL_CARD).read_text())["scalars"] == ["log_mstar", "log_rhalf_kpc"]
    # A good galaxy without its LOGMSTAR key.
    galaxy = tmp_path / "no_mass.fits"
    with fits.open(survey["good"][1]) as hdul:
        del hdul[0].header["LOGMSTAR"]
        hdul.writeto(galaxy)
    out = tmp_path / "one.fits"
    proc = run_predict(model_dir, str(galaxy), "--out", str(out))
    assert proc.returncode == 1 and not out.exists() and not out.with_suffix(".png").exists()
    assert proc.stderr.count("error:") == 1 and "needs the galaxy scalar log_mstar" in proc.stderr
    assert "--log-mstar" in proc.stderr
    batch = run_predict(model_dir, str(galaxy), "--out-dir", str(tmp_path / "batch"))
    row = read_csv_catalogue(tmp_path / "batch").iloc[0]
    assert batch.returncode == 3 and row["status"] == "failed" and "log_mstar" in row["reason"]
    assert sorted(p.name for p in (tmp_path / "batch").iterdir()) == ["catalogue.csv", "catalogue.fits"]
    # given, the scalars come in the card's order, log_rhalf_kpc on the model's 3D radius scale
    model = load_model_dir(model_dir, CPU)
    observed = read_observation(galaxy, model.card.channels, log_mstar=10.25)
    expected_log_r = np.log10(observed.re_kpc * 4 / 3)
    np.testing.assert_allclose(model_scalars(model, observed), [10.25, expected_log_r])
    # --log-mstar stands in for the file's key: the file's own value gives the batch's samples, another value others.
    with fits.open(survey["out"] / "gal1.fits") as batch:
        expected = batch["SAMPLES"].data
    for value, same in ((fits.getheader(survey["good"][1])["LOGMSTAR"], True), (12.0, False)):
        given = run_predict(model_dir, str(galaxy), "--out", str(out), "--log-mstar", repr(float(value)))
        assert given.returncode == 0, given.stderr[-3000:]
        with fits.open(out) as hdul:
            assert np.array_equal(hdul["SAMPLES"].data, expected, equal_nan=True) == same, value


def test_apertures_and_integrated_fractions() -> None:
    inside = aperture(4, 4.0, 1.0)  # pixel centres at +-0.5 and +-1.5 half-mass radii
    assert inside.sum() == 4 and inside[1:3, 1:3].all()
    maps = np.zeros((2, 4, 4))
    maps[1, 1, 1] = 1.0
    weights = np.ones((4, 4))
    weights[1, 1] = 3.0
    np.testing.assert_allclose(integrated_fraction(maps, weights, inside), [0.0, 0.5])
    np.testing.assert_allclose(integrated_fraction(maps, weights), [0.0, 3.0 / 18.0])
    assert np.isnan(integrated_fraction(maps, np.zeros((4, 4)), inside)).all()  # no mass inside: undefined


def test_list_files_shards_and_names(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.fits.gz").write_bytes(b"")
    (tmp_path / "sub" / "a.fits").write_bytes(b"")
    (tmp_path / "sub" / "notes.txt").write_text("")
    listed = tmp_path / "list.txt"
    entry = '"x y.fits" pipe3d=p.fits log_mstar=10.5 redshift=0.1 re_arcsec=3 vsys=-4'
    listed.write_text(f"  # header\n\n{entry}\nz.fits\n")
    items = collect_inputs([tmp_path / "sub", tmp_path / "c.fits"], listed)
    assert [i.path.name for i in items] == ["a.fits", "b.fits.gz", "c.fits", "x y.fits", "z.fits"]
    assert items[3].path == tmp_path / "x y.fits" and items[3].pipe3d == tmp_path / "p.fits"
    assert (items[3].log_mstar, items[3].redshift, items[3].re_arcsec, items[3].vsys) == (10.5, 0.1, 3.0, -4.0)
    assert [i for i, _ in shard_of(items, 1, 2)] == [1, 3] and [i for i, _ in shard_of(items, 0, 2)] == [0, 2, 4]
    taken: set[str] = set()
    assert [unique_name(n, taken) for n in ("a", "a", "b/c", "a")] == ["a", "a_2", "b_c", "a_3"]
    for line, message in (("g.fits mass=1", "not key=value with a key"), ("g.fits log_mstar=big", "is not a number"),
                          ('"g.fits', "No closing quotation")):  # fmt: skip
        listed.write_text(f"ok.fits\n{line}\n")
        with pytest.raises(InputError, match=rf"list.txt:2: .*{message}"):
            read_input_list(listed)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no FITS file"):
        collect_inputs([tmp_path / "empty"])
    with pytest.raises(InputError, match="shard 2 of 2"):
        shard_of(items, 2, 2)


def test_snakemake_predict_catalogue_target(tiny_run: Path, survey: dict, tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path / "wf")
    dry = snakemake(workdir, "--dry-run", "predict_catalogue", check=False)
    assert dry.returncode != 0 and "set config key 'predict.inputs'" in dry.stdout + dry.stderr
    galaxies = survey["tmp"] / "galaxies"
    broken = survey["tmp"] / "broken.fits"
    overlay = tmp_path / "predict.yaml"
    overlay.write_text(
        f"predict:\n  inputs: [{galaxies}, {broken}]\n  model_dir: {tiny_run / 'results' / 'models'}\n"
        f"  n_shards: 2\n  samples: {K}\n  seed: {SEED}\ndevice: cpu\n"
    )
    snakemake(workdir, "--cores", "2", "predict_catalogue", "--configfile", str(overlay))
    predictions = workdir / "results" / "predictions"
    table = read_csv_catalogue(predictions)
    assert list(table["name"]) == ["100-0", "gal1", "gal2", "broken"] and list(table["index"]) == [0, 1, 2, 3]
    assert list(table["fits"]) == ["shard_0/100-0.fits", "shard_1/gal1.fits", "shard_0/gal2.fits", ""]
    assert list(table["status"]) == ["ok", "ok", "ok", "failed"]
    batch = read_csv_catalogue(survey["out"]).set_index("name")
    for _, row in table.iloc[:3].iterrows():
        assert (predictions / row["fits"]).is_file()
        # same seed, same samples (up to the thread count snakemake gives the job)
        np.testing.assert_allclose(row["f_exsitu_1re_p50"], batch.loc[row["name"], "f_exsitu_1re_p50"], rtol=1e-5)
    with fits.open(predictions / "shard_0" / "100-0.fits") as hdul:
        assert "SAMPLES" not in hdul and hdul[0].header["NSAMPLES"] == K  # predict.write_samples: false
    assert (workdir / "results" / "benchmarks" / "predict" / "shard_1.tsv").is_file()
