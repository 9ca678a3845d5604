"""Residual diagnostics: whitening, and that they tell per-map tails from per-pixel tails on maps drawn
from known processes; the stage function's JSON on a small model."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_recalibration import small_maps, small_models

from exsitu.likelihood import MapLikelihood, NoiseScales, to_fraction
from exsitu.residual_diagnostics import (
    ModeDiagnostics,
    diagnose,
    truth_bin_index,
    truth_bins,
    weighted_quantiles,
    whiten,
)

P, N = 10, 400


def field(dof: float | None = None) -> MapLikelihood:
    """One map's likelihood (broadcast to N maps): smooth factors and a diagonal, mean logit 0."""
    g = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.linspace(-1, 1, P), torch.linspace(-1, 1, P), indexing="ij")
    factors = torch.stack([0.6 * torch.ones(P, P), 0.5 * x, 0.4 * x * y])[None]
    log_var = (2 * np.log(0.4) + 0.2 * torch.randn(1, 1, P, P, generator=g)).float()
    one = MapLikelihood(torch.zeros(1, 1, P, P), log_var, factors, dof=None if dof is None else torch.tensor(dof))
    return replace(one, loc=one.loc.expand(N, -1, -1, -1), log_var=log_var.expand(N, -1, -1, -1),
                   factors=factors.expand(N, -1, -1, -1))  # fmt: skip


MASK = torch.ones(N, 1, P, P, dtype=torch.bool)


def diagnosed(truth_logit: torch.Tensor, likelihood: MapLikelihood) -> dict:
    block = ModeDiagnostics(likelihood.eps)
    block.add(likelihood, to_fraction(truth_logit, likelihood.eps), MASK, np.ones(N))
    return block.to_dict(likelihood.nu, n_galaxies=N)


def test_whitening_gives_the_mahalanobis_distance_and_white_noise() -> None:
    lik = field()
    x = lik.sample_logit(torch.Generator().manual_seed(1))
    core, _ = lik.core_residual(to_fraction(x), MASK)
    e = whiten(lik, core, MASK)
    # The Mahalanobis distance g^T S^-1 g with S = F F^T + diag(d) solved densely (every map has the same S).
    factors = lik.factors[0].flatten(1).double()
    cov = factors.T @ factors + torch.diag(lik.log_var[0, 0].flatten().double().exp())
    expected = (core.double() * torch.linalg.solve(cov, core.double().T).T).sum(1)
    torch.testing.assert_close(e.pow(2).sum(1), expected, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(torch.cov(e.T), torch.eye(P * P, dtype=torch.float64), atol=0.25, rtol=0)


def test_a_right_model_looks_right() -> None:
    lik = field()
    block = diagnosed(lik.sample_logit(torch.Generator().manual_seed(2)), lik)
    for name in ("marginal", "joint", "joint_within_map"):
        assert block[name]["kurtosis"] == pytest.approx(3, abs=0.15), name
    assert block["marginal"]["tail_1.96"] == pytest.approx(0.05, abs=0.005)
    assert block["marginal"]["tail_1"] == pytest.approx(0.317, abs=0.01)
    assert block["mahalanobis_per_pixel"]["pit_ks_pvalue"] > 0.01
    assert block["mahalanobis_per_pixel"]["quantiles"]["0.5"] == pytest.approx(1, abs=0.03)


def test_per_map_tails_show_in_the_mahalanobis_spread_not_within_maps() -> None:
    truth = field(dof=4.0).sample_logit(torch.Generator().manual_seed(3))
    block = diagnosed(truth, field())  # diagnosed with the Gaussian of the same scale matrix
    spread = block["mahalanobis_per_pixel"]["quantiles"]
    expected = block["mahalanobis_per_pixel"]["expected_quantiles"]
    assert spread["0.95"] - spread["0.05"] > 5 * (expected["0.95"] - expected["0.05"])
    assert block["mahalanobis_per_pixel"]["pit_ks_pvalue"] < 1e-3
    assert block["joint"]["kurtosis"] > 4.5 and block["joint_within_map"]["kurtosis"] == pytest.approx(3, abs=0.2)
    # The Student-t family of the same scale matrix and nu is the right model of these maps.
    right = diagnosed(truth, field(dof=4.0))
    assert right["mahalanobis_per_pixel"]["pit_ks_pvalue"] > 0.01
    assert right["marginal"]["kurtosis"] == pytest.approx(3, abs=0.2)


def test_per_pixel_tails_show_within_maps() -> None:
    # The toy: the independent part from 93% N(0, 0.35^2) + 7% N(0, 2.5^2) per pixel.
    lik, g = field(), torch.Generator().manual_seed(4)
    coherent = (lik.factors * torch.randn(N, 3, 1, 1, generator=g)).sum(1, keepdim=True)
    wide = torch.rand(N, 1, P, P, generator=g) < 0.07
    truth = coherent + torch.where(wide, 2.5, 0.35) * torch.randn(N, 1, P, P, generator=g)
    block = diagnosed(
        truth, replace(lik, log_var=torch.full_like(lik.log_var, float(np.log(0.93 * 0.35**2 + 0.07 * 6.25))))
    )
    assert block["joint_within_map"]["kurtosis"] > 8 and block["marginal"]["kurtosis"] > 6
    assert block["marginal"]["tail_2.576"] > 0.02  # and P(|u| > 1.96) falls short of 0.05
    assert block["marginal"]["tail_1.96"] < 0.05


def test_truth_bins_partition_the_fractions() -> None:
    eps = 1e-3
    values = np.array([0.0, eps, 0.005, 0.01, 0.3, 0.99, 0.995, 1 - eps, 1.0])
    index = truth_bin_index(values, eps)
    labels = [truth_bins(eps)[i][0] for i in index]
    assert labels[:2] == ["<= 0.001 (clip)"] * 2 and labels[-2:] == [">= 0.999 (clip)"] * 2
    assert labels[2:5] == ["0.001-0.01", "0.001-0.01", "0.2-0.5"] and labels[5:7] == ["0.95-0.99", "0.99-0.999"]
    # A larger clip swallows the bins below it.
    assert truth_bins(0.02)[1][0] == "0.02-0.05"
    assert weighted_quantiles(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 1, 1, 1]), [0.5])[0] == pytest.approx(2.5)


