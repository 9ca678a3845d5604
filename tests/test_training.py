"""The training stages for real: CLI runs, kill and resume, NaN stop, checkpoint safety, device."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_dataset import write_synthetic_dataset

from exsitu.augment import ELEMENTS, dihedral
from exsitu.checkpoint import load_model, read_file
from exsitu.cvae import CVAE as CVAENetwork
from exsitu.cvae import CVAEConfig
from exsitu.dataset import DatasetFiles
from exsitu.device import resolve_device
from exsitu.io import InputError
from exsitu.sample import encode
from exsitu.settings import TrainSettings
from exsitu.stages import train_baseline, train_cvae, train_flow
from exsitu.training import WEIGHT_DECAY, autocast_dtype, fit, native_bfloat16, optimizer_for

CVAE = {
    "latent_dim": 4,
    "beta": 0.01,  # per map: the paper's 7e-5 per pixel times ~150 galaxy pixels
    "epochs": 2,
    "batch_size": 16,
    "lr": 1e-3,
    "base_channels": 4,
    "patience": 5,
    "seed": 0,
}
CPU = torch.device("cpu")
FLOW = {"num_layers": 2, "hidden_features": 16, "epochs": 3, "batch_size": 64, "lr": 1e-3, "patience": 5, "seed": 0}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return write_synthetic_dataset(tmp_path_factory.mktemp("data"), n_maps=60, npix=16)


def args(data: dict, out: Path, name: str, settings: dict, *extra: str) -> list[str]:
    return [
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
        str(out / "ck" / f"{name}.pt"),
        "--model",
        str(out / f"{name}.pt"),
        "--history",
        str(out / f"{name}_history.csv"),
        *extra,
    ]


def same_weights(a: str | Path, b: str | Path) -> bool:
    wa, wb = read_file(a)["state_dict"], read_file(b)["state_dict"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_three_stages_write_models_and_history(data: dict, tmp_path: Path) -> None:
    train_cvae.main(args(data, tmp_path, "cvae", {"cvae": CVAE}))
    train_flow.main(args(data, tmp_path, "flow", {"flow": FLOW}, "--cvae", str(tmp_path / "cvae.pt")))
    train_baseline.main(args(data, tmp_path, "baseline", {"cvae": CVAE, "baseline": {"epochs": 3}}))
    for name, epochs in [("cvae", 2), ("flow", 3), ("baseline", 3)]:
        history = pd.read_csv(tmp_path / f"{name}_history.csv")
        assert list(history["epoch"]) == list(range(1, epochs + 1))
        assert {"train_loss", "val_loss", "lr", "seconds"} <= set(history.columns)
        assert load_model(str(tmp_path / f"{name}.pt"), torch.device("cpu")).kind == name
    history = pd.read_csv(tmp_path / "cvae_history.csv")
    assert {"kl", "recon", "val_kl_dim_3", "active_units"} <= set(history.columns)
    # Deterministic for a seed on the CPU.
    train_cvae.main(args(data, tmp_path / "again", "cvae", {"cvae": CVAE}))
    assert same_weights(tmp_path / "cvae.pt", tmp_path / "again" / "cvae.pt")


def test_killed_run_resumes_at_the_right_epoch(data: dict, tmp_path: Path) -> None:
    settings = {"cvae": {**CVAE, "epochs": 20, "patience": 50}}
    cmd = [sys.executable, "-m", "exsitu.stages.train_cvae", *args(data, tmp_path, "cvae", settings)]
    checkpoint = tmp_path / "ck" / "cvae.pt"
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # like a SLURM job hitting its time limit
    proc.wait()
    done = read_file(checkpoint, "checkpoint")["epoch"]
    assert 1 <= done < 20, "the run finished before it could be killed"
    assert not (tmp_path / "cvae.pt").exists()

    rerun = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert f"resuming cvae from {checkpoint} at epoch {done + 1} of 20" in rerun.stderr
    history = pd.read_csv(tmp_path / "cvae_history.csv")
    assert list(history["epoch"]) == list(range(1, 21))
    # The resumed run is the run that was never interrupted.
    train_cvae.main(args(data, tmp_path / "straight", "cvae", settings))
    assert same_weights(tmp_path / "cvae.pt", tmp_path / "straight" / "cvae.pt")


def test_checkpoint_of_other_settings_is_ignored(data: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    train_cvae.main(args(data, tmp_path, "cvae", {"cvae": CVAE}))
    with caplog.at_level(logging.WARNING):
        train_cvae.main(args(data, tmp_path, "cvae", {"cvae": {**CVAE, "latent_dim": 3, "epochs": 1}}))
    assert "written for other settings" in caplog.text
    assert list(pd.read_csv(tmp_path / "cvae_history.csv")["epoch"]) == [1]
    assert load_model(str(tmp_path / "cvae.pt"), torch.device("cpu")).cfg.latent_dim == 3


def test_nan_loss_stops_naming_the_epoch_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    class BlowsUp(torch.nn.Linear):
        kind = "blows_up"

        def hparams(self) -> dict:
            return {}

        def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
            # A loss that blows up once the weight has been pushed past 1.2 (at epoch 3).
            loss = (self(x) - 10).pow(2)[:, 0]
            return (loss if self.weight.item() < 1.2 else loss * float("nan")), {}

    model = BlowsUp(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(0.0)
    x = torch.ones(8, 1)
    settings = TrainSettings(epochs=10, batch_size=8, lr=0.1, patience=10, seed=0)
    with pytest.raises(InputError, match=r"NaN|nan") as err:
        fit(model, (x,), (x,), settings, torch.device("cpu"), tmp_path / "ck.pt", precision="fp32")
    epoch = read_file(tmp_path / "ck.pt", "checkpoint")["epoch"]
    assert f"at epoch {epoch + 1};" in str(err.value) and f"last good epoch ({epoch})" in str(err.value)
    assert torch.isfinite(read_file(tmp_path / "ck.pt", "checkpoint")["model"]["weight"]).all()


class Location(torch.nn.Module):
    """One parameter p; the loss of a map (row) x is (p - x)^2 per map, with x's mean as an extra."""

    kind = "location"

    def __init__(self) -> None:
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))

    def hparams(self) -> dict:
        return {}

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return (self.p - x[:, 0]).pow(2), {"x": x[:, 0], "pair": x.expand(-1, 2)}


