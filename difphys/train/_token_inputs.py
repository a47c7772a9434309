"""What a masked-particle tokeniser sees, and how to tell whether its tokens carry information:
a rank-Gauss feature transform, the token / reveal split, per-feature R^2 of the tokens and the
context-free baseline of a masked-particle loss.

The rank-Gauss transform and the diagnostics are NumPy: they are fitted or evaluated once on a
pool of jets before training, outside any gradient. scikit-learn's ``QuantileTransformer``
does the same map but is not a difphys dependency, and it cannot hold entries out of the fit
(the neutral particles' impact parameters, exactly 0, would be a third of every d0 sample).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import ndtr, ndtri

from .._checks import check_count, check_finite
from ..nn import TOKEN_FEATURES

#: Indices of the ParT features (``difphys.io.PART_FEATURES``) of d0, d0 error, dz, dz error:
#: zero for neutral particles, which have no track.
IMPACT_FEATURES = (11, 12, 13, 14)
#: Index of the charge feature (0 for neutral particles).
CHARGE_FEATURE = 5
def neutral_impact_mask(features) -> np.ndarray:
    """``(..., d)`` bool: the impact-parameter entries of neutral particles (no track), to be
    held out of a :class:`RankGauss` fit and kept at their value (0)."""
    features = np.asarray(features)
    if features.ndim < 1 or features.shape[-1] <= CHARGE_FEATURE:
        raise ValueError(f"features must have the 17 ParT particle features on the last axis; "
                         f"got shape {features.shape}")
    out = np.zeros(features.shape, bool)
    neutral = features[..., CHARGE_FEATURE] == 0
    for i in IMPACT_FEATURES:
        out[..., i] = neutral
    return out


class RankGauss(NamedTuple):
    """Per-feature map ``z = Phi^-1(F(x))`` onto a standard normal, ``F`` the empirical CDF of
    the pool (``n_quantiles`` quantiles, linear in between; tied values share their mean
    probability). Monotone non-decreasing in every feature and, within the fitted range of a
    continuous feature, inverted by :meth:`inverse`; values beyond the range map to the
    extreme quantiles' ``z`` (about +-3.3 for 1,000 quantiles). Entries marked ``exclude``
    (e.g. :func:`neutral_impact_mask`) are neither fitted nor transformed.

    Fields: ``values[i]`` (strictly increasing) and ``probs[i]`` of feature ``i``.
    """

    values: tuple
    probs: tuple

    @classmethod
    def fit(cls, x, mask, *, exclude=None, n_quantiles: int = 1000) -> RankGauss:
        """Fit on the real particles (``mask (...,)``) of ``x (..., d)``, leaving out the
        entries where ``exclude (..., d)`` is true."""
        x = np.asarray(x, np.float64)
        mask = np.asarray(mask, bool)
        if x.shape[:-1] != mask.shape:
            raise ValueError(f"mask shape {mask.shape} does not match x {x.shape[:-1]}")
        if not np.all(np.isfinite(x[mask])):
            raise ValueError("x has NaN or infinite values on real particles")
        if n_quantiles < 2:
            raise ValueError(f"n_quantiles must be at least 2; got {n_quantiles}")
        keep = np.broadcast_to(mask[..., None], x.shape)
        if exclude is not None:
            keep = keep & ~np.asarray(exclude, bool)
        values, probs = [], []
        for i in range(x.shape[-1]):
            col = x[..., i][keep[..., i]]
            if len(col) < 2:
                raise ValueError(f"feature {i} has fewer than 2 entries to fit")
            p = (np.arange(n_quantiles) + 0.5) / n_quantiles
            q = np.quantile(col, p)
            u, inverse = np.unique(q, return_inverse=True)
            pu = np.bincount(inverse, weights=p) / np.bincount(inverse)
            values.append(u)
            probs.append(pu)
        return cls(tuple(values), tuple(probs))

    def transform(self, x, exclude=None) -> np.ndarray:
        """``z (..., d)`` float32; excluded entries keep their value."""
        x = np.asarray(x, np.float64)
        if x.shape[-1] != len(self.values):
            raise ValueError(f"x has {x.shape[-1]} features; the transform was fitted on "
                             f"{len(self.values)}")
        z = np.empty_like(x)
        for i, (v, p) in enumerate(zip(self.values, self.probs, strict=True)):
            z[..., i] = ndtri(np.interp(x[..., i], v, p)) if len(v) > 1 else 0.0
        if exclude is not None:
            z = np.where(exclude, x, z)
        return z.astype(np.float32)

    def inverse(self, z) -> np.ndarray:
        """``x (..., d)`` float64 from ``z``: the inverse on the fitted range."""
        z = np.asarray(z, np.float64)
        return np.stack([np.interp(ndtr(z[..., i]), p, v)
                         for i, (v, p) in enumerate(zip(self.values, self.probs, strict=True))],
                        axis=-1)


def token_r2(tokens, values, mask) -> np.ndarray:
    """Fraction of the variance of each column of ``values (..., k)`` over the real particles
    explained by the token: ``1 - sum_t n_t var_t / (N var)``, the R^2 of predicting a feature
    by its token's mean. 0: the tokens carry nothing of that feature; 1: they fix it."""
    mask = np.asarray(mask, bool)
    if np.shape(tokens) != mask.shape or np.shape(values)[:-1] != mask.shape:
        raise ValueError(f"tokens {np.shape(tokens)}, values {np.shape(values)} (with a last "
                         f"feature axis) and mask {mask.shape} must share their shape")
    t = np.asarray(tokens)[mask]
    v = np.asarray(values, np.float64)[mask]
    if len(t) == 0:
        raise ValueError("no real particles")
    total = v.var(axis=0) * len(t)
    counts = np.bincount(t)
    means = np.stack([np.bincount(t, weights=v[:, j], minlength=len(counts))
                      for j in range(v.shape[1])], axis=1) / np.maximum(counts, 1)[:, None]
    within = np.sum((v - means[t]) ** 2, axis=0)
    return np.where(total > 0, 1.0 - within / np.where(total > 0, total, 1.0), 0.0)


