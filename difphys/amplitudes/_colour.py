"""SU(3) colour algebra and colour matrices, computed numerically once per process.

Generators ``t^a = lambda^a / 2`` (Gell-Mann), ``Tr(t^a t^b) = delta^{ab} / 2``; the colour-ordered
decompositions use ``T^a = sqrt(2) t^a`` (``Tr(T^a T^b) = delta^{ab}``) and
``(F^a)_{bc} = i sqrt(2) f^{bac}``, for which the colour-ordered Feynman rules of
Dixon (hep-ph/9601359) and Del Duca, Dixon, Maltoni (hep-ph/9910563) hold.
"""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np

N_COLOURS = 3
C_F = 4.0 / 3.0
C_A = 3.0


@cache
def gell_mann() -> np.ndarray:
    """The eight Gell-Mann matrices ``lambda^a``, shape (8, 3, 3)."""
    lam = np.zeros((8, 3, 3), dtype=np.complex128)
    lam[0][0, 1] = lam[0][1, 0] = 1
    lam[1][0, 1], lam[1][1, 0] = -1j, 1j
    lam[2][0, 0], lam[2][1, 1] = 1, -1
    lam[3][0, 2] = lam[3][2, 0] = 1
    lam[4][0, 2], lam[4][2, 0] = -1j, 1j
    lam[5][1, 2] = lam[5][2, 1] = 1
    lam[6][1, 2], lam[6][2, 1] = -1j, 1j
    lam[7] = np.diag([1, 1, -2]) / np.sqrt(3)
    return lam


def generators() -> np.ndarray:
    """``t^a = lambda^a / 2``, shape (8, 3, 3)."""
    return gell_mann() / 2


@cache
def structure_constants() -> np.ndarray:
    """``f^{abc} = -2 i Tr([t^a, t^b] t^c)``, real, shape (8, 8, 8)."""
    t = generators()
    comm = np.einsum("aij,bjk->abik", t, t) - np.einsum("bij,ajk->abik", t, t)
    f = -2j * np.einsum("abij,cji->abc", comm, t)
    return f.real


def quark_line_tensor(order: tuple[int, ...]) -> np.ndarray:
    """``(T^{a_order[0]} ... T^{a_order[-1]})_{ij}`` as a tensor over (a_0, ..., a_{n-1}, i, j).

    ``order`` lists gluon labels 0..n-1 from the quark end; tensor axis k is gluon k's index.
    """
    n = len(order)
    big_t = np.sqrt(2.0) * generators()
    letters = "abcdefgh"[:n]
    idx = "pqrstuvw"
    terms = [f"{letters[g]}{idx[k]}{idx[k + 1]}" for k, g in enumerate(order)]
    spec = ",".join(terms) + f"->{letters}{idx[0]}{idx[n]}"
    return np.einsum(spec, *([big_t] * n))


def adjoint_chain_tensor(order: tuple[int, ...], first: int, last: int, n: int) -> np.ndarray:
    """DDM colour factor ``(F^{a_order[0]} ... F^{a_order[-1]})_{a_first a_last}`` over all n labels."""
    f = structure_constants()
    big_f = 1j * np.sqrt(2.0) * np.transpose(f, (1, 0, 2))  # (F^a)_{bc} = i sqrt2 f^{bac}
    letters = "abcdefghij"[:n]
    idx = "klmnopqrst"
    terms = []
    for k, g in enumerate(order):
        left = letters[first] if k == 0 else idx[k]
        right = letters[last] if k == len(order) - 1 else idx[k + 1]
        terms.append(f"{letters[g]}{left}{right}")
    spec = ",".join(terms) + f"->{letters}"
    return np.einsum(spec, *([big_f] * len(order)))


def colour_matrix(tensors: list[np.ndarray]) -> np.ndarray:
    """``C_{kl} = sum_colours c_k c_l^*`` for colour tensors of equal shape."""
    flat = np.stack([t.reshape(-1) for t in tensors])
    return flat @ flat.conj().T


@cache
def quark_line_colour_matrix(n_gluons: int) -> tuple[tuple[tuple[int, ...], ...], np.ndarray]:
    """Orderings (all permutations of the gluons) and their colour matrix for q qbar + n g."""
    orders = tuple(itertools.permutations(range(n_gluons)))
    return orders, colour_matrix([quark_line_tensor(o) for o in orders])


@cache
def gluon_colour_matrix(n: int) -> tuple[tuple[tuple[int, ...], ...], np.ndarray]:
    """DDM orderings ``(0, sigma, n-1)`` and colour matrix for n gluons."""
    middle = tuple(itertools.permutations(range(1, n - 1)))
    orders = tuple((0, *m, n - 1) for m in middle)
    return orders, colour_matrix([adjoint_chain_tensor(m, 0, n - 1, n) for m in middle])
