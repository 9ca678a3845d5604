"""Platt scaling of the hurdle's clip classes on validation maps.

Why: with ``cvae.hurdle`` each pixel's probabilities of lying at the low clip, inside it and at the high
clip are a classifier's output (``exsitu.likelihood``), trained under the encoder's latent given the
truth. Under the flow's posterior the latent is uncertain and the predictive's class probability is
the average over its draws. Measured on the default mock's validation maps (universe 42, 2026-12-06),
that average is under-confident: where it gives a pixel a 0.50 chance of the low clip, 0.72 of the
truths lie there; where it gives 0.29, 0.51; where it gives under 0.05, 0.007 against 0.001 observed.
The same bend shows on the test maps of every universe measured (README). The scales of
``exsitu.recalibration`` act on the value inside the clip and cannot move the mass at the clip.

What: each of the two class logits (low and high clip, each against inside) becomes
``slope * logit + shift`` (one slope, one shift per class: ``NoiseScales.clip_slope``, ``clip_low``,
``clip_high``), the multi-class form of Platt scaling (Platt 1999; Guo, Pleiss, Sun & Weinberger 2017,
ICML, "On calibration of modern neural networks", sec. 4.2, matrix and vector scaling). The three
numbers minimise the galaxy-weighted negative log-likelihood of the validation pixels' true classes
under the PREDICTIVE class probabilities, the mean over each pixel's K flow draws of the recalibrated
per-draw probabilities: the probability that the samples put at the clip is what the fit calibrates.
A class no validation pixel holds keeps its shift at 0 (its likelihood would push the shift to -inf).

At most :data:`MAX_PIXELS` galaxy pixels enter the fit, chosen by a hash of (map row, pixel) so that
the choice does not depend on the chunking; their K draws' logits are held (K x 2 floats each).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from exsitu.likelihood import NoiseScales, class_log_probs, clip_classes

#: Galaxy pixels whose draws enter the fit at most (each holds K x 2 float32 logits: 33 MB at K = 64).
MAX_PIXELS = 2**16
#: Knuth's multiplicative hash constant: spreads consecutive pixel indices evenly over [0, 2^32).
_HASH = 2654435761


@dataclass(frozen=True)
class ClassCalibration:
    """The fitted Platt scaling and what it did to the fit's negative log-likelihood [nats per pixel].

    slope, low, high: as ``NoiseScales.clip_slope``, ``clip_low``, ``clip_high``; n_pixels: galaxy
    pixels in the fit; class_share: galaxy-weighted share of those pixels' true classes (low, inside, high).
    """

    slope: float
    low: float
    high: float
    nll_as_trained: float
    nll_fitted: float
    n_pixels: int
    class_share: tuple[float, float, float]

    def scales(self) -> NoiseScales:
        """The noise scales as trained with these classes."""
        return NoiseScales(clip_slope=self.slope, clip_low=self.low, clip_high=self.high)

    def to_dict(self) -> dict[str, float | int | list[float]]:
        return {
            "clip_slope": self.slope,
            "clip_low": self.low,
            "clip_high": self.high,
            "nll_as_trained": self.nll_as_trained,
            "nll_fitted": self.nll_fitted,
            "n_pixels": self.n_pixels,
            "class_share": list(self.class_share),
        }


def kept_pixels(rows: np.ndarray, npix: int, share: float) -> torch.Tensor:
    """(n, P, P) bool: the pixels of maps ``rows`` (their row numbers in the validation subset) that the fit
    keeps, about ``share`` of them, by a hash of (row, pixel) alone."""
    pixels = np.uint64(npix * npix)
    index = np.asarray(rows, dtype=np.uint64)[:, None] * pixels + np.arange(pixels, dtype=np.uint64)
    hashed = (index * np.uint64(_HASH)) % np.uint64(2**32)
    return torch.as_tensor(hashed < np.uint64(min(share, 1.0) * 2**32)).view(len(rows), npix, npix)


def class_rows(
    clip_logits: torch.Tensor, keep: torch.Tensor, truth: torch.Tensor, weights: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fit's rows of one batch of draws.

    clip_logits: (n K, 2, P, P) the draws' class logits as trained (map-major, ``ResidualDraw.clip_logits``);
    keep: (n, P, P) bool, the galaxy pixels that enter; truth: (n, P, P) true fractions; weights: (n,)
    map weights. Returns logits (m, K, 2) float32, true classes (m,) (0 low, 1 inside, 2 high) and
    weights (m,) float64, on the CPU.
    """
    n, p = truth.shape[0], truth.shape[-1]
    per_map = clip_logits.float().reshape(n, -1, 2, p, p)
    logits = per_map.permute(0, 3, 4, 1, 2)[keep.to(per_map.device)]
    classes = clip_classes(truth, eps)[keep.to(truth.device)]
    row_weights = weights.double().to(keep.device)[torch.nonzero(keep)[:, 0]]
    return logits.cpu(), classes.cpu(), row_weights.cpu()


def class_nll(
    logits: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor, slope: torch.Tensor, shifts: torch.Tensor
) -> torch.Tensor:
    """Weighted mean negative log-likelihood [nats per pixel] of the true ``classes`` (m,) under the mean over
    the K draws of softmax(slope * logit + shift, 0 for inside), for ``logits`` (m, K, 2) and ``shifts`` (2,)."""
    predictive = class_log_probs(slope * logits + shifts.to(logits.dtype), dim=-1).exp().mean(1)  # (m, 3)
    picked = predictive.gather(1, classes[:, None]).squeeze(1).double().clamp_min(1e-300)
    return -(weights * picked.log()).sum() / weights.sum()


def fit_class_calibration(logits: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor) -> ClassCalibration:
    """The Platt scaling of the module doc from the fit's rows (:func:`class_rows`, concatenated)."""
    if len(classes) == 0:
        raise ValueError("the clip-class calibration needs at least one validation galaxy pixel")
    present = torch.stack([(classes == c).any() for c in (0, 2)]).double()  # a class nobody holds keeps shift 0
    params = torch.zeros(3, dtype=torch.float64, requires_grad=True)  # log slope, shift low, shift high

    def loss() -> torch.Tensor:
        return class_nll(logits, classes, weights, params[0].exp(), params[1:] * present)

    optimiser = torch.optim.LBFGS([params], lr=1, max_iter=100, tolerance_grad=1e-9, tolerance_change=1e-12,
                                  line_search_fn="strong_wolfe")  # fmt: skip

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        value = loss()
        value.backward()
        return value

    with torch.no_grad():
        before = float(loss())
    optimiser.step(closure)
    with torch.no_grad():
        after = float(loss())
        slope, low, high = float(params[0].exp()), *(float(v) for v in params[1:] * present)
    share = torch.stack([(weights * (classes == c)).sum() for c in range(3)]) / weights.sum()
    if not (np.isfinite([slope, low, high, after]).all() and after <= before):
        # The fit failed to improve on the classes as trained: keep them.
        slope, low, high, after = 1.0, 0.0, 0.0, before
    return ClassCalibration(slope, low, high, before, after, len(classes), tuple(float(v) for v in share))
