"""Target densities: the 40-mode Gaussian mixture, many-well, and |M|^2 on the unit cube.

A target is an ``eqx.Module`` with ``log_prob(x)`` (unnormalised log density, ``-inf`` outside
its support), ``dim``, ``support`` (``"real"`` or ``"unit_cube"``) and, where known, ``log_z``
(log of the normalisation).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_count, check_finite, check_positive
from ..amplitudes import (
    SMParams,
    check_hadronic,
    hadronic_integrand,
    parton_groups,
    process,
    sigma_integrand,
)


class GaussianMixture(eqx.Module):
    """Equal-weight mixture of isotropic Gaussians (normalised: ``log_z = 0``).

    ``gmm40()`` builds the FAB paper's benchmark (Midgley et al., arXiv:2208.01893): 40 modes in
    2D, means uniform in ``[-40, 40]^2``, unit standard deviation.
    """

    means: jax.Array
    std: jax.Array
    support: str = eqx.field(static=True, default="real")

    def __check_init__(self):
        if np.ndim(self.means) != 2:
            raise ValueError(f"means must be (n_modes, dim); got shape {np.shape(self.means)}")
        check_finite(self.means, "means")
        check_positive(self.std, "std")

    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    @property
    def log_z(self) -> float:
        return 0.0

    def log_prob(self, x):
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"the mixture needs points with last axis {self.dim}; got {x.shape}")
        d = x[..., None, :] - self.means.astype(x.dtype)
        std = self.std.astype(x.dtype)
        comp = -0.5 * jnp.sum(d**2, -1) / std**2 - self.dim * jnp.log(std * np.sqrt(2 * np.pi))
        n = jnp.asarray(self.means.shape[0], x.dtype)
        return jax.nn.logsumexp(comp, axis=-1) - jnp.log(n)

    def sample(self, key, n: int):
        k1, k2 = jax.random.split(key)
        idx = jax.random.randint(k1, (n,), 0, self.means.shape[0])
        return self.means[idx] + self.std * jax.random.normal(k2, (n, self.dim), self.means.dtype)

    def mode_of(self, x):
        """Index of the nearest mode for each sample ``x`` (..., dim)."""
        d = jnp.sum((x[..., None, :] - self.means.astype(x.dtype)) ** 2, -1)
        return jnp.argmin(d, axis=-1)


def gmm40(key=None, *, n_modes: int = 40, dim: int = 2, loc_scale: float = 40.0, dtype=None):
    """The FAB paper's 40-mode mixture (fixed seed 0 unless ``key`` is given)."""
    check_count(n_modes, "n_modes")
    check_count(dim, "dim")
    check_positive(loc_scale, "loc_scale")
    key = jax.random.key(0) if key is None else key
    dtype = jnp.result_type(float) if dtype is None else dtype
    means = jax.random.uniform(key, (n_modes, dim), dtype, -loc_scale, loc_scale)
    return GaussianMixture(means=means, std=jnp.asarray(1.0, dtype))


def _double_well_log_z() -> float:
    # int exp(-x^4 + 6 x^2 + x/2) dx by dense trapezoid quadrature (integrand ~ e^-x^4 tails)
    x = np.linspace(-6.0, 6.0, 400_001)
    f = np.exp(-(x**4) + 6 * x**2 + 0.5 * x)
    return float(np.log(np.trapezoid(f, x)) + 0.5 * np.log(2 * np.pi))


class ManyWell(eqx.Module):
    """Product of ``dim // 2`` copies of the 2D double well
    ``log p(x1, x2) = -x1^4 + 6 x1^2 + x1 / 2 - x2^2 / 2`` (the FAB paper's many-well target).

    ``2^(dim/2)`` modes; ``log_z`` is exact up to quadrature (1e-12).
    """

    dim: int = eqx.field(static=True, default=32)
    support: str = eqx.field(static=True, default="real")

    def __check_init__(self):
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 2 \
                or self.dim % 2:
            raise ValueError(f"ManyWell needs an even dim >= 2 (pairs of double wells); "
                             f"got {self.dim!r}")

    @property
    def log_z(self) -> float:
        return (self.dim // 2) * _double_well_log_z()

    def log_prob(self, x):
        x = jnp.asarray(x)
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"ManyWell({self.dim}) needs x with last axis {self.dim}; got {x.shape}"
            )
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return jnp.sum(-(x1**4) + 6 * x1**2 + 0.5 * x1 - 0.5 * x2**2, axis=-1)


