"""Classifier metrics on NumPy arrays: accuracy, ROC curve, ROC AUC, background rejection."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import check_finite


def _binary(scores, is_signal):
    scores = np.asarray(scores, dtype=np.float64).ravel()
    is_signal = np.asarray(is_signal, dtype=bool).ravel()
    if scores.shape != is_signal.shape:
        raise ValueError(f"scores {scores.shape} and labels {is_signal.shape} differ in shape")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinity")
    n_sig, n_bkg = int(is_signal.sum()), int((~is_signal).sum())
    if n_sig == 0 or n_bkg == 0:
        raise ValueError(f"ROC needs both classes; got {n_sig} signal and {n_bkg} background")
    return scores, is_signal, n_sig, n_bkg


def accuracy(logits, labels) -> float:
    """Fraction of examples whose arg-max class equals ``labels``; ``logits (n, k)``."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"accuracy needs logits (n, k) and labels (n,); got {logits.shape} and "
                         f"{labels.shape}")
    if np.any((labels < 0) | (labels >= logits.shape[1])):
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}) (the classes of the logits)")
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def roc_auc(scores, is_signal) -> float:
    """Area under the ROC curve: P(score_sig > score_bkg) + 0.5 P(equal), from mid-ranks
    (the Mann-Whitney U statistic divided by n_sig n_bkg)."""
    scores, is_signal, n_sig, n_bkg = _binary(scores, is_signal)
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    # mid-ranks for ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mid = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(mid, counts)
    u = ranks[is_signal].sum() - n_sig * (n_sig + 1) / 2.0
    return float(u / (n_sig * n_bkg))


def roc_curve(scores, is_signal) -> tuple[np.ndarray, np.ndarray]:
    """Signal and background efficiencies ``(eff_sig, eff_bkg)`` for every threshold
    ``score >= t``, thresholds descending (both start at 0 and end at 1)."""
    scores, is_signal, n_sig, n_bkg = _binary(scores, is_signal)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], is_signal[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tps, fps = np.cumsum(y)[last], np.cumsum(~y)[last]
    return np.r_[0.0, tps / n_sig], np.r_[0.0, fps / n_bkg]


def background_rejection(scores, is_signal, signal_efficiency: float) -> float:
    """``1 / eff_bkg`` at the first threshold reaching ``signal_efficiency`` (infinite if no
    background passes)."""
    if not 0.0 < signal_efficiency <= 1.0:
        raise ValueError(f"signal_efficiency must lie in (0, 1]; got {signal_efficiency}")
    eff_s, eff_b = roc_curve(scores, is_signal)
    k = int(np.argmax(eff_s >= signal_efficiency))
    return float(np.inf) if eff_b[k] == 0 else float(1.0 / eff_b[k])


class BinaryMetrics(NamedTuple):
    """ROC AUC and background rejection ``1 / eff_bkg`` at chosen signal efficiencies.

    ``rejections[i]`` belongs to ``efficiencies[i]``; it is None where no background example
    passes the cut, and ``rejection_lower_bound`` (the number of background examples) is then
    set: the rejection exceeds it."""

    auc: float
    efficiencies: tuple[float, ...]
    rejections: tuple[float | None, ...]
    rejection_lower_bound: int | None

    def rejection_at(self, efficiency: float) -> float | None:
        """The rejection at one of :attr:`efficiencies`."""
        for eff, rej in zip(self.efficiencies, self.rejections, strict=True):
            if np.isclose(eff, efficiency):
                return rej
        raise KeyError(f"no rejection at signal efficiency {efficiency}; "
                       f"computed at {self.efficiencies}")

    def record(self) -> dict:
        """Flat JSON record: ``auc``, ``rejection_at_50`` ... and ``rejection_lower_bound``
        when set (the keys of a run's ``metrics.json``)."""
        out = {"auc": self.auc}
        out.update({f"rejection_at_{round(100 * e)}": r
                    for e, r in zip(self.efficiencies, self.rejections, strict=True)})
        if self.rejection_lower_bound is not None:
            out["rejection_lower_bound"] = self.rejection_lower_bound
        return out


def binary_metrics(scores, is_signal, efficiencies=(0.5, 0.3)) -> BinaryMetrics:
    """ROC AUC and background rejection at each signal efficiency in ``efficiencies`` for
    ``scores (n,)`` (higher: more signal-like) and ``is_signal (n,)``."""
    is_signal = np.asarray(is_signal, dtype=bool)
    rejections, bound = [], None
    for eff in efficiencies:
        rej = background_rejection(scores, is_signal, eff)
        rejections.append(float(rej) if np.isfinite(rej) else None)
        if not np.isfinite(rej):
            bound = int(np.sum(~is_signal))
    return BinaryMetrics(roc_auc(scores, is_signal), tuple(float(e) for e in efficiencies),
                         tuple(rejections), bound)


def class_logit(logits, k: int = 0) -> np.ndarray:
    """log(p_k / (1 - p_k)) of softmax(logits) in float64: a score for class ``k`` against
    the rest (``logits[:, 0] - logits[:, 1]`` for two classes) that does not saturate.

    ``logits``: ``(n, classes)``; returns ``(n,)``."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or not 0 <= int(k) < z.shape[1]:
        raise ValueError(f"class_logit needs logits (n, classes) and a class k in "
                         f"[0, {z.shape[-1] if z.ndim else 0}); got shape {z.shape}, k = {k!r}")
    check_finite(z, "logits")
    rest = np.delete(z, k, axis=1)
    top = rest.max(axis=1, keepdims=True)
    return z[:, k] - (top[:, 0] + np.log(np.exp(rest - top).sum(axis=1)))
