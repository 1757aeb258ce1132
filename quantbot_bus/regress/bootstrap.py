"""The studentized circular block bootstrap behind :mod:`quantbot_bus.regress.stats`.

A *statistic* here is a smooth function ``g`` of the means of a few per-observation moment
columns (the mean: ``g(m) = m₁`` over ``x``; the Sharpe ratio: ``g(m) = m₁ / √(m₂ − m₁²)`` over
``(x, x²)``). A *side* is one sample: one or more independent *segments* (runs), each an
``(n_j, p)`` array of moment observations in time order; its estimate is ``g`` of the pooled
column means. The quantity bootstrapped is a signed sum of side estimates (new − baseline), the
sides being independent of each other.

Standard errors follow Ledoit & Wolf (2008), "Robust performance hypothesis testing with the
Sharpe ratio", Journal of Empirical Finance 15(5), §3: the delta method on the moment means with
a heteroskedasticity-and-autocorrelation-consistent (HAC) long-run variance of the influence
series ``u_t = ∇g(m̄)ᵀ(v_t − v̄_j)``, computed segment by segment (segments are independent;
each is centred on its own mean, so segments whose levels differ do not inflate it):

- on the data: the Bartlett (Newey–West) kernel with lag window equal to the block length ``b``,
  ``γ₀ + 2 Σ_{k<b} (1 − k/b) γ_k``, which is what a block bootstrap with blocks of ``b`` sees;
- on each bootstrap sample: the "natural" block estimator of Götze & Künsch (1996), "Second-order
  correctness of the blockwise bootstrap for stationary observations", Annals of Statistics
  24(5): the mean of the squared (centred) block sums divided by ``b``.

Resampling is the circular block bootstrap of Politis & Romano (1992): per segment
``⌈n/b⌉`` blocks of ``b`` consecutive observations starting anywhere, wrapping around the end;
blocks never cross from one segment into another. The interval is the symmetric studentized one
of Ledoit & Wolf (2008): ``θ̂ ± q·se`` where ``q`` is the ``confidence`` quantile of
``|θ* − θ̂| / se*``.

The block length, unless given, is the Politis & White (2004) automatic choice for the circular
block bootstrap, with the correction of Patton, Politis & White (2009)
(:func:`optimal_block_length`), applied to each segment's influence series.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
_CHUNK_CELLS = 2_000_000  # bootstrap draws per chunk × observations: bounds memory (~50 MB)


@dataclass(frozen=True)
class Smooth:
    """A smooth function of ``p`` column means: ``value`` and ``grad`` map ``(..., p)`` arrays
    of means to ``(...)`` values and ``(..., p)`` gradients."""

    p: int
    value: Callable[[Array], Array]
    grad: Callable[[Array], Array]


def _sharpe_value(m: Array) -> Array:
    var = m[..., 1] - m[..., 0] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        out: Array = m[..., 0] / np.sqrt(var)
    return out


def _sharpe_grad(m: Array) -> Array:
    var = m[..., 1] - m[..., 0] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        d_mean = m[..., 1] / var**1.5
        d_second = -m[..., 0] / (2.0 * var**1.5)
    return np.stack([d_mean, d_second], axis=-1)


MEAN = Smooth(1, lambda m: m[..., 0], np.ones_like)
"""The mean of ``x``; moment columns ``(x,)``."""

SHARPE = Smooth(2, _sharpe_value, _sharpe_grad)
"""The Sharpe ratio ``mean / std`` (population std, no risk-free rate); columns ``(x, x²)``."""


def moment_columns(x: Array, g: Smooth) -> Array:
    """The ``(n, p)`` moment observations of a series for ``g`` (``MEAN`` or ``SHARPE``)."""
    return x[:, None] if g.p == 1 else np.stack([x, x * x], axis=1)


def paired_difference(g: Smooth) -> Smooth:
    """``g(first p columns) − g(last p columns)``: a difference on jointly resampled pairs."""
    p = g.p

    def value(m: Array) -> Array:
        return g.value(m[..., :p]) - g.value(m[..., p:])

    def grad(m: Array) -> Array:
        return np.concatenate([g.grad(m[..., :p]), -g.grad(m[..., p:])], axis=-1)

    return Smooth(2 * p, value, grad)


@dataclass(frozen=True)
class Side:
    """One independent sample: its segments (``(n_j, p)`` moment arrays), its statistic and the
    sign it enters the compared quantity with (+1 new, −1 baseline)."""

    segments: tuple[Array, ...]
    g: Smooth
    sign: float = 1.0


def autocovariances(u: Array, max_lag: int) -> Array:
    """``γ_k = (1/n) Σ_t (u_t − ū)(u_{t+k} − ū)`` for ``k = 0..max_lag``."""
    n = len(u)
    c = u - u.mean()
    return np.array([float(c[: n - k] @ c[k:]) / n for k in range(max_lag + 1)])


def optimal_block_length(u: Array) -> int:
    """Politis & White (2004) / Patton, Politis & White (2009) block length for the circular
    block bootstrap of the mean of ``u``: ``b = (2Ĝ² / D̂)^{1/3} n^{1/3}`` with
    ``Ĝ = Σ λ(k/M)|k|γ̂_k``, ``D̂ = (4/3) ĝ(0)²``, ``ĝ(0) = Σ λ(k/M)γ̂_k`` over ``|k| ≤ M``,
    ``λ`` the flat-top window (1 up to ½, then linear to 0 at 1) and ``M = 2m̂``, ``m̂`` the
    smallest lag after which ``K_n = max(5, √log₁₀ n)`` autocorrelations in a row are below
    ``2√(log₁₀ n / n)``. Rounded up, at least 1, at most ``min(3√n, n/3)``; 1 for ``n < 8``
    or a constant series (no dependence to keep)."""
    n = len(u)
    if n < 8:
        return 1
    kn = max(5, math.ceil(math.sqrt(math.log10(n))))
    m_max = min(math.ceil(math.sqrt(n)) + kn, n - 1)
    acov = autocovariances(u, m_max)
    if not acov[0] > 0:
        return 1
    rho = np.abs(acov / acov[0])
    crit = 2.0 * math.sqrt(math.log10(n) / n)
    m_hat = next(
        (m for m in range(m_max - kn + 1) if np.all(rho[m + 1 : m + kn + 1] < crit)), m_max
    )
    big_m = min(2 * max(m_hat, 1), m_max)
    k = np.arange(1, big_m + 1)
    lam = np.where(k / big_m <= 0.5, 1.0, 2.0 * (1.0 - k / big_m))
    g_hat = 2.0 * float(np.sum(lam * k * acov[1 : big_m + 1]))
    lrv = float(acov[0] + 2.0 * np.sum(lam * acov[1 : big_m + 1]))
    if g_hat == 0.0 or not lrv > 0:
        return 1
    b = (2.0 * g_hat**2 / ((4.0 / 3.0) * lrv**2)) ** (1.0 / 3.0) * n ** (1.0 / 3.0)
    b_max = max(1, math.floor(min(3.0 * math.sqrt(n), n / 3.0)))
    return int(min(max(1, math.ceil(b)), b_max))


def bartlett_lrv(u: Array, b: int) -> float:
    """Long-run variance of ``u`` with the Bartlett kernel, lags ``< b``:
    ``γ₀ + 2 Σ_{k=1}^{b−1} (1 − k/b) γ_k``."""
    acov = autocovariances(u, min(b - 1, len(u) - 1))
    weights = 1.0 - np.arange(1, len(acov)) / b
    return float(acov[0] + 2.0 * np.sum(weights * acov[1:]))


def _influence(seg: Array, grad: Array) -> Array:
    out: Array = (seg - seg.mean(axis=0)) @ grad
    return out


def side_estimate(side: Side, blocks: Sequence[int]) -> tuple[float, float]:
    """``(g(pooled means), HAC variance of it)``; the variance is
    ``Σ_j n_j · LRV_j / N²`` over the segments (Bartlett, lag window ``blocks[j]``)."""
    pooled = np.concatenate(side.segments).mean(axis=0)
    grad = side.g.grad(pooled)
    total = sum(len(s) for s in side.segments)
    var = sum(
        len(s) * bartlett_lrv(_influence(s, grad), b)
        for s, b in zip(side.segments, blocks, strict=True)
    )
    return float(side.g.value(pooled)), var / total**2


def side_blocks(side: Side) -> tuple[int, ...]:
    """The automatic block length of each segment (on its influence series)."""
    grad = side.g.grad(np.concatenate(side.segments).mean(axis=0))
    return tuple(optimal_block_length(_influence(s, grad)) for s in side.segments)


def _draw_side(
    side: Side, blocks: Sequence[int], draws: int, rng: np.random.Generator
) -> tuple[Array, Array]:
    """``draws`` circular-block resamples of a side: their estimates and natural variances.

    Only block totals matter to both. A segment of ``n`` rows has ``n`` circular blocks (one
    per start, read off its prefix sums); a resample is how many times it drew each, so its
    sums are ``counts @ totals`` and the second moments of its projected block sums
    ``counts @ (totals ⊗ totals)``: two matrix products of ``(draws, n)`` counts, never a
    ``(draws, blocks, p)`` array. (Totals are centred on their mean first: the variance does
    not change, and the second moment does not lose digits to a large mean.)"""
    p = side.g.p
    sums = np.zeros((draws, p))
    total = 0
    moments: list[tuple[Array, Array, int]] = []
    rows = np.arange(draws)[:, None]
    for seg, b in zip(side.segments, blocks, strict=True):
        n = len(seg)
        n_blocks = -(-n // b)
        wrapped = np.resize(seg, (n + b, p))  # the segment, then its first b rows
        prefix = np.concatenate([np.zeros((1, p)), np.cumsum(wrapped, axis=0)])
        totals = prefix[b : b + n] - prefix[:n]  # the block starting at each row
        starts = rng.integers(0, n, size=(draws, n_blocks))
        counts = np.bincount((rows * n + starts).ravel(), minlength=draws * n)
        counts = counts.reshape(draws, n).astype(np.float64)
        sums += counts @ totals
        total += n_blocks * b
        centred = totals - totals.mean(axis=0)
        first = counts @ centred  # (draws, p)
        second = counts @ (centred[:, :, None] * centred[:, None, :]).reshape(n, p * p)
        moments.append((first, second.reshape(draws, p, p), n_blocks))
    means = sums / total
    est = side.g.value(means)
    grad = side.g.grad(means)
    var = np.zeros(draws)
    for first, second, n_blocks in moments:
        # the projected block sums' mean and mean square over the resample's blocks
        m1 = np.einsum("dp,dp->d", first, grad) / n_blocks
        m2 = np.einsum("dp,dpq,dq->d", grad, second, grad) / n_blocks
        var += n_blocks * np.maximum(m2 - m1**2, 0.0)  # n* · mean square / b
    return est, var / total**2


@dataclass(frozen=True)
class Bootstrapped:
    """The estimate, its HAC standard error and the bootstrap's studentized statistics
    ``|θ* − θ̂| / se*`` (non-finite ones, from degenerate resamples, count as infinite)."""

    estimate: float
    se: float
    abs_t: Array
    blocks: tuple[int, ...]


def studentized(
    sides: Sequence[Side],
    *,
    n_boot: int,
    rng: np.random.Generator,
    block_length: int | None = None,
) -> Bootstrapped:
    """Bootstrap ``Σ sign·g(side)`` (sides resampled independently)."""
    blocks = [
        side_blocks(s) if block_length is None else (block_length,) * len(s.segments) for s in sides
    ]
    parts = [side_estimate(s, b) for s, b in zip(sides, blocks, strict=True)]
    estimate = sum(s.sign * est for s, (est, _) in zip(sides, parts, strict=True))
    se = math.sqrt(sum(var for _, var in parts))
    cells = sum(len(seg) * seg.shape[1] for s in sides for seg in s.segments)
    chunk = max(1, _CHUNK_CELLS // max(cells, 1))  # blocks ≤ cells: a bound on each chunk
    abs_t: list[Array] = []
    done = 0
    while done < n_boot:
        draws = min(chunk, n_boot - done)
        theta = np.zeros(draws)
        var = np.zeros(draws)
        for s, b in zip(sides, blocks, strict=True):
            est, v = _draw_side(s, b, draws, rng)
            theta += s.sign * est
            var += v
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.abs(theta - estimate) / np.sqrt(var)
        abs_t.append(np.where(np.isfinite(t), t, np.inf))
        done += draws
    flat = tuple(b for side in blocks for b in side)
    return Bootstrapped(float(estimate), se, np.concatenate(abs_t), flat)