def test_per_map_weights_shift_the_optimum_and_weight_the_history(tmp_path: Path) -> None:
    # 30 maps at 0 and 10 at 1: unweighted the optimum is 0.25; weights 1 and 9 move it to 0.75.
    x = torch.cat([torch.zeros(30, 1), torch.ones(10, 1)])
    weights = torch.cat([torch.ones(30), torch.full((10,), 9.0)])
    settings = TrainSettings(epochs=60, batch_size=8, lr=0.05, patience=60, seed=0)
    model = Location()
    result = fit(model, (x,), (x,), settings, CPU, tmp_path / "w.pt", train_weights=weights, val_weights=weights)
    assert float(model.p.detach()) == pytest.approx(0.75, abs=0.03)
    best = result.history[result.best_epoch - 1]
    expected = float((weights * (model.p.detach() - x[:, 0]) ** 2).sum() / weights.sum())
    assert best["val_loss"] == pytest.approx(expected, rel=1e-5)
    assert best["val_x"] == pytest.approx(0.75) and best["val_pair_1"] == pytest.approx(0.75)  # weighted means
    unweighted = fit(Location(), (x,), (x,), settings, CPU, tmp_path / "u.pt")
    assert unweighted.history[-1]["val_x"] == pytest.approx(0.25)
    with pytest.raises(InputError, match="train_weights.*one weight per map"):
        fit(Location(), (x,), (x,), settings, CPU, tmp_path / "bad.pt", train_weights=torch.ones(3))
    with pytest.raises(InputError, match="val_weights.*>= 0"):
        fit(Location(), (x,), (x,), settings, CPU, tmp_path / "bad.pt", val_weights=-weights)


