"""LHAPDF ``lhagrid1`` grids (Buckley et al., "LHAPDF6", arXiv:1412.7420, section 4) in JAX.

Hand-written because LHAPDF's own Python bindings are C++ (not differentiable, not jit-able) and
no maintained JAX package reads these grids. The file holds, after a ``---`` separated header,
one or more subgrids in Q: a line of x knots, a line of Q knots (GeV), a line of PDG ids
(21 = gluon) and ``nx * nq`` lines of ``x f(x, Q)`` (x major).

Interpolation: four-point Lagrange polynomials in ``ln x`` and then in ``ln Q^2`` over the four
knots around the point (the window clamped to the subgrid's ends; linear in ``ln Q^2`` for a
subgrid of fewer than four Q knots) -- the cubic interpolation Pythia 8 uses for its internal
``LHAGrid1`` reader, which the tests compare with at 1,000 points. (LHAPDF itself uses cubic
Hermite splines with finite-difference slopes; the two agree to about 1e-4 inside the grid.)
Points outside the grid raise ``ValueError`` when the inputs are concrete; under ``jit`` they are
frozen at the grid's border (LHAPDF's and Pythia's behaviour without extrapolation), a documented
masked result: check ``pdf.inside(x, q)`` where it matters.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from .._checks import is_concrete


def search_path() -> list[Path]:
    """Folders searched for sets: ``$LHAPDF_DATA_PATH`` (colon separated), then the pythia8mc
    wheel's ``share/Pythia8/pdfdata``."""
    paths = [Path(p) for p in os.environ.get("LHAPDF_DATA_PATH", "").split(":") if p]
    try:
        import pythia8mc  # noqa: F401  (only to locate its data folder)

        root = Path(pythia8mc.__file__).resolve().parent
        for up in (root, *root.parents[:4]):
            cand = up / "share" / "Pythia8" / "pdfdata"
            if cand.is_dir():
                paths.append(cand)
                break
    except ImportError:
        pass
    return paths


def find(name: str | os.PathLike, member: int = 0) -> tuple[Path, Path | None]:
    """``(grid file, .info file or None)`` for a set name, a set folder or a ``.dat`` path."""
    path = Path(name)
    if path.suffix == ".dat" and path.is_file():
        info = path.parent / (path.name.rsplit("_", 1)[0] + ".info")
        return path, info if info.is_file() else None
    if path.is_dir():
        candidates = [path]
        name = path.name
    else:
        candidates = [folder / str(name) for folder in search_path()] + list(search_path())
    stem = f"{name}_{member:04d}.dat"
    for folder in candidates:
        dat = folder / stem
        if dat.is_file():
            info = folder / f"{name}.info"
            return dat, info if info.is_file() else None
    looked = ", ".join(str(p) for p in search_path()) or "(none: set LHAPDF_DATA_PATH)"
    raise FileNotFoundError(f"PDF set {str(name)!r} (file {stem}) not found; searched {looked}")


