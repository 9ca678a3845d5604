"""Posterior sampling in the three modes (the one sampler, ``sample_in_chunks``, and its per-map seeds),
and the deterministic baseline's prediction, on models trained by the real stages on synthetic maps."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from test_dataset import write_synthetic_dataset

from exsitu.checkpoint import load_model
from exsitu.cvae import CVAE, CVAEConfig
from exsitu.dataset import DatasetFiles, MapSet
from exsitu.io import InputError
from exsitu.likelihood import NoiseScales
from exsitu.sample import (
    decode_batch,
    predict_baseline,
    predictives_in_chunks,
    residual_draws_in_chunks,
    sample_in_chunks,
    sampling_layout,
)
from exsitu.settings import ConditionSettings
from exsitu.stages import train_baseline, train_cvae, train_flow

CPU = torch.device("cpu")
#: The galaxy scalars the stages train with by default (``conditions.scalars``).
SCALARS = ConditionSettings.from_config({}).scalars


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
        # The model these sampling tests draw from, trained as it was before the warm-up: in 12 epochs a 10-epoch
        # warm-up leaves the KL weight low, and one sample of the flow mode then moved by 1.5e-5 between chunkings.
        "kl_warmup_epochs": 0,
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
    # Both contexts, whatever the config's default: "flow" is the paper's (summary), "flow_pooled" the other.
    run(train_flow, "flow", {"flow": {**flow, "context": "summary"}}, "--cvae", str(root / "cvae.pt"))
    run(train_flow, "flow_pooled", {"flow": {**flow, "context": "pooled"}}, "--cvae", str(root / "cvae.pt"))
    run(train_baseline, "baseline", {"cvae": cvae, "baseline": {"epochs": cvae["epochs"]}})
    models = {name: load_model(str(root / f"{name}.pt"), CPU) for name in ("cvae", "flow", "flow_pooled", "baseline")}
    return models, DatasetFiles(data["maps"], data["split"], data["stats"]).load("test")


def mae(samples: torch.Tensor, test: MapSet) -> float:
    """MAE of the per-pixel posterior median (the MAE-optimal summary, as evaluate scores it)."""
    mask = test.mask[:, 0]
    return float((samples.median(1).values - test.exsitu[:, 0])[mask].abs().mean())


def in_one(chunks) -> torch.Tensor:
    return torch.cat([samples for _, samples in chunks])


def draw(models: dict, test: MapSet, k: int, mode: str, seed: int = 0, **options) -> torch.Tensor:
    """All test maps' K samples from ``sample_in_chunks`` (map i seeded ``seed + i``), with the galaxy scalars."""
    options = {"exsitu": test.exsitu, "flow": models["flow"], "scalars": test.scalars(SCALARS)} | options
    return in_one(
        sample_in_chunks(models["cvae"], test.conditions, k, mode, seeds=seed + np.arange(len(test)), **options)
    )


@pytest.mark.parametrize("mode", ["reconstruction", "prior", "flow"])
def test_samples_shape_range_and_background(trained, mode: str) -> None:
    models, test = trained
    samples = draw(models, test, 5, mode, maps_per_chunk=7, pairs_per_pass=7)
    assert samples.shape == (len(test), 5, 16, 16) and samples.dtype == torch.float32 and samples.device == CPU
    assert samples.min() >= 0 and samples.max() <= 1
    assert torch.all(samples[~test.mask[:, 0].unsqueeze(1).expand_as(samples)] == 0)
    # Samples differ: the spread is the posterior uncertainty.
    assert samples.std(1)[test.mask[:, 0]].mean() > 1e-3
    assert torch.equal(samples, draw(models, test, 5, mode, maps_per_chunk=7, pairs_per_pass=7))


def test_condition_encoder_runs_once_per_map_and_passes_are_bounded(trained) -> None:
    models, test = trained
    cvae = models["cvae"]
    seen: list[int] = []
    passes: list[int] = []
    hooks = [
        cvae.condition_encoder.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0])),
        cvae.decoder.register_forward_hook(lambda m, inp, out: passes.append(inp[0].shape[0])),
    ]
    try:
        in_one(sample_in_chunks(cvae, test.conditions, 10, "prior", seeds=range(len(test)), maps_per_chunk=4,
                                pairs_per_pass=15, scalars=test.scalars(SCALARS)))  # fmt: skip
    finally:
        for hook in hooks:
            hook.remove()
    assert sum(seen) == len(test) and max(seen) == 4
    assert sum(passes) == 10 * len(test) and max(passes) == 15


def test_decode_batch_bounds_pixels_times_channels() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert decode_batch(cpu) == 128 and decode_batch(cuda) == 2048
    # The paper's 128^2 maps with 32 base channels: 1/32 of the pairs, the same activations per pass.
    assert decode_batch(cpu, 128, 32) == 4 and decode_batch(cuda, 128, 32) == 64
    assert decode_batch(cpu, 1024, 64) == 1


