"""Observed galaxies in, prediction files out: readers for MaNGA DAP MAPS (+ Pipe3D VAC) and a
generic IFU layout, and the FITS/PNG writer of a prediction on the observed spaxel grid."""

from exsitu.sky.observation import read_observation
from exsitu.sky.observed import ChannelMap, ObservedGalaxy
from exsitu.sky.output import PredictionMaps, write_prediction

__all__ = ["ChannelMap", "ObservedGalaxy", "PredictionMaps", "read_observation", "write_prediction"]
