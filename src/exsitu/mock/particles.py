"""Star particles of one mock galaxy in its own frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Particles:
    """Star particles of one galaxy in its own frame (kpc, km/s, Msun, Gyr, mass fraction)."""

    pos: np.ndarray  # (n, 3)
    vel: np.ndarray  # (n, 3)
    mass: np.ndarray  # (n,)
    age: np.ndarray  # (n,)
    metallicity: np.ndarray  # (n,)
    insitu: np.ndarray  # (n,) int8: 1 in-situ, 0 ex-situ, -1 unassigned

    def __len__(self) -> int:
        return self.age.size

    @staticmethod
    def concat(parts: list[Particles]) -> Particles:
        """All particles of ``parts`` in order."""
        return Particles(*(np.concatenate([getattr(p, f) for p in parts]) for f in Particles.__dataclass_fields__))

    def take(self, keep: np.ndarray) -> Particles:
        """The particles selected by the boolean or index array ``keep``."""
        return Particles(*(getattr(self, f)[keep] for f in Particles.__dataclass_fields__))


def half_mass_radius(pos: np.ndarray, mass: np.ndarray) -> float:
    """3D radius [same unit as pos] enclosing half the mass, about the origin."""
    r = np.linalg.norm(pos, axis=1)
    order = np.argsort(r)
    cum = np.cumsum(mass[order])
    return float(r[order][np.searchsorted(cum, 0.5 * cum[-1])])