@pytest.mark.parametrize("mode,predictive", [("flow", "full"), ("reconstruction", "full"), ("prior", "mean")])
def test_a_maps_samples_depend_only_on_its_seed_not_on_chunks_passes_or_position(trained, mode, predictive) -> None:
    models, test = trained
    seeds = 1000 + np.arange(len(test))
    scalars = test.scalars(SCALARS)
    kwargs = {"exsitu": test.exsitu, "flow": models["flow"], "predictive": predictive, "scalars": scalars}
    reference = in_one(sample_in_chunks(models["cvae"], test.conditions, 6, mode, seeds=seeds, **kwargs))
    for maps_per_chunk, pairs_per_pass in ((1, 1), (5, 7), (len(test), 1000)):
        again = in_one(sample_in_chunks(models["cvae"], test.conditions, 6, mode, seeds=seeds, **kwargs,
                                        maps_per_chunk=maps_per_chunk, pairs_per_pass=pairs_per_pass))  # fmt: skip
        # Equal up to float rounding of convolutions run at other batch sizes.
        torch.testing.assert_close(again, reference, atol=1e-5, rtol=0)
    # The last maps alone, with their own seeds: the same samples as among all the maps.
    tail = {"exsitu": test.exsitu[7:], "flow": models["flow"], "predictive": predictive, "scalars": scalars[7:]}
    alone = in_one(sample_in_chunks(models["cvae"], test.conditions[7:], 6, mode, seeds=seeds[7:], **tail))
    torch.testing.assert_close(alone, reference[7:], atol=1e-5, rtol=0)
    if predictive == "full":  # another seed, other samples
        other = in_one(sample_in_chunks(models["cvae"], test.conditions, 6, mode, seeds=seeds + 1, **kwargs))
        assert (other - reference).abs().mean() > 1e-3


def test_draws_in_parts_give_the_samples_at_any_noise_scales(trained) -> None:
    models, test = trained
    noise = NoiseScales(lowrank=0.4, diagonal=1.3)
    seeds = np.arange(len(test))
    samples = draw(models, test, 5, "flow", noise=noise)
    parts = [
        draws.fractions(mask, noise).view(-1, 5, 16, 16)
        for _, draws, mask in residual_draws_in_chunks(
            models["cvae"],
            test.conditions,
            5,
            "flow",
            seeds=seeds,
            flow=models["flow"],
            scalars=test.scalars(SCALARS),
            maps_per_chunk=3,
        )  # fmt: skip
    ]
    torch.testing.assert_close(torch.cat(parts), samples, atol=1e-5, rtol=0)
    with pytest.raises(InputError, match="one seed per map"):
        in_one(sample_in_chunks(models["cvae"], test.conditions, 5, "prior", seeds=seeds[1:]))
    with pytest.raises(InputError, match="takes 2 galaxy scalars per map, got scalars of shape None"):
        in_one(sample_in_chunks(models["cvae"], test.conditions, 5, "prior", seeds=seeds))


@pytest.mark.parametrize("hurdle", [False, True])
def test_student_t_samples_are_reproducible_too(hurdle: bool) -> None:
    torch.manual_seed(0)
    cfg = CVAEConfig(
        npix=16, latent_dim=3, base_channels=4, summary_dim=8, rank=2, likelihood="student_t", hurdle=hurdle
    )
    cvae = CVAE(cfg)
    conditions = torch.randn(5, 5, 16, 16)
    a = in_one(sample_in_chunks(cvae, conditions, 4, "prior", seeds=[3, 4, 5, 6, 7], maps_per_chunk=2))
    b = in_one(sample_in_chunks(cvae, conditions, 4, "prior", seeds=[3, 4, 5, 6, 7], pairs_per_pass=3))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert a.std(1).mean() > 1e-3
    if hurdle:  # the classes' draws are part of what the seed fixes; at initialisation ~5% sit at each clip
        parts = next(residual_draws_in_chunks(cvae, conditions, 4, "prior", seeds=[3, 4, 5, 6, 7]))
        torch.testing.assert_close(parts[1].fractions(parts[2]).view(5, 4, 16, 16), a, atol=1e-5, rtol=0)
        assert 0.02 < float((a == 1).float().mean()) < 0.08


def test_reconstruction_beats_prior_and_modes_need_their_inputs(trained) -> None:
    models, test = trained
    recon = draw(models, test, 20, "reconstruction")
    prior = draw(models, test, 20, "prior")  # the same seeds: common random numbers
    assert mae(recon, test) < mae(prior, test)
    with pytest.raises(InputError, match="needs the true ex-situ maps"):
        draw(models, test, 2, "reconstruction", exsitu=None)
    with pytest.raises(InputError, match="needs the trained flow"):
        draw(models, test, 2, "flow", flow=None)
    with pytest.raises(InputError, match="sampling mode"):
        draw(models, test, 2, "posterior")
    with pytest.raises(InputError, match="predictive must be one of"):
        draw(models, test, 2, "prior", predictive="median")


