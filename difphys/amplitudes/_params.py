"""Standard Model parameters: MadGraph ``sm`` model inputs as array leaves, derived quantities.

Defaults are the MadGraph5_aMC@NLO ``sm`` model's default ``param_card.dat``. The derived
quantities follow that model's ``parameters.py``:
``MW = sqrt(MZ^2/2 + sqrt(MZ^4/4 - aEW pi MZ^2 / (Gf sqrt2)))``, ``sw^2 = 1 - MW^2/MZ^2``,
``e = sqrt(4 pi aEW)``, ``gs = sqrt(4 pi aS)``, ``vev = 2 MW sw / e``.
Changing any value (``eqx.tree_at`` or :meth:`SMParams.replace`) neither retraces nor recompiles.
"""

from __future__ import annotations

import math
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from .._checks import is_concrete

#: SLHA blocks: (block, pdg/index) -> field name.
_CARD_ENTRIES = {
    ("SMINPUTS", 1): "aEWM1",
    ("SMINPUTS", 2): "Gf",
    ("SMINPUTS", 3): "aS",
    ("MASS", 5): "MB",
    ("MASS", 6): "MT",
    ("MASS", 15): "MTA",
    ("MASS", 23): "MZ",
    ("MASS", 25): "MH",
    ("YUKAWA", 5): "ymb",
    ("YUKAWA", 6): "ymt",
    ("YUKAWA", 15): "ymtau",
    ("DECAY", 6): "WT",
    ("DECAY", 23): "WZ",
    ("DECAY", 24): "WW",
    ("DECAY", 25): "WH",
}

_DEFAULTS = {
    "aEWM1": 132.507,
    "Gf": 1.16639e-5,
    "aS": 0.118,
    "MZ": 91.188,
    "MT": 173.0,
    "MB": 4.7,
    "MH": 125.0,
    "MTA": 1.777,
    "WZ": 2.441404,
    "WW": 2.0476,
    "WT": 1.4915,
    "WH": 6.382339e-3,
    "ymb": 4.7,
    "ymt": 173.0,
    "ymtau": 1.777,
}


def _set_once(values: dict, seen: dict, name: str, value: float, lineno: int) -> None:
    if name in seen:
        raise ValueError(f"duplicate entry for {name} (first given on line {seen[name]})")
    seen[name] = lineno
    values[name] = value