def _read_info(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if ":" in line and not line.lstrip().startswith("#"):
            key, value = line.split(":", 1)
            out[key.strip()] = value.strip()
    return out


def _read_grid(path: Path):
    text = path.read_text()
    blocks = text.split("\n---")
    header = blocks[0]
    if "lhagrid1" not in header:
        raise ValueError(f"{path}: not an LHAPDF 'lhagrid1' grid (header: {header[:80]!r})")
    subgrids = []
    for b, block in enumerate(blocks[1:], start=1):
        lines = [line for line in block.strip().splitlines() if line.strip()]
        if len(lines) < 4:
            continue
        try:
            x = np.array(lines[0].split(), float)
            q = np.array(lines[1].split(), float)
            flavours = tuple(int(v) for v in lines[2].split())
            values = np.array([line.split() for line in lines[3:]], float)
            values = values.reshape(len(x), len(q), len(flavours))
        except ValueError as err:
            raise ValueError(f"{path}: malformed subgrid {b}: {err}") from None
        subgrids.append((x, q, flavours, values))
    if not subgrids:
        raise ValueError(f"{path}: no subgrid found")
    x0, _, fl0, _ = subgrids[0]
    for x, _, fl, _ in subgrids[1:]:
        if len(x) != len(x0) or not np.allclose(x, x0) or fl != fl0:
            raise ValueError(f"{path}: subgrids with different x knots or flavours")
    return subgrids


def _lagrange_weights(knots, t):
    """Weights (..., 4) of the Lagrange polynomial through 4 knots (..., 4) at t (...)."""
    w = []
    for i in range(4):
        wi = 1.0
        for j in range(4):
            if j != i:
                wi = wi * (t - knots[..., j]) / (knots[..., i] - knots[..., j])
        w.append(wi)
    return jnp.stack(w, axis=-1)


def _linear_weights(knots, t):
    f = (t - knots[..., 0]) / (knots[..., 1] - knots[..., 0])
    return jnp.stack([1 - f, f], axis=-1)


class PDFSet(eqx.Module):
    """One member of an LHAPDF set: ``x f(x, Q)`` on its grid (array leaves), flavours, alpha_s.

    Build with :func:`load`. ``xfx(pid, x, q)``: ``x f`` for PDG id ``pid`` (21 or 0: gluon;
    a flavour the set lacks is 0), ``x`` in (0, 1], ``q`` in GeV, any broadcastable shapes.
    """

    name: str = eqx.field(static=True)
    flavours: tuple[int, ...] = eqx.field(static=True)
    log_x: Array
    log_q2: tuple[Array, ...]
    values: tuple[Array, ...]  # per subgrid (nx, nq, n_flavours)
    q_range: tuple[float, float] = eqx.field(static=True)
    x_range: tuple[float, float] = eqx.field(static=True)
    alpha_s_mz: float | None = eqx.field(static=True)
    #: the ``.info`` file's alpha_s table (``AlphaS_Qs``, ``AlphaS_Vals``), when it has one
    alpha_s_table: tuple | None = eqx.field(static=True, default=None)

    def inside(self, x, q):
        """True where (x, Q) lies on the grid."""
        x, q = jnp.asarray(x), jnp.asarray(q)
        return ((x >= self.x_range[0]) & (x <= self.x_range[1])
                & (q >= self.q_range[0]) & (q <= self.q_range[1]))

    def _check(self, x, q):
        if is_concrete(x) and is_concrete(q):
            xa, qa = np.asarray(x), np.asarray(q)
            if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(qa))):
                raise ValueError("x and Q must be finite")
            if np.any(xa <= 0) or np.any(xa > 1):
                raise ValueError(f"x must lie in (0, 1]; got values in [{xa.min()}, {xa.max()}]")
            if np.any(xa < self.x_range[0]):
                raise ValueError(f"x = {xa.min():.3g} is below the grid of {self.name} "
                                 f"(x_min = {self.x_range[0]:.3g})")
            lo, hi = self.q_range
            if np.any(qa < lo) or np.any(qa > hi):
                raise ValueError(f"Q outside the grid of {self.name}: [{qa.min():.4g}, "
                                 f"{qa.max():.4g}] GeV not within [{lo:.4g}, {hi:.4g}] GeV")

    def xfx(self, pid: int, x, q) -> Array:
        """``x f_pid(x, Q)`` (dimensionless), interpolated (see the module docstring).

        ``pid``: a parton's PDG id (quarks -6..6, 21 or 0 for the gluon, 22 for the photon);
        a parton the set does not have (the top in a 5-flavour set) gives 0; anything else
        raises ``ValueError``."""
        if isinstance(pid, bool) or not isinstance(pid, (int, np.integer)) or not (
                -6 <= int(pid) <= 6 or int(pid) in (21, 22)):
            raise ValueError(f"pid must be a parton's PDG id (-6..6, 21, 22); got {pid!r}")
        pid = 21 if pid == 0 else int(pid)
        self._check(x, q)
        x = jnp.asarray(x, dtype=self.log_x.dtype)
        q = jnp.asarray(q, dtype=self.log_x.dtype)
        x, q = jnp.broadcast_arrays(x, q)
        if pid not in self.flavours:
            return jnp.zeros_like(x)
        k = self.flavours.index(pid)
        lx = jnp.clip(jnp.log(x), self.log_x[0], self.log_x[-1])
        lq2 = jnp.clip(2 * jnp.log(q), self.log_q2[0][0], self.log_q2[-1][-1])
        nx = self.log_x.shape[0]
        i = jnp.clip(jnp.searchsorted(self.log_x, lx, side="right") - 1, 0, nx - 2)
        i0 = jnp.clip(i - 1, 0, nx - 4)
        xi = i0[..., None] + jnp.arange(4, dtype=i0.dtype)
        wx = _lagrange_weights(self.log_x[xi], lx)
        result = jnp.zeros_like(lx)
        for s, (knots, table) in enumerate(zip(self.log_q2, self.values, strict=True)):
            nq = knots.shape[0]
            width = 4 if nq >= 4 else 2
            j = jnp.clip(jnp.searchsorted(knots, lq2, side="right") - 1, 0, nq - 2)
            j0 = jnp.clip(j - (1 if width == 4 else 0), 0, nq - width)
            qj = j0[..., None] + jnp.arange(width, dtype=j0.dtype)
            wq = (_lagrange_weights if width == 4 else _linear_weights)(knots[qj], lq2)
            grid = table[..., k][xi[..., :, None], qj[..., None, :]]  # (..., 4, width)
            value = jnp.einsum("...a,...ab,...b->...", wx, grid, wq)
            lower = -jnp.inf if s == 0 else knots[0]
            upper = knots[-1]
            # the first subgrid whose Q range holds the point (a threshold belongs to the lower)
            inside = (lq2 > lower) & (lq2 <= upper) if s else (lq2 <= upper)
            if s:
                inside = inside & (lq2 > self.log_q2[s - 1][-1])
            result = jnp.where(inside, value, result)
        return result

    def alpha_s(self, q) -> Array:
        """alpha_s(Q), Q in GeV, differentiable in Q.

        With the ``.info`` file's table (``AlphaS_Qs``/``AlphaS_Vals``, LHAPDF's ``ipol``):
        piecewise cubic Hermite interpolation in ln Q^2 with finite-difference slopes, split at
        repeated Q (flavour thresholds), as LHAPDF's ``AlphaS_Ipol``; Q outside the table is an
        error (when concrete). Otherwise one-loop running with five flavours from alpha_s(MZ)
        (``AlphaS_MZ`` or ``load(..., alpha_s=)``; MZ = 91.1876 GeV)."""
        q = jnp.asarray(q, dtype=self.log_x.dtype)
        if self.alpha_s_table is not None:
            return _alpha_s_ipol(self.name, self.alpha_s_table, q)
        if self.alpha_s_mz is None:
            raise ValueError(f"{self.name} has no alpha_s: pass alpha_s= to difphys.pdf.load")
        b0 = (33 - 2 * 5) / (12 * math.pi)
        return self.alpha_s_mz / (1 + self.alpha_s_mz * b0 * jnp.log(q**2 / 91.1876**2))


