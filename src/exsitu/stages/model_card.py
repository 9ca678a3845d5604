"""Write results/models/model.json: what a copy of the model directory needs to be applied elsewhere.

The card lists the conditioning channels and their normalisation statistics, the map size, the
field-of-view definition, the observe settings and the config hash (see ``exsitu.modelcard``);
``exsitu predict --model-dir results/models`` reads it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from exsitu.dataset import channel_index, read_stats
from exsitu.io import InputError
from exsitu.modelcard import ModelCard, write_model_card
from exsitu.recalibration import read_noise_scales
from exsitu.settings import ConditionSettings, MapSettings, ObserveSettings, config_hash, section_of
from exsitu.stages import run_stage, stage_parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__file__, __doc__)
    parser.add_argument("--cvae", required=True, help="trained cVAE (results/models/cvae.pt)")
    parser.add_argument("--flow", required=True, help="trained flow (results/models/flow.pt)")
    parser.add_argument("--stats", required=True, help="results/dataset/normalisation.json")
    parser.add_argument("--noise-scale", required=True, help="noise_scale.json of the recalibrate stage")
    parser.add_argument("--out", required=True, help="model.json to write, beside the model files")
    args = parser.parse_args(argv)
    maps = section_of(args.settings, MapSettings)
    channels = section_of(args.settings, ConditionSettings, required=False).channels
    observe = section_of(args.settings, ObserveSettings)
    directory = Path(args.out).parent
    for model in (args.cvae, args.flow):
        if Path(model).parent.resolve() != directory.resolve():
            raise InputError(f"{model}: the model files must sit beside {args.out} (a model directory is copied whole)")
    mean, std = read_stats(args.stats)
    keep = channel_index(channels)
    card = ModelCard(
        channels=tuple(channels),
        mean=tuple(float(mean[i]) for i in keep),
        std=tuple(float(std[i]) for i in keep),
        npix=maps.npix,
        fov_rhalf=float(maps.fov_rhalf),
        radius="projected" if observe.enabled else "3d",
        observe=observe.to_dict() if observe.enabled else None,
        config_hash=config_hash(json.loads(json.dumps(args.settings))),
        noise=dataclasses.asdict(read_noise_scales(args.noise_scale)),
        scalars=section_of(args.settings, ConditionSettings, required=False).scalars,
        files={"cvae": Path(args.cvae).name, "flow": Path(args.flow).name},
    )
    write_model_card(args.out, card)


if __name__ == "__main__":
    run_stage(main)
