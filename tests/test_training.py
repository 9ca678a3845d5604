"""The training stages for real: CLI runs, kill and resume, NaN stop, checkpoint safety, device."""

from __future__ import annotations

import json
import logging
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

from exsitu.checkpoint import load_model, read_file
from exsitu.device import resolve_device
from exsitu.io import InputError
from exsitu.settings import TrainSettings
from exsitu.stages import train_baseline, train_cvae, train_flow
from exsitu.training import fit

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
            loss = (self(x) - 10).pow(2).mean()
            return (loss if self.weight.item() < 1.2 else loss * float("nan")), {}

    model = BlowsUp(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(0.0)
    x = torch.ones(8, 1)
    settings = TrainSettings(epochs=10, batch_size=8, lr=0.1, patience=10, seed=0)
    with pytest.raises(InputError, match=r"NaN|nan") as err:
        fit(model, (x,), (x,), settings, torch.device("cpu"), tmp_path / "ck.pt", amp=False)
    epoch = read_file(tmp_path / "ck.pt", "checkpoint")["epoch"]
    assert f"at epoch {epoch + 1};" in str(err.value) and f"last good epoch ({epoch})" in str(err.value)
    assert torch.isfinite(read_file(tmp_path / "ck.pt", "checkpoint")["model"]["weight"]).all()


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


def test_cuda_requested_without_gpu_falls_back_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
        return
    with caplog.at_level(logging.WARNING):
        assert resolve_device("cuda") == torch.device("cpu")
    assert "no GPU" in caplog.text
    with pytest.raises(InputError, match="device"):
        resolve_device("tpu")