def _alpha_s_ipol(name, table, q):
    """Cubic Hermite interpolation of ``table = (Qs, values)`` in ln Q^2 (see PDFSet.alpha_s)."""
    qs, vals = (np.asarray(t, np.float64) for t in table)
    if is_concrete(q):
        qa = np.asarray(q)
        if np.any(~np.isfinite(qa)) or np.any(qa < qs[0]) or np.any(qa > qs[-1]):
            raise ValueError(f"Q outside the alpha_s table of {name} "
                             f"[{qs[0]:.4g}, {qs[-1]:.4g}] GeV")
    t = jnp.log(q**2)
    knots = np.log(qs**2)
    cuts = [0] + [k + 1 for k in range(len(qs) - 1) if qs[k + 1] == qs[k]] + [len(qs)]
    result = jnp.zeros_like(t)
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        x, y = knots[a:b], vals[a:b]
        if len(x) < 2:
            continue
        slope = np.empty_like(y)
        slope[1:-1] = (y[2:] - y[:-2]) / (x[2:] - x[:-2])
        slope[0] = (y[1] - y[0]) / (x[1] - x[0])
        slope[-1] = (y[-1] - y[-2]) / (x[-1] - x[-2])
        k = jnp.clip(jnp.searchsorted(jnp.asarray(x), t, side="right") - 1, 0, len(x) - 2)
        x0, x1 = jnp.asarray(x)[k], jnp.asarray(x)[k + 1]
        h = x1 - x0
        u = (t - x0) / h
        h00, h10 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u
        h01, h11 = -2 * u**3 + 3 * u**2, u**3 - u**2
        ys, ms = jnp.asarray(y), jnp.asarray(slope)
        value = h00 * ys[k] + h10 * h * ms[k] + h01 * ys[k + 1] + h11 * h * ms[k + 1]
        inside = (t >= x[0]) & (t <= x[-1]) if a == 0 else (t > x[0]) & (t <= x[-1])
        result = jnp.where(inside, value, result)
    return result


