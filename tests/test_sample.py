"""Posterior sampling in the three modes, and the deterministic baseline's prediction,
on models trained by the real stages on synthetic maps."""

from __future__ import annotations

import json

import pytest
import torch
from test_dataset import write_synthetic_dataset

from exsitu.checkpoint import load_model
from exsitu.dataset import DatasetFiles, MapSet
from exsitu.io import InputError
from exsitu.sample import posterior_samples, predict_baseline
from exsitu.stages import train_baseline, train_cvae, train_flow

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, MapSet]:
    root = tmp_path_factory.mktemp("sample")
    data = write_synthetic_dataset(root / "data", n_maps=120, npix=16)
    cvae = {
        "latent_dim": 4,
        "beta": 0.01,  # the paper's 7e-5 per pixel times ~150 galaxy pixels per map
        "rank": 4,
        "epochs": 12,
        "batch_size": 16,
        "lr": 2e-3,
        "base_channels": 8,
        "patience": 20,
        "seed": 0,
    }
    flow = {
        "num_layers": 2,
        "hidden_features": 32,
        "epochs": 40,
        "batch_size": 64,
        "lr": 2e-3,
        "patience": 40,
        "seed": 0,
    }

    def run(stage, name: str, settings: dict, *extra: str) -> None:
        stage.main(
            [
                "--maps",
                *data["maps"],
                "--split",
                data["split"],
                "--stats",
                data["stats"],
                "--settings",
                json.dumps(settings),
                "--device",
                "cpu",
                "--checkpoint",
                str(root / "ck" / f"{name}.pt"),
                "--model",
                str(root / f"{name}.pt"),
                "--history",
                str(root / f"{name}.csv"),
                *extra,
            ]
        )

    run(train_cvae, "cvae", {"cvae": cvae})
    run(train_flow, "flow", {"flow": flow}, "--cvae", str(root / "cvae.pt"))
    run(train_baseline, "baseline", {"cvae": cvae, "baseline": {"epochs": cvae["epochs"]}})
    models = {name: load_model(str(root / f"{name}.pt"), CPU) for name in ("cvae", "flow", "baseline")}
    return models, DatasetFiles(data["maps"], data["split"], data["stats"]).load("test")


def mae(samples: torch.Tensor, test: MapSet) -> float:
    mask = test.mask[:, 0]
    return float((samples.mean(1) - test.exsitu[:, 0])[mask].abs().mean())


@pytest.mark.parametrize("mode", ["reconstruction", "prior", "flow"])
def test_samples_shape_range_and_background(trained, mode: str) -> None:
    models, test = trained
    samples = posterior_samples(
        models["cvae"], test.conditions, 5, mode, exsitu=test.exsitu, flow=models["flow"], batch_size=7
    )
    assert samples.shape == (len(test), 5, 16, 16) and samples.dtype == torch.float32 and samples.device == CPU
    assert samples.min() >= 0 and samples.max() <= 1
    assert torch.all(samples[~test.mask[:, 0].unsqueeze(1).expand_as(samples)] == 0)
    # Samples differ: the spread is the posterior uncertainty.
    assert samples.std(1)[test.mask[:, 0]].mean() > 1e-3


def test_same_generator_same_samples(trained) -> None:
    models, test = trained
    draw = lambda: posterior_samples(  # noqa: E731
        models["cvae"], test.conditions, 4, "flow", flow=models["flow"], generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(draw(), draw())


def test_condition_encoder_runs_once_per_map(trained) -> None:
    models, test = trained
    seen: list[int] = []
    hook = models["cvae"].condition_encoder.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    try:
        posterior_samples(models["cvae"], test.conditions, 10, "prior", batch_size=40)
    finally:
        hook.remove()
    assert sum(seen) == len(test) and max(seen) == 4


def test_reconstruction_beats_prior_and_modes_need_their_inputs(trained) -> None:
    models, test = trained
    g = torch.Generator().manual_seed(0)
    recon = posterior_samples(models["cvae"], test.conditions, 20, "reconstruction", exsitu=test.exsitu, generator=g)
    prior = posterior_samples(models["cvae"], test.conditions, 20, "prior", generator=g)
    assert mae(recon, test) < mae(prior, test)
    with pytest.raises(InputError, match="needs the true ex-situ maps"):
        posterior_samples(models["cvae"], test.conditions, 2, "reconstruction")
    with pytest.raises(InputError, match="needs the trained flow"):
        posterior_samples(models["cvae"], test.conditions, 2, "flow")
    with pytest.raises(InputError, match="sampling mode"):
        posterior_samples(models["cvae"], test.conditions, 2, "posterior")
    with pytest.raises(InputError, match="predictive must be one of"):
        posterior_samples(models["cvae"], test.conditions, 2, "prior", predictive="median")


def test_mean_predictive_is_what_the_latent_carries(trained) -> None:
    """Decoder means per z: in [0, 1], 0 outside, narrower than the full predictive, same centre."""
    models, test = trained
    g = torch.Generator().manual_seed(1)
    full = posterior_samples(models["cvae"], test.conditions, 30, "prior", generator=g)
    means = posterior_samples(models["cvae"], test.conditions, 30, "prior", predictive="mean", generator=g)
    mask = test.mask[:, 0]
    assert means.min() >= 0 and means.max() <= 1
    assert torch.all(means.permute(0, 2, 3, 1)[~mask] == 0)
    assert means.std(1)[mask].mean() < 0.5 * full.std(1)[mask].mean()
    assert (means.mean(1) - full.mean(1))[mask].abs().mean() < 0.5 * full.std(1)[mask].mean()


def test_baseline_prediction(trained) -> None:
    models, test = trained
    prediction = predict_baseline(models["baseline"], test.conditions, batch_size=5)
    assert prediction.shape == (len(test), 16, 16)
    assert prediction.min() >= 0 and prediction.max() <= 1
    # Better than predicting the test set's mean fraction everywhere.
    mask = test.mask[:, 0]
    truth = test.exsitu[:, 0][mask]
    assert (prediction[mask] - truth).abs().mean() < (truth - truth.mean()).abs().mean()
