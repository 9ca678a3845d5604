"""Wall time of the data stages on the default mock universe (config.yaml), 2 parallel workers.

Runs the stage CLIs exactly as the rules do (simulate_mock, select, then the tag shards and
the project shards two at a time, as `snakemake --cores 2` would) and prints each stage's
wall time, the tag+project total (target < 60 s on 2 cores) and the universe's size.

    python benchmarks/bench_data.py [--workers 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import yaml

REPO = Path(__file__).resolve().parents[1]


def stage(name: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", f"exsitu.{name}", *args], check=True, capture_output=True)


def timed(fn, *jobs) -> float:
    t0 = time.perf_counter()
    fn(*jobs)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", help="write the results here instead of a temporary directory")
    args = parser.parse_args()
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    snaps = [str(s) for s in cfg["simulation"]["snapshots"]]
    n_shards = cfg["maps"]["n_shards"]
    out = Path(args.keep or tempfile.mkdtemp(prefix="bench_data_"))
    base = out / "TNGmock" / "output"
    cat, plan = out / "subhalos.csv", out / "projections.csv"
    parts = [str(out / f"particles_{k}.h5") for k in range(n_shards)]

    def parallel(jobs):
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(lambda job: stage(*job), jobs))

    times = {
        "simulate_mock": timed(
            stage,
            "simulate_mock",
            "--out",
            str(out / "TNGmock"),
            "--snapshots",
            *snaps,
            "--settings",
            json.dumps(cfg["mock"]),
        ),
        "select": timed(
            stage,
            "select",
            "--basepath",
            str(base),
            "--snapshots",
            *snaps,
            "--settings",
            json.dumps(cfg["selection"]),
            "--out",
            str(cat),
        ),
    }
    times["tag"] = timed(
        parallel,
        [
            (
                "tag",
                "--basepath",
                str(base),
                "--catalog",
                str(cat),
                "--shard",
                str(k),
                "--n-shards",
                str(n_shards),
                "--out",
                parts[k],
            )
            for k in range(n_shards)
        ],
    )
    times["plan"] = timed(
        stage, "plan", "--particles", *parts, "--settings", json.dumps(cfg["plan"]), "--out", str(plan)
    )
    times["project"] = timed(
        parallel,
        [
            (
                "project",
                "--particles",
                parts[k],
                "--plan",
                str(plan),
                "--shard",
                str(k),
                "--settings",
                json.dumps(cfg["maps"]),
                "--out",
                str(out / f"maps_{k}.h5"),
            )
            for k in range(n_shards)
        ],
    )
    n_particles = sum(h5py.File(p)["particles/mass"].shape[0] for p in parts)
    n_maps = sum(h5py.File(out / f"maps_{k}.h5")["conditions"].shape[0] for k in range(n_shards))
    print(
        f"default mock universe: {cfg['mock']['n_galaxies']} z=0 galaxies, {n_particles} tagged star particles, "
        f"{n_maps} maps of {cfg['maps']['npix']}^2 pixels, {args.workers} workers, results in {out}"
    )
    for name, seconds in times.items():
        print(f"{name:14s} {seconds:7.2f} s")
    print(f"tag+project    {times['tag'] + times['project']:7.2f} s (target < 60 s on 2 cores)")


if __name__ == "__main__":
    main()