class MatrixElementTarget(eqx.Module):
    """``log(|M|^2 w / (2 s) * GEV2_TO_PB)`` on ``[0, 1]^d``: its normalisation is sigma (pb).

    ``w`` is the weight of the process's unit-cube phase-space map (``Process.phase_space``), so
    for ``e+ e- > w+ b w- b~`` this is the 8D Breit-Wigner map around the top mass; points
    outside the open unit cube, or where ``|M|^2 w = 0``, get ``-inf``.

    **Hadron colliders** (``pdf`` given): ``sqrt_s`` is the beams' energy, the process may be a
    multiparticle one (``"p p > t t~"``), ``d`` has two more dimensions for ``x1, x2``
    (:func:`difphys.amplitudes.hadronic_integrand`) and the density is the sum over
    subprocesses; :meth:`subprocess_weights` splits it per subprocess. All subprocesses must
    share one phase space (the same final-state masses).
    """

    params: object
    sqrt_s: jax.Array
    process_name: str = eqx.field(static=True)
    mapping: str = eqx.field(static=True, default="auto")
    support: str = eqx.field(static=True, default="unit_cube")
    pdf: object = None
    scale: object = eqx.field(static=True, default=None)
    beams: tuple = eqx.field(static=True, default=(2212, 2212))

    @property
    def process(self):
        return process(self.process_name)

    @property
    def subprocesses(self) -> tuple:
        proc = self.process
        return tuple(proc) if isinstance(proc, tuple) else (proc,)

    @property
    def dim(self) -> int:
        return self.subprocesses[0].phase_space_dim + (0 if self.pdf is None else 2)

    def subprocess_weights(self, u):
        """``(momenta (..., n, 4), w (..., n_subprocesses))``: the events' momenta (lab frame
        for hadron colliders) and each subprocess's integrand (pb) at ``u``."""
        if self.pdf is None:
            momenta, w = sigma_integrand(self.process, u, self.sqrt_s, self.params,
                                         mapping=self.mapping)
            return momenta, w[..., None]
        proc = self.process
        weights = [None] * len(self.subprocesses)
        momenta = None
        for rep, members, partons in parton_groups(proc):  # one |M|^2 per group
            momenta, w = hadronic_integrand(rep, self.pdf, u, self.sqrt_s, self.params,
                                            self.scale, self.beams, partons=partons)
            for j, m in enumerate(members):
                weights[m] = w[..., j]
        return momenta, jnp.stack(weights, axis=-1)

    def momenta_and_weight(self, u):
        if self.pdf is None:
            return self.process.phase_space(u, self.sqrt_s, self.params, mapping=self.mapping)
        momenta, w = self.subprocess_weights(u)
        return momenta, jnp.sum(w, axis=-1)

    def log_prob(self, u):
        u = jnp.asarray(u)
        eps = jnp.finfo(u.dtype).eps
        inside = jnp.all((u > eps) & (u < 1 - eps), axis=-1)
        u_safe = jnp.where(inside[..., None], u, jnp.full_like(u, 0.5))
        _, w = self.subprocess_weights(u_safe)
        value = jnp.sum(w, axis=-1)
        ok = inside & (value > 0) & jnp.isfinite(value)
        return jnp.where(ok, jnp.log(jnp.where(ok, value, jnp.ones_like(value))), -jnp.inf)


def matrix_element_target(
    process_name: str = "e+ e- > t t~, t > w+ b, t~ > w- b~",
    sqrt_s: float = 1000.0,
    params=None,
    mapping: str = "auto",
    *,
    pdf=None,
    scale=None,
    beams=(2212, 2212),
) -> MatrixElementTarget:
    """The physics target of FAB-meets-diffME (arXiv:2411.16234) by default.

    ``mapping="auto"``: the process's own unit-cube map (Breit-Wigner-mapped for
    ``e+ e- > w+ b w- b~``); ``"flat"``: the plain chain-of-two-body-decays map
    :func:`difphys.phasespace.from_unit_cube`, where the top resonances are not aligned with
    the coordinates. ``pdf`` (a :class:`difphys.pdf.PDFSet`), ``scale`` (muF in GeV) and
    ``beams``: a hadron-collider target at beam energy ``sqrt_s`` (GeV); errors for an
    impossible request (no PDF flavour, scale off the grid, subprocesses with different
    final-state masses) are raised here, before any training.
    """
    if mapping not in ("auto", "flat"):
        raise ValueError(f"mapping must be 'auto' or 'flat'; got {mapping!r}")
    params = SMParams() if params is None else params
    dtype = params.MZ.dtype
    proc = process(process_name)
    root_s = float(sqrt_s)
    if not (np.isfinite(root_s) and root_s > 0):
        raise ValueError(f"sqrt_s must be a finite positive energy (GeV); got {sqrt_s!r}")
    if pdf is None:
        if isinstance(proc, tuple):
            raise ValueError(f"{process_name!r} has {len(proc)} subprocesses: a multiparticle "
                             "process needs a hadron collider (pdf=..., scale=...)")
        threshold = float(np.sum(np.asarray(proc.final_state_masses(params))))
        if root_s <= threshold:
            raise ValueError(f"{process_name!r} is closed at sqrt_s = {root_s} GeV: the final "
                             f"state needs more than {threshold:.6g} GeV (sum of its masses)")
    else:
        subs, scale, beams = check_hadronic(proc, sqrt_s, params, pdf, scale, beams)
        masses = {tuple(np.asarray(s.final_state_masses(params)).round(12)) for s in subs}
        if len(masses) > 1:
            raise ValueError(f"the subprocesses of {process_name!r} have different final-state "
                             f"masses {sorted(masses)}; sample them separately")
    return MatrixElementTarget(
        params=params, sqrt_s=jnp.asarray(sqrt_s, dtype), process_name=process_name,
        mapping=mapping, pdf=pdf, scale=scale, beams=tuple(beams),
    )
