"""Observers: collect statistics of a tensor over calibration batches, return a clipping bound.

As in ``torch.ao.quantization``, observing and choosing quantization parameters are separate:
an observer only answers ``bound()``, the largest magnitude to represent; ``scale_from_bound``
turns it into a scale. tinycl's activations have zero point 0 (UINT8 after ReLU, or INT8
symmetric for the input image), so one number per tensor is the whole range.

``signed=False`` observes ``max(x, 0)`` (codes 0..255); ``signed=True`` observes ``|x|``
(codes -127..127 symmetric). Histogram observers keep ``bins`` bins over ``[0, top]``; when a
later batch exceeds ``top`` it doubles (``top * 2**k``) and adjacent bins are merged, which is
exact (no re-interpolation), at the cost of resolution.
"""

from __future__ import annotations

import math

import torch

from tinycl.errors import TinyclError

UINT8_MAX = 255
INT8_MAX = 127


def check_finite(x: torch.Tensor, what: str = "calibration data") -> None:
    if x.numel() == 0:
        raise TinyclError(f"{what} is empty: at least one sample is needed")
    if not bool(torch.isfinite(x).all()):
        raise TinyclError(f"{what} contains NaN or Inf values")


def qmax_for(signed: bool) -> int:
    return INT8_MAX if signed else UINT8_MAX


def scale_from_bound(bound: float, signed: bool) -> float:
    """Scale mapping ``bound`` to the largest code; an all-zero tensor gets bound 1.0."""
    if bound <= 0:
        bound = 1.0  # any scale represents zeros exactly; keep the multipliers well-defined
    return float(bound) / qmax_for(signed)


class Observer:
    """Base: ``observe(x)`` over batches, then ``bound()``; ``scale()`` for convenience."""

    def __init__(self, signed: bool = False):
        self.signed = signed
        self.count = 0

    def magnitudes(self, x: torch.Tensor) -> torch.Tensor:
        check_finite(x)
        x = x.detach().reshape(-1).double()
        return x.abs() if self.signed else x.clamp(min=0)

    def observe(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def bound(self) -> float:
        raise NotImplementedError

    def scale(self) -> float:
        return scale_from_bound(self.bound(), self.signed)

    def require_data(self) -> None:
        if self.count == 0:
            raise TinyclError("observer saw no data: the calibration set is empty")


class MinMaxObserver(Observer):
    """Largest magnitude seen (min-max calibration, Jacob et al. 2018)."""

    def __init__(self, signed: bool = False):
        super().__init__(signed)
        self.max_value = 0.0

    def observe(self, x: torch.Tensor) -> None:
        mags = self.magnitudes(x)
        self.count += mags.numel()
        self.max_value = max(self.max_value, float(mags.max()))

    def bound(self) -> float:
        self.require_data()
        return self.max_value


class HistogramObserver(Observer):
    """Histogram of magnitudes over ``[0, top]``; the base of percentile and MSE observers."""

    def __init__(self, signed: bool = False, bins: int = 2048):
        super().__init__(signed)
        if bins < 1 or bins & (bins - 1):
            raise TinyclError(f"histogram bins must be a power of two, got {bins}")
        self.bins = bins
        self.top = 0.0
        self.hist = torch.zeros(bins, dtype=torch.float64)

    def observe(self, x: torch.Tensor) -> None:
        mags = self.magnitudes(x)
        self.count += mags.numel()
        batch_max = float(mags.max())
        if self.top == 0.0:
            self.top = batch_max
        elif batch_max > self.top:
            # Grow the range by a power of two so that 2**k old bins merge exactly into one.
            k = math.ceil(math.log2(batch_max / self.top))
            while self.top * 2**k < batch_max:  # guard against log2 rounding
                k += 1
            group = min(2**k, self.bins)
            merged = self.hist.view(-1, group).sum(dim=1) if group < self.bins else self.hist.sum(
                dim=0, keepdim=True)
            self.hist = torch.zeros(self.bins, dtype=torch.float64)
            self.hist[: merged.numel()] = merged
            self.top *= 2**k
        if self.top == 0.0:  # everything observed so far is zero
            self.hist[0] += mags.numel()
            return
        self.hist += torch.histc(mags, bins=self.bins, min=0.0, max=self.top)

    def edges(self) -> torch.Tensor:
        return torch.linspace(0.0, self.top, self.bins + 1, dtype=torch.float64)


class PercentileObserver(HistogramObserver):
    """Upper edge of the first bin where the cumulative count reaches ``percentile`` %."""

    def __init__(self, signed: bool = False, percentile: float = 99.99, bins: int = 2048):
        super().__init__(signed, bins)
        if not 0 < percentile <= 100:
            raise TinyclError(f"percentile must be in (0, 100], got {percentile}")
        self.percentile = percentile

    def bound(self) -> float:
        self.require_data()
        if self.top == 0.0:
            return 0.0
        cumulative = torch.cumsum(self.hist, 0)
        target = self.percentile / 100.0 * float(cumulative[-1])
        index = int(torch.searchsorted(cumulative, torch.tensor([target], dtype=torch.float64)))
        return float(self.edges()[min(index, self.bins - 1) + 1])


class MSEObserver(HistogramObserver):
    """Clipping bound minimising the expected squared quantization error over the histogram.

    Candidates are ``candidates`` evenly spaced bounds ``b`` in ``(0, top]``. Values below ``b``
    cost the uniform rounding noise ``step**2 / 12`` (``step = b / qmax``; a bin centre is no
    good proxy when bins are wider than a step); a bin above ``b`` costs its clipping error
    ``(centre - b)**2 + width**2 / 12`` (values uniform in the bin).
    """

    def __init__(self, signed: bool = False, bins: int = 2048, candidates: int = 256):
        super().__init__(signed, bins)
        self.candidates = candidates

    def bound(self) -> float:
        self.require_data()
        if self.top == 0.0:
            return 0.0
        qmax = qmax_for(self.signed)
        edges = self.edges()
        centres = (edges[:-1] + edges[1:]) / 2
        fractions = torch.arange(1, self.candidates + 1, dtype=torch.float64) / self.candidates
        bounds = self.top * fractions
        width = self.top / self.bins
        rounding_noise = (bounds / qmax).unsqueeze(1) ** 2 / 12
        clipping = (centres.unsqueeze(0) - bounds.unsqueeze(1)) ** 2 + width**2 / 12
        inside = centres.unsqueeze(0) <= bounds.unsqueeze(1)
        per_value = torch.where(inside, rounding_noise.expand_as(clipping), clipping)
        errors = (per_value * self.hist.unsqueeze(0)).sum(dim=1)
        return float(bounds[int(torch.argmin(errors))])


OBSERVERS = {"minmax": MinMaxObserver, "percentile": PercentileObserver, "mse": MSEObserver}


def make_observer(name: str, signed: bool = False) -> Observer:
    if name not in OBSERVERS:
        raise TinyclError(f"unknown observer {name!r}; choose one of {', '.join(OBSERVERS)}")
    return OBSERVERS[name](signed=signed)