def load(name: str | os.PathLike, member: int = 0, *, alpha_s: float | None = None) -> PDFSet:
    """Read member ``member`` of an LHAPDF set: a name (``"NNPDF31_lo_as_0118"``), a set folder
    or a ``_NNNN.dat`` path. ``alpha_s``: alpha_s(MZ) for one-loop running, needed when the
    set has no ``.info`` file (the pythia8mc wheel ships grids without them); otherwise the
    ``.info`` file's ``AlphaS_Qs``/``AlphaS_Vals`` table is interpolated (an explicit
    ``alpha_s`` overrides it), and its ``AlphaS_MZ`` is kept."""
    dat, info_path = find(name, member)
    info = _read_info(info_path) if info_path else {}
    subgrids = _read_grid(dat)
    x = subgrids[0][0]
    if np.any(np.diff(x) <= 0) or x[0] <= 0:
        raise ValueError(f"{dat}: x knots must be positive and increasing")
    explicit = alpha_s
    if alpha_s is None and "AlphaS_MZ" in info:
        alpha_s = float(info["AlphaS_MZ"])
    table = None
    if explicit is None and "AlphaS_Qs" in info and "AlphaS_Vals" in info:
        qs, vals = (_info_list(info[k]) for k in ("AlphaS_Qs", "AlphaS_Vals"))
        if len(qs) != len(vals) or len(qs) < 2 or np.any(np.diff(qs) < 0):
            raise ValueError(f"{info_path}: AlphaS_Qs and AlphaS_Vals must be equally long, "
                             "with Q non-decreasing")
        table = (tuple(float(v) for v in qs), tuple(float(v) for v in vals))
    return PDFSet(
        name=dat.name.rsplit("_", 1)[0],
        flavours=subgrids[0][2],
        log_x=jnp.asarray(np.log(x)),
        log_q2=tuple(jnp.asarray(2 * np.log(q)) for _, q, _, _ in subgrids),
        values=tuple(jnp.asarray(v) for _, _, _, v in subgrids),
        q_range=(float(subgrids[0][1][0]), float(subgrids[-1][1][-1])),
        x_range=(float(x[0]), float(x[-1])),
        alpha_s_mz=None if alpha_s is None else float(alpha_s),
        alpha_s_table=table,
    )


def _info_list(text: str) -> np.ndarray:
    """A YAML flow list ``[1.0, 2.0, ...]`` of an LHAPDF ``.info`` file."""
    return np.array([float(v) for v in text.strip().strip("[]").split(",") if v.strip()])
