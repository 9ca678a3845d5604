"""The report stage: the HTML of the tiny end-to-end run is self-contained with real
figures; benchmark TSVs become per-stage times; bad input fails clearly, writing nothing."""

from __future__ import annotations

import base64
import io
import re
import shutil
import zipfile
from pathlib import Path

import matplotlib.image
import pytest
from conftest import snakemake

from exsitu import reporting
from exsitu.io import InputError
from exsitu.stages import report


def test_tiny_run_report_is_self_contained(tiny_run: Path) -> None:
    text = (tiny_run / "results" / "report.html").read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    # No external resources or scripts: it must render offline, from one file.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", text, re.IGNORECASE)
    assert "<script" not in text.lower() and "<link" not in text.lower()
    images = re.findall(r"<img [^>]*>", text)
    assert len(images) >= 6
    for tag in images:
        data = re.search(r'src="data:image/png;base64,([^"]+)"', tag)
        assert data, f"image not embedded as PNG: {tag[:80]}"
        pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(data.group(1))), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0.01  # not blank
    for heading in ("Data", "Training", "Fig. 2", "Fig. 3", "Calibration", "baselines", "cost", "Configuration"):
        assert heading in text
    for section in ("Mock against TNG/Illustris", "per-pixel lookup", "held-out posterior reference", "by stratum",
                    "Rank histogram", "exactly 0 or 1", "model.json"):  # fmt: skip
        assert section in text, section
    # Every figure is a file of its own (PNG embedded above, SVG for papers).
    for name in reporting.FIGURES:
        png = tiny_run / "results" / "figures" / f"{name}.png"
        assert base64.b64encode(png.read_bytes()).decode() in text, name
        assert (png.with_suffix(".svg")).read_text().lstrip().startswith(("<?xml", "<svg"))
    for stage in ("train_cvae", "evaluate", "project"):  # from results/benchmarks/**/*.tsv
        assert f"<th>{stage}</th>" in text


def test_stage_times_sums_sharded_stages(tmp_path: Path) -> None:
    (tmp_path / "tag").mkdir()
    for name, seconds in (("tag/shard_0.tsv", 1.5), ("tag/shard_1.tsv", 2.5), ("split.tsv", 4.0)):
        (tmp_path / name).write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:0{int(seconds)}\t10\n")
    times = reporting.stage_times(str(tmp_path))
    assert times.loc["tag", "jobs"] == 2 and times.loc["tag", "total wall time [s]"] == pytest.approx(4.0)
    assert times.loc["tag", "longest job [s]"] == pytest.approx(2.5)
    assert times.loc["all stages", "total wall time [s]"] == pytest.approx(8.0)


def test_bad_catalog_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    catalog = tmp_path / "subhalos.csv"
    catalog.write_text("snapshot,subhalo_id\n99,1\n")
    out = tmp_path / "report.html"
    missing = str(tmp_path / "missing")
    figures = [str(tmp_path / "figures" / f"{name}.{ext}") for name in reporting.FIGURES for ext in ("png", "svg")]
    with pytest.raises(InputError, match=r"subhalos.csv: columns \['galaxy_id'\] are missing"):
        report.main(
            [
                "--catalog",
                str(catalog),
                "--plan",
                missing,
                "--split",
                missing,
                "--histories",
                missing,
                "--metrics",
                missing,
                "--summaries",
                missing,
                "--relations",
                missing,
                "--model-card",
                missing,
                "--benchmarks",
                str(tmp_path),
                "--report",
                str(out),
                "--figures",
                *figures,
            ]
        )
    assert not out.exists() and list(tmp_path.iterdir()) == [catalog]


def test_snakemake_report_zip_holds_the_figures(tiny_run: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "wf"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    snakemake(workdir, "--report", "report.zip")
    with zipfile.ZipFile(workdir / "report.zip") as archive:
        figures = [n for n in archive.namelist() if n.endswith(".png")]
    names = {Path(n).stem for n in figures}
    assert len(names & set(reporting.FIGURES)) >= 6, sorted(names)