def test_mean_predictive_is_what_the_latent_carries(trained) -> None:
    """Decoder means per z: in [0, 1], 0 outside, narrower than the full predictive, same centre."""
    models, test = trained
    full = draw(models, test, 30, "prior", seed=1)
    means = draw(models, test, 30, "prior", seed=1, predictive="mean")
    mask = test.mask[:, 0]
    assert means.min() >= 0 and means.max() <= 1
    assert torch.all(means.permute(0, 2, 3, 1)[~mask] == 0)
    assert means.std(1)[mask].mean() < 0.5 * full.std(1)[mask].mean()
    assert (means.mean(1) - full.mean(1))[mask].abs().mean() < 0.5 * full.std(1)[mask].mean()


@pytest.mark.parametrize("mode", ["flow", "reconstruction"])
def test_one_decoding_serves_both_predictives_bit_for_bit(trained, mode: str) -> None:
    """The evaluation's flow and flow_mean posteriors come from one decoding of the same latents."""
    models, test = trained
    decoded: list[int] = []
    hook = models["cvae"].decoder.register_forward_hook(lambda m, inp, out: decoded.append(inp[0].shape[0]))
    try:
        chunks = list(
            predictives_in_chunks(
                models["cvae"], test.conditions, 6, mode, seeds=3 + np.arange(len(test)), predictives=("full", "mean"),
                flow=models["flow"], exsitu=test.exsitu, scalars=test.scalars(SCALARS), maps_per_chunk=5,
            )
        )  # fmt: skip
    finally:
        hook.remove()
    assert sum(decoded) == 6 * len(test)  # once, not once per predictive
    for predictive in ("full", "mean"):
        together = torch.cat([samples[predictive] for _, samples in chunks])
        alone = draw(models, test, 6, mode, seed=3, predictive=predictive, maps_per_chunk=5)
        assert torch.equal(together, alone)
    with pytest.raises(InputError, match="predictive must be one of"):
        next(predictives_in_chunks(models["cvae"], test.conditions, 2, "prior", seeds=range(len(test)), predictives=()))


def test_sampling_layout_changes_speed_not_samples(trained) -> None:
    """Channels-last decoding gives the default layout's samples up to float rounding."""
    models, test = trained
    fast = {**models, "cvae": sampling_layout(copy.deepcopy(models["cvae"]))}
    conv = next(m for m in fast["cvae"].modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    for mode in ("flow", "prior"):
        torch.testing.assert_close(draw(fast, test, 6, mode), draw(models, test, 6, mode), atol=1e-4, rtol=0)


def test_baseline_prediction(trained) -> None:
    models, test = trained
    prediction = predict_baseline(models["baseline"], test.conditions, test.scalars(SCALARS), batch_size=5)
    assert prediction.shape == (len(test), 16, 16)
    assert prediction.min() >= 0 and prediction.max() <= 1
    # Better than predicting the test set's mean fraction everywhere.
    mask = test.mask[:, 0]
    truth = test.exsitu[:, 0][mask]
    assert (prediction[mask] - truth).abs().mean() < (truth - truth.mean()).abs().mean()


def test_a_flow_on_the_pooled_context_trains_samples_and_round_trips(trained) -> None:
    """flow.context: pooled conditions the flow on the summary and every level's mean features."""
    models, test = trained
    cvae, pooled = models["cvae"], models["flow_pooled"]
    assert pooled.hparams()["context"] == "pooled" and models["flow"].hparams()["context"] == "summary"
    assert pooled.cfg.context_dim == cvae.cfg.summary_dim + sum(cvae.condition_encoder.widths)
    samples = draw(models, test, 6, "flow", flow=pooled)
    assert samples.shape == (len(test), 6, 16, 16) and samples.min() >= 0 and samples.max() <= 1
    # A map's samples depend on its seed, not on its chunk, up to the rounding of convolutions at other batch sizes
    # (the decoder's skip part runs on the maps a pass reaches, whose number the chunking sets: 1.2e-5 seen).
    torch.testing.assert_close(draw(models, test, 6, "flow", flow=pooled, maps_per_chunk=3), samples, atol=5e-5, rtol=0)
    # Another context, another conditional density: the same seeds give other maps than the summary flow's.
    assert (samples - draw(models, test, 6, "flow")).abs()[:, :, test.mask[0, 0]].mean() > 1e-3
    assert mae(samples, test) < mae(draw(models, test, 6, "prior"), test) * 1.5
