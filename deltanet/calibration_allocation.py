"""Calibration, part 3: sharing a MAC-density target among layers (water-filling, greedy by error per
MAC saved). See ``deltanet.calibrate``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np


# --------------------------------------------------------------------------------------
# allocation
# --------------------------------------------------------------------------------------


def water_fill(macs: Sequence[float], p0: Sequence[float], target: float, dense: Iterable[int] = ()) -> np.ndarray:
    """Per-layer densities ``min(p, p0_l)`` with one common ``p`` so that the MAC-weighted mean is ``target``.

    Layers in ``dense`` keep ``p0_l`` (exact deltas). If the target cannot be met even at
    ``p = 0`` the others get 0; if it is above the exact density everything gets ``p0``.
    """
    macs = np.asarray(macs, np.float64)
    p0 = np.asarray(p0, np.float64)
    dense = set(dense)
    fixed = np.array([i in dense for i in range(len(macs))])
    budget = target * macs.sum() - (macs[fixed] * p0[fixed]).sum()
    free = ~fixed

    def spent(p):
        return (macs[free] * np.minimum(p, p0[free])).sum()

    if budget <= 0:
        return np.where(fixed, p0, 0.0)
    if spent(1.0) <= budget:
        return p0.copy()
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if spent(mid) > budget:
            hi = mid
        else:
            lo = mid
    return np.where(fixed, p0, np.minimum(lo, p0))


def greedy_allocation(macs: Sequence[float], densities: np.ndarray, errors: np.ndarray, target: float) -> np.ndarray:
    """TEAL's greedy allocator over discrete sparsity levels.

    Args:
        macs: dense MACs per layer ``(L,)``.
        densities: ``(L, K)`` density of each layer at each level (level 0: exact deltas),
            non-increasing along K.
        errors: ``(L, K)`` output error with only that layer at that level (level 0: 0).
        target: MAC density to reach.

    Returns:
        int ``(L,)``: the chosen level per layer. Starting from level 0 everywhere, the step
        with the least error increase per MAC saved is taken until the MAC-weighted density
        is ``<= target`` (or no layer can go further).
    """
    macs = np.asarray(macs, np.float64)
    dens = np.asarray(densities, np.float64)
    err = np.asarray(errors, np.float64)
    n_layers, n_levels = dens.shape
    level = np.zeros(n_layers, int)
    total = macs.sum()

    def current():
        return float((macs * dens[np.arange(n_layers), level]).sum() / total)

    while current() > target:
        best, best_cost = -1, math.inf
        for i in range(n_layers):
            k = level[i]
            # skip levels that save nothing (a flat stretch of the density curve)
            j = k + 1
            while j < n_levels and dens[i, j] >= dens[i, k]:
                j += 1
            if j >= n_levels:
                continue
            saved = macs[i] * (dens[i, k] - dens[i, j])
            cost = max(err[i, j] - err[i, k], 0.0) / saved
            if cost < best_cost:
                best, best_cost = i, cost
        if best < 0:
            break
        k = level[best] + 1
        while k < n_levels - 1 and dens[best, k] >= dens[best, level[best]]:
            k += 1
        level[best] = k
    return level