@pytest.mark.parametrize("family", ["gaussian", "student_t_sinh_arcsinh"])
def test_the_stage_function_streams_chunks_and_writes_strict_json(family: str) -> None:
    cvae, flow = small_models(family)
    maps = small_maps(7)
    noise = NoiseScales(0.5, 0.8)
    whole = diagnose(cvae, flow, maps.chunks(7), maps.table, seed=1, noise=noise)
    pieces = diagnose(cvae, flow, maps.chunks(3), maps.table, seed=1, noise=noise)
    text = json.dumps(whole, allow_nan=False)
    assert json.loads(text)["family"] == family and whole["n_maps"] == 7 and whole["n_galaxies"] == 3
    for scales in ("as_trained", "recalibrated"):
        for mode in ("reconstruction", "flow"):
            a, b = whole[scales][mode], pieces[scales][mode]
            assert a["marginal"]["kurtosis"] == pytest.approx(b["marginal"]["kurtosis"], rel=1e-4)
            assert a["mahalanobis_per_pixel"]["quantiles"] == pytest.approx(b["mahalanobis_per_pixel"]["quantiles"])
            for binned in ("by_truth", "by_prediction"):
                assert sum(bin_["n_pixels"] for bin_ in a[binned]) == a["n_pixels"] == int(maps.mask.sum())
    # Narrower noise: larger standardised residuals.
    assert whole["recalibrated"]["flow"]["marginal"]["std"] > whole["as_trained"]["flow"]["marginal"]["std"]


def test_maps_whose_every_pixel_is_censored_are_left_out_of_the_per_map_figures() -> None:
    # With cvae.censored a map whose galaxy pixels are all at the clip has no residual: it must not turn
    # the per-map Mahalanobis figures into NaN (metrics are strict JSON) nor shift them.
    lik = replace(field(dof=5.0), censored=True)
    truth = to_fraction(lik.sample_logit(torch.Generator().manual_seed(3)), lik.eps)
    truth[: N // 2] = 0.0
    block = ModeDiagnostics(lik.eps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor warn into the stage's log
        block.add(lik, truth, MASK, np.ones(N))
    everything = block.to_dict(lik.nu, n_galaxies=N)
    rest = slice(N // 2, None)
    half = replace(lik, loc=lik.loc[rest], log_var=lik.log_var[rest], factors=lik.factors[rest])
    alone = ModeDiagnostics(lik.eps)
    alone.add(half, truth[rest], MASK[rest], np.ones(N // 2))
    expected = alone.to_dict(lik.nu, n_galaxies=N)
    json.dumps(everything, allow_nan=False)
    assert everything["mahalanobis_per_pixel"]["quantiles"] == pytest.approx(
        expected["mahalanobis_per_pixel"]["quantiles"]
    )