class WeighedLocation(Location):
    """Location whose loss also reports the KL weight ``beta`` it was given, as an extra."""

    def loss(self, x: torch.Tensor, *, beta: float) -> tuple[torch.Tensor, dict]:
        losses, extras = super().loss(x)
        return losses, {**extras, "beta": torch.full_like(losses, beta)}


def test_kl_warm_up_weighs_training_passes_only_and_is_part_of_the_checkpoint(tmp_path: Path) -> None:
    x = torch.linspace(-1, 1, 16)[:, None]
    settings = TrainSettings(epochs=5, batch_size=8, lr=0.05, patience=5, seed=0)
    options = {"beta": 0.8}
    result = fit(
        WeighedLocation(), (x,), (x,), settings, CPU, tmp_path / "w.pt", loss_options=options, beta_warmup_epochs=4
    )
    assert [round(row["beta"], 6) for row in result.history] == [0.2, 0.4, 0.6, 0.8, 0.8]
    assert all(row["val_beta"] == pytest.approx(0.8) for row in result.history)  # the best epoch: on the objective
    # Another warm-up is another run: its checkpoint is not resumed.
    again = fit(WeighedLocation(), (x,), (x,), settings, CPU, tmp_path / "w.pt", loss_options=options)
    assert [round(row["beta"], 6) for row in again.history] == [0.8] * 5


def flip(batch: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """A random sign per map, drawn from the loop's generator (an augmentation of the Location data)."""
    (x,) = batch
    assert x.dtype == torch.float32  # the float16 data were cast on the device
    sign = torch.randint(0, 2, (x.shape[0], 1), generator=generator) * 2.0 - 1
    return [x * sign + 1]


def test_batch_transform_trains_but_never_validates_and_a_resumed_run_is_the_same(tmp_path: Path) -> None:
    x = torch.linspace(-1, 1, 37, dtype=torch.float16)[:, None]
    settings = TrainSettings(epochs=6, batch_size=8, lr=0.05, patience=6, seed=3)
    straight = Location()
    result = fit(straight, (x,), (x,), settings, CPU, tmp_path / "straight.pt", batch_transform=flip)
    # Training saw x * sign + 1 (mean 1), validation the data as they are (mean 0).
    assert result.history[-1]["x"] == pytest.approx(1.0, abs=0.3) and abs(result.history[-1]["val_x"]) < 1e-3

    class Interrupt(Exception):
        pass

    def stop_at_epoch_4(row: dict) -> dict:
        if row["epoch"] == 4:
            raise Interrupt  # like a job killed during epoch 4: the checkpoint holds epoch 3
        return {}

    resumed = Location()
    with pytest.raises(Interrupt):
        fit(resumed, (x,), (x,), settings, CPU, tmp_path / "ck.pt", batch_transform=flip, epoch_metrics=stop_at_epoch_4)
    assert read_file(tmp_path / "ck.pt", "checkpoint")["epoch"] == 3
    resumed = Location()
    again = fit(resumed, (x,), (x,), settings, CPU, tmp_path / "ck.pt", batch_transform=flip)
    assert torch.equal(resumed.p, straight.p)
    assert [row["train_loss"] for row in again.history] == [row["train_loss"] for row in result.history]


def test_the_multi_tensor_update_is_torchs_loop_bit_for_bit() -> None:
    """The training's AdamW updates every parameter tensor of the cVAE in one foreach step (faster on a CPU);
    after steps with random gradients and weight decay the weights equal those of the one-by-one loop exactly."""
    cfg = CVAEConfig(npix=16, latent_dim=4, base_channels=8, rank=2, n_scalars=2, likelihood="student_t", hurdle=True)
    twins = [CVAENetwork(cfg) for _ in (0, 1)]
    twins[1].load_state_dict(twins[0].state_dict())
    start = [p.detach().clone() for p in twins[0].parameters()]
    fast = optimizer_for(twins[0], 1e-2)
    assert fast.defaults["foreach"] and fast.defaults["weight_decay"] == WEIGHT_DECAY
    loop = torch.optim.AdamW(twins[1].parameters(), lr=1e-2, weight_decay=WEIGHT_DECAY, foreach=False)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        for a, b in zip(twins[0].parameters(), twins[1].parameters()):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        fast.step()
        loop.step()
    pairs = list(zip(twins[0].parameters(), twins[1].parameters()))
    assert len(pairs) > 50 and not any(torch.equal(a, s) for (a, _), s in zip(pairs, start))  # every tensor moved
    assert all(torch.equal(a, b) for a, b in pairs)


def test_data_set_in_float16_trains_like_float32_within_its_rounding(tmp_path: Path) -> None:
    x = torch.rand(50, 1, generator=torch.Generator().manual_seed(0))
    settings = TrainSettings(epochs=3, batch_size=16, lr=0.05, patience=3, seed=0)
    half, full = Location(), Location()
    fit(half, (x.half(),), (x.half(),), settings, CPU, tmp_path / "h.pt")
    fit(full, (x,), (x,), settings, CPU, tmp_path / "f.pt")
    assert half.p.item() == pytest.approx(full.p.item(), abs=1e-3)


class ConvDtype(torch.nn.Module):
    """A 1x1 convolution whose loss records the dtype its output was computed in."""

    kind = "conv_dtype"

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)
        self.dtypes: set[torch.dtype] = set()

    def hparams(self) -> dict:
        return {}

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        out = self.conv(x)
        self.dtypes.add(out.dtype)
        return out.float().pow(2).flatten(1).mean(1), {}