class ContextFreeBaseline(NamedTuple):
    """:func:`context_free_baseline`: the cross entropy (nats) of the lookup on the evaluation
    particles, the token entropy there (the loss of the marginal frequencies) and the number
    of revealed-feature cells."""

    cross_entropy: float
    entropy: float
    cells: int


def context_free_baseline(revealed_fit, tokens_fit, revealed_eval, tokens_eval, *,
                          codebook_size: int, bins: int = 8, alpha: float = 0.5
                          ) -> ContextFreeBaseline:
    """The masked-particle loss reachable without any jet context: each particle's revealed
    features ``(P, r)`` are cut into ``bins`` quantile bins per feature (edges from the fit
    sample), and a lookup table ``p(token | cell)`` with add-``alpha`` smoothing, fitted on
    ``(revealed_fit, tokens_fit)``, is scored on the evaluation particles. A masked-particle
    model must go below ``cross_entropy`` to show it learned anything from the jet."""
    check_count(codebook_size, "codebook_size")
    check_count(bins, "bins")
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha (add-alpha smoothing) must be finite and > 0; got {alpha!r}")
    rf, re_ = np.asarray(revealed_fit, np.float64), np.asarray(revealed_eval, np.float64)
    tf, te = np.asarray(tokens_fit, np.int64), np.asarray(tokens_eval, np.int64)
    if rf.ndim != 2 or re_.ndim != 2 or rf.shape[1] != re_.shape[1]:
        raise ValueError("revealed features must be (particles, r) arrays with equal r")
    if len(rf) != len(tf) or len(re_) != len(te):
        raise ValueError("revealed features and tokens must have the same particle count")
    if min(tf.min(initial=0), te.min(initial=0)) < 0 or max(tf.max(initial=0),
                                                            te.max(initial=0)) >= codebook_size:
        raise ValueError(f"tokens must lie in [0, {codebook_size})")
    edges = [np.quantile(rf[:, j], np.linspace(0, 1, bins + 1)[1:-1]) for j in range(rf.shape[1])]

    def cell(r):
        idx = np.zeros(len(r), np.int64)
        for j, e in enumerate(edges):
            idx = idx * bins + np.searchsorted(e, r[:, j], side="right")
        return idx

    cells = bins ** rf.shape[1]
    table = np.full((cells, codebook_size), float(alpha))
    np.add.at(table, (cell(rf), tf), 1.0)
    log_p = np.log(table / table.sum(axis=1, keepdims=True))
    ce = float(-np.mean(log_p[cell(re_), te]))
    freq = np.bincount(te, minlength=codebook_size) / len(te)
    nz = freq[freq > 0]
    return ContextFreeBaseline(ce, float(-np.sum(nz * np.log(nz))), int(cells))


class TokenInputs(NamedTuple):
    """What a tokeniser reads: the ParT feature indices ``features`` (by default
    :data:`difphys.nn.TOKEN_FEATURES`, none of them revealed) after an optional
    :class:`RankGauss` ``transform`` (neutral particles' impact parameters held out and kept
    at 0). On ParT's standardised features Delta R (scaled x4) dominates a K-means metric and
    the tokens explain almost none of the d0 variance; rank-Gauss puts every feature on the
    same scale."""

    features: tuple
    transform: RankGauss | None = None

    @classmethod
    def fit(cls, features, mask, *, token_features=None, rank_gauss: bool = True,
            n_quantiles: int = 1000) -> TokenInputs:
        """Fit the transform on the real particles of ``features (..., 17)``."""
        idx = tuple(TOKEN_FEATURES if token_features is None else token_features)
        features = np.asarray(features)
        if features.ndim < 2 or features.shape[-1] <= max(idx):
            raise ValueError(f"features must have the 17 ParT particle features on the last "
                             f"axis; got shape {features.shape}")
        check_finite(features[np.asarray(mask, bool)], "features (real particles)")
        transform = None
        if rank_gauss:
            transform = RankGauss.fit(features[..., idx], mask,
                                      exclude=neutral_impact_mask(features)[..., idx],
                                      n_quantiles=n_quantiles)
        return cls(idx, transform)

    def apply(self, features) -> np.ndarray:
        """The tokeniser input ``(..., len(self.features))`` float32 of ``features (..., 17)``."""
        features = np.asarray(features)
        x = features[..., self.features]
        if self.transform is None:
            return x.astype(np.float32)
        held_out = neutral_impact_mask(features)[..., self.features]
        return self.transform.transform(x, exclude=held_out)