class SMParams(eqx.Module):
    """Standard Model inputs (GeV units; ``aEWM1 = 1/alpha_EW(MZ)``, ``Gf`` in GeV^-2).

    All fields are scalar float arrays (PyTree leaves), so ``jax.grad`` with respect to the
    parameters works and a new value does not recompile a jitted matrix element. Widths are
    fixed widths used in s-channel propagators.
    """

    aEWM1: Array
    Gf: Array
    aS: Array
    MZ: Array
    MT: Array
    MB: Array
    MH: Array
    MTA: Array
    WZ: Array
    WW: Array
    WT: Array
    WH: Array
    ymb: Array
    ymt: Array
    ymtau: Array

    def __init__(self, **values):
        unknown = set(values) - set(_DEFAULTS)
        if unknown:
            raise ValueError(
                f"unknown SM parameter(s) {sorted(unknown)}; known: {sorted(_DEFAULTS)}"
            )
        for name, default in _DEFAULTS.items():
            value = jnp.asarray(values.get(name, default), dtype=float)
            if value.shape != ():
                raise ValueError(f"SM parameter {name} must be a scalar; got shape {value.shape}")
            setattr(self, name, value)
        self._check()

    def _check(self) -> None:
        """Eager physical-range checks (skipped for traced values, e.g. under ``jax.grad``):
        every input finite; masses, widths and Yukawa masses >= 0; ``aEWM1``, ``Gf``, ``aS``
        and ``MZ`` > 0; and ``MZ^4/4 >= pi alpha MZ^2 / (sqrt2 Gf)`` so that MW is real."""
        leaves = [getattr(self, name) for name in _DEFAULTS]
        if not is_concrete(*leaves):
            return
        v = {name: float(getattr(self, name)) for name in _DEFAULTS}
        bad = [name for name, x in v.items() if not math.isfinite(x)]
        if bad:
            raise ValueError(f"SM parameter(s) {bad} are not finite: "
                             + ", ".join(f"{n} = {v[n]}" for n in bad))
        negative = [n for n in v if n[0] in "MWy" and v[n] < 0]
        if negative:
            raise ValueError("masses, widths and Yukawa masses must be >= 0; got "
                             + ", ".join(f"{n} = {v[n]}" for n in negative))
        for name in ("aEWM1", "Gf", "aS", "MZ"):
            if v[name] <= 0:
                raise ValueError(f"SM parameter {name} must be > 0; got {v[name]}")
        mz2 = v["MZ"] ** 2
        if mz2**2 / 4 < math.pi * mz2 / (v["aEWM1"] * v["Gf"] * math.sqrt(2.0)):
            raise ValueError(f"no real W mass for MZ = {v['MZ']}, aEWM1 = {v['aEWM1']}, "
                             f"Gf = {v['Gf']} (MZ^4/4 < pi alpha MZ^2/(sqrt2 Gf))")

    def replace(self, **values) -> SMParams:
        """A copy with some inputs changed (e.g. ``params.replace(MZ=91.0)``)."""
        current = {name: getattr(self, name) for name in _DEFAULTS}
        current.update(values)
        return SMParams(**current)

    # Derived quantities (MadGraph sm model parameters.py).
    @property
    def aEW(self) -> Array:
        return 1.0 / self.aEWM1

    @property
    def MW(self) -> Array:
        mz2 = self.MZ**2
        return jnp.sqrt(
            mz2 / 2 + jnp.sqrt(mz2**2 / 4 - self.aEW * math.pi * mz2 / (self.Gf * math.sqrt(2.0)))
        )

    @property
    def sw2(self) -> Array:
        return 1.0 - self.MW**2 / self.MZ**2

    @property
    def sw(self) -> Array:
        return jnp.sqrt(self.sw2)

    @property
    def cw(self) -> Array:
        return self.MW / self.MZ

    @property
    def ee(self) -> Array:
        """Electric charge ``e = sqrt(4 pi aEW)``."""
        return 2.0 * jnp.sqrt(self.aEW) * math.sqrt(math.pi)

    @property
    def gs(self) -> Array:
        """Strong coupling ``gs = sqrt(4 pi aS)``."""
        return 2.0 * jnp.sqrt(self.aS) * math.sqrt(math.pi)

    @property
    def g1(self) -> Array:
        return self.ee / self.cw

    @property
    def gw(self) -> Array:
        return self.ee / self.sw

    @property
    def vev(self) -> Array:
        return 2.0 * self.MW * self.sw / self.ee

    @property
    def yb(self) -> Array:
        return self.ymb * math.sqrt(2.0) / self.vev

    @property
    def yt(self) -> Array:
        return self.ymt * math.sqrt(2.0) / self.vev

    def z_couplings(self, t3: float, charge: float) -> tuple[Array, Array]:
        """``(cl, cr)`` of the Z to a fermion: ``e/(sw cw) (T3 - Q sw^2, -Q sw^2)``."""
        gz = self.ee / (self.sw * self.cw)
        return gz * (t3 - charge * self.sw2), gz * (-charge * self.sw2)

    def photon_couplings(self, charge: float) -> tuple[Array, Array]:
        """``(cl, cr) = (e Q, e Q)``."""
        return self.ee * charge, self.ee * charge

    def w_couplings(self) -> tuple[Array, Array]:
        """``(cl, cr) = (gw / sqrt2, 0)`` (CKM = 1)."""
        return self.gw / math.sqrt(2.0), jnp.zeros_like(self.gw)

    # SLHA / MadGraph param_card I/O.
    @classmethod
    def from_param_card(cls, path: str | Path, *, backend: str = "difphys") -> SMParams:
        """Read a MadGraph/SLHA ``param_card.dat`` (blocks MASS, SMINPUTS, YUKAWA, DECAY).

        Other blocks (``SPINFO``, ``QNUMBERS``, mixing matrices, text entries) are skipped
        unread; missing entries keep their defaults. A malformed line of a block it reads,
        an entry given twice and an unphysical value (NaN, a negative mass or width,
        ``aEWM1 <= 0``; see :class:`SMParams`) raise ``ValueError`` naming the file (and
        line). ``backend="pyslha"`` parses the file with pyslha (the ``hep`` extra) instead
        and takes the same entries from its blocks and decays.
        """
        path = Path(path)
        if backend == "pyslha":
            return cls._from_pyslha(path)
        if backend != "difphys":
            raise ValueError(f"backend must be 'difphys' or 'pyslha'; got {backend!r}")
        values: dict[str, float] = {}
        seen: dict[str, int] = {}
        block = None
        for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            head = fields[0].upper()
            where = f"{path}:{lineno}: {raw.strip()!r}"
            try:
                if head == "BLOCK":
                    if len(fields) < 2:
                        raise ValueError("BLOCK without a name")
                    block = fields[1].upper()
                elif head == "DECAY":
                    if len(fields) < 3:
                        raise ValueError("DECAY needs a PDG id and a width")
                    block = "DECAY"
                    key = ("DECAY", abs(int(fields[1])))
                    if key in _CARD_ENTRIES:
                        _set_once(values, seen, _CARD_ENTRIES[key], float(fields[2]), lineno)
                elif block == "DECAY":
                    [float(x) for x in fields]  # branching-ratio line: BR, NDA, ids
                elif block is None:
                    raise ValueError("entry outside any BLOCK")
                elif block in ("MASS", "SMINPUTS", "YUKAWA"):
                    if len(fields) != 2:
                        raise ValueError(f"expected 'index value' in BLOCK {block}")
                    key = (block, abs(int(fields[0])))
                    if key in _CARD_ENTRIES:
                        _set_once(values, seen, _CARD_ENTRIES[key], float(fields[1]), lineno)
                # any other block (SPINFO's text, QNUMBERS, mixings): not read, not checked
            except ValueError as err:
                raise ValueError(f"malformed param card line {where}: {err}") from None
        try:
            return cls(**values)
        except ValueError as err:
            raise ValueError(f"param card {path}: {err}") from None

    @classmethod
    def _from_pyslha(cls, path: Path) -> SMParams:
        from .._extras import require

        pyslha = require("pyslha", "hep", "from_param_card(backend='pyslha')")
        try:
            doc = pyslha.read(str(path), ignoreblocks=[], ignorenomass=True)
        except Exception as err:  # pyslha raises its own ParseError and plain exceptions
            raise ValueError(f"pyslha cannot read param card {path}: {err}") from None
        values = {}
        for (block, idx), name in _CARD_ENTRIES.items():
            if block == "DECAY":
                for pid in (idx, -idx):
                    if pid in doc.decays:
                        values[name] = float(doc.decays[pid].totalwidth)
                        break
            elif block in doc.blocks:
                entries = doc.blocks[block]
                for key in (idx, -idx):
                    if key in entries:
                        values[name] = float(entries[key])
                        break
        try:
            return cls(**values)
        except ValueError as err:
            raise ValueError(f"param card {path}: {err}") from None

    def to_param_card(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write a MadGraph-style ``param_card.dat``; refuses to overwrite unless asked."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        path.write_text(self.param_card_text())
        return path

    def param_card_text(self) -> str:
        """The MadGraph-style ``param_card.dat`` (SLHA) text of these values, as written by
        :meth:`to_param_card` and in the ``<slha>`` header of LHE files."""
        by_block: dict[str, list[tuple[int, str]]] = {}
        for (block, idx), name in _CARD_ENTRIES.items():
            by_block.setdefault(block, []).append((idx, name))
        lines = [
            "######################################################################",
            "## PARAM_CARD written by difphys (MadGraph sm model conventions)   ##",
            "######################################################################",
        ]
        for block in ("MASS", "SMINPUTS", "YUKAWA"):
            lines.append(f"BLOCK {block} #")
            for idx, name in sorted(by_block[block]):
                lines.append(f"  {idx:5d} {float(getattr(self, name)):.16e} # {name}")
        for idx, name in sorted(by_block["DECAY"]):
            lines.append(f"DECAY {idx:5d} {float(getattr(self, name)):.16e} # {name}")
        return "\n".join(lines) + "\n"