def test_bf16_autocasts_on_a_cpu_only_where_it_computes_bfloat16_natively(tmp_path: Path) -> None:
    # The CPU's own flags decide: AVX512-BF16 or AMX-BF16 trains the convolutions in bfloat16 (1.6x faster
    # per cVAE step on an AVX512-BF16 EPYC), any other CPU in fp32 (emulated bfloat16 is slower).
    flags = torch.cpu.get_capabilities()
    native = bool(flags.get("avx512_bf16") or flags.get("amx_bf16"))
    assert native_bfloat16(CPU) is native
    assert autocast_dtype(CPU, "bf16") == (torch.bfloat16 if native else None)
    assert autocast_dtype(CPU, "fp32") is None
    with pytest.raises(InputError, match="train.precision"):
        autocast_dtype(CPU, "fp16")
    x = torch.randn(16, 1, 4, 4)
    settings = TrainSettings(epochs=2, batch_size=8, lr=0.01, patience=2, seed=0)
    for precision, expected in (("bf16", torch.bfloat16 if native else torch.float32), ("fp32", torch.float32)):
        model = ConvDtype()
        fit(model, (x,), (x,), settings, CPU, tmp_path / f"{precision}.pt", precision=precision)
        assert model.dtypes == {expected}, precision


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_step_in_bf16_with_channels_last(data: dict, tmp_path: Path) -> None:
    from exsitu.cvae import CVAE as Network
    from exsitu.cvae import CVAEConfig

    model = Network(CVAEConfig(npix=16, latent_dim=4, base_channels=4))
    maps = DatasetFiles(data["maps"], data["split"], data["stats"]).load("train", torch.float16)
    batch = (maps.conditions, maps.exsitu, maps.mask)
    settings = TrainSettings(epochs=1, batch_size=16, lr=1e-3, patience=1, seed=0)
    result = fit(model, batch, batch, settings, torch.device("cuda"), tmp_path / "ck.pt", loss_options={"beta": 1.0})
    assert math.isfinite(result.best_val)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_corrupt_or_mismatched_model_files_are_clear_errors(data: dict, tmp_path: Path) -> None:
    train_cvae.main(args(data, tmp_path, "cvae", {"cvae": {**CVAE, "epochs": 1}}))
    path = tmp_path / "cvae.pt"
    content = read_file(path)
    content["hparams"]["latent_dim"] = 7
    torch.save(content, tmp_path / "other.pt")
    with pytest.raises(InputError, match="other.pt: the cvae weights do not match"):
        load_model(str(tmp_path / "other.pt"), torch.device("cpu"))
    (tmp_path / "broken.pt").write_bytes(path.read_bytes()[:500])
    with pytest.raises(InputError, match="broken.pt: not a readable model file"):
        load_model(str(tmp_path / "broken.pt"), torch.device("cpu"))
    # A flow stage handed a non-cVAE file says so.
    with pytest.raises(InputError, match="does not match|not a readable"):
        train_flow.main(args(data, tmp_path, "flow", {"flow": FLOW}, "--cvae", str(tmp_path / "broken.pt")))


def test_stage_cli_reports_bad_input_in_one_line(data: dict, tmp_path: Path) -> None:
    proc = subprocess.run(
        ["exsitu", "train_cvae", *args(data, tmp_path, "cvae", {"cvae": {"latent_dim": 0}})],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: config key 'cvae.latent_dim': 0 is less than")
    assert not (tmp_path / "cvae.pt").exists()


def test_baseline_errors_name_the_baseline_key(data: dict, tmp_path: Path) -> None:
    # The baseline inherits the cvae optimiser; a bad override is reported under its own section.
    with pytest.raises(InputError, match="config key 'baseline.lr'"):
        train_baseline.main(args(data, tmp_path, "baseline", {"cvae": CVAE, "baseline": {"lr": -1.0}}))
    assert not (tmp_path / "baseline.pt").exists()


def test_cuda_requested_without_gpu_is_one_error_before_any_work(data: dict, tmp_path: Path) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="device"):
        resolve_device("tpu")
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda" and resolve_device("cuda").type == "cuda"
        return
    assert resolve_device("auto") == torch.device("cpu")  # auto keeps the CPU fallback
    with pytest.raises(InputError, match="'device' is 'cuda' but .* set device to 'auto'"):
        resolve_device("cuda")
    # The stage stops before it reads any data: the maps it is pointed at need not even exist.
    argv = args({**data, "maps": [str(tmp_path / "missing.h5")]}, tmp_path, "cvae", {"cvae": CVAE})
    argv[argv.index("--device") + 1] = "cuda"
    proc = subprocess.run(["exsitu", "train_cvae", *argv], capture_output=True, text=True)
    assert proc.returncode == 1 and "error: config key 'device' is 'cuda'" in proc.stderr
    assert not (tmp_path / "ck").exists() and not (tmp_path / "cvae.pt").exists()


def test_the_flow_learns_from_every_symmetry_of_the_training_maps(data: dict) -> None:
    # flow.augment: each training map is encoded in the eight symmetries of the square, element by element.
    torch.manual_seed(0)
    cvae = CVAENetwork(CVAEConfig(npix=16, latent_dim=4, base_channels=4, summary_dim=8, rank=2)).eval()
    files = DatasetFiles(**data)
    maps = files.load("train")
    n = len(maps)
    plain = train_flow.encode_subset(cvae, files, "train", ())
    every = train_flow.encode_subset(cvae, files, "train", (), range(ELEMENTS))
    assert all(e.shape[0] == ELEMENTS * n for e in every)
    for element in (0, 2, 5):
        expected = encode(cvae, dihedral(maps.conditions, element), dihedral(maps.exsitu, element))
        for got, want in zip(every, expected):
            torch.testing.assert_close(got[element * n : (element + 1) * n], want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(every[0][:n], plain[0])
    assert not torch.allclose(every[0][2 * n : 3 * n], plain[0], atol=1e-3)  # a turned map is another map
    # The training weights follow the same row order: each map's weight once per element.
    weights = torch.arange(n, dtype=torch.float32)
    assert torch.equal(train_flow._per_element(weights, ELEMENTS), weights.repeat(ELEMENTS))
