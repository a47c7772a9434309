"""Compiled CPU kernel for the forward Billoir fit (numba).

XLA:CPU runs the fit's per-track 5x3 / 3x3 algebra at a small fraction of the machine's speed
(one Gauss-Newton step costs ~2 us per track and core; docs/vertex.md). This module runs the
same fit -- track checks, weight matrices, seed, Gauss-Newton iterations with the same stopping
rule, vertex covariance, chi2 and validity -- as a plain compiled loop over jets (numba,
``nogil``), split over CPU threads. It has no gradients of its own: :func:`difphys.vertex.fit`
wraps it in a ``custom_vjp`` whose backward pass is the JAX path's implicit differentiation at
the solution found here, so gradients are the same as without the kernel.

The formulas are those of ``_helix.perigee_from_local`` / ``state_at_vertex`` and
``_fit._gauss_newton_step`` written out by hand. The Jacobians are the analytic derivatives of
the helix; tests compare the fitted covariance, which is built from them, with the JAX path's
``jax.jacfwd`` result. Everything runs in float64; float32 inputs are promoted and the results
cast back. numba is a dependency of difphys; where it cannot be imported, ``fit`` falls back to
the JAX path.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:  # a dependency of difphys, but the JAX path works without it
    import numba as nb
except ImportError:  # pragma: no cover - exercised where numba is absent
    nb = None

C_LIGHT = 0.299792458e-3
# Per-jet scratch: tracks in blocks of _L lanes; block k holds rows x lanes at
# S[k * _BLOCK + row * _L + lane]. The constant row stride lets the compiler prove that rows do
# not overlap, so the per-track loops run as SIMD code (padding lanes hold a dummy track with
# weight 0).
_L = 16
_R_M = 0  # measured perigee (5)
_R_W = 5  # weight matrix, upper triangle row by row (15)
_R_WT = 20  # track weight
_R_Q = 21  # (phi, theta, q/p) at the vertex (3)
_R_TR = 24  # sin phi, cos phi, sin theta, cos theta, phi0 (5)
_R_QNEW = 29  # updated (phi, theta, q/p) (3)
_R_USE = 32  # 1 for a usable track with weight > 0
_R_C = 33  # symmetrised covariance, upper triangle (15)
_R_OK = 48  # 1 where the inputs are finite and 0 < theta < pi, q/p != 0
_R_DIET = 49  # D^-1 E^T (3x3, row-major)
_R_DIB = 58  # D^-1 B^T W r (3)
_R_INFO = 61  # C - E D^-1 E^T: 00, 01, 02, 11, 12, 22
_R_RHS = 67  # A^T W r - E D^-1 B^T W r (3)
_R_CHI = 70  # r^T W r
_NROWS = 71
_BLOCK = _NROWS * _L
_DUMMY = (0.0, 0.0, 0.0, math.pi / 2, 0.1)


def available() -> bool:
    """Whether the compiled kernel can run (numba importable)."""
    return nb is not None


if nb is not None:
    # no on-disk cache: numba does not invalidate a cached caller when a callee changes
    _jit = nb.njit(nogil=True, cache=False, error_model="numpy", fastmath={"contract"})

    @_jit
    def _wrap(a):
        # the angle in [-pi, pi] (as atan2(sin a, cos a), without three transcendentals)
        return a - 2.0 * math.pi * math.floor(a / (2.0 * math.pi) + 0.5)

    @_jit
    def _inv3(m, out):
        c00 = m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1]
        c01 = m[1, 2] * m[2, 0] - m[1, 0] * m[2, 2]
        c02 = m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0]
        det = m[0, 0] * c00 + m[0, 1] * c01 + m[0, 2] * c02
        r = 1.0 / det
        out[0, 0] = c00 * r
        out[0, 1] = (m[0, 2] * m[2, 1] - m[0, 1] * m[2, 2]) * r
        out[0, 2] = (m[0, 1] * m[1, 2] - m[0, 2] * m[1, 1]) * r
        out[1, 0] = c01 * r
        out[1, 1] = (m[0, 0] * m[2, 2] - m[0, 2] * m[2, 0]) * r
        out[1, 2] = (m[0, 2] * m[1, 0] - m[0, 0] * m[1, 2]) * r
        out[2, 0] = c02 * r
        out[2, 1] = (m[0, 1] * m[2, 0] - m[0, 0] * m[2, 1]) * r
        out[2, 2] = (m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]) * r

    @_jit
    def _eig_min_max(a):
        """Smallest and largest eigenvalue of a symmetric 3x3 (as ``_smallmat.eigvalsh3``)."""
        q = (a[0, 0] + a[1, 1] + a[2, 2]) / 3.0
        p1 = a[0, 1] ** 2 + a[0, 2] ** 2 + a[1, 2] ** 2
        p2 = (a[0, 0] - q) ** 2 + (a[1, 1] - q) ** 2 + (a[2, 2] - q) ** 2 + 2.0 * p1
        p = math.sqrt(p2 / 6.0)
        if not p > 0:
            return q, q
        b00, b11, b22 = (a[0, 0] - q) / p, (a[1, 1] - q) / p, (a[2, 2] - q) / p
        b01, b02, b12 = a[0, 1] / p, a[0, 2] / p, a[1, 2] / p
        b10, b20, b21 = a[1, 0] / p, a[2, 0] / p, a[2, 1] / p
        det_b = (b00 * (b11 * b22 - b12 * b21) - b01 * (b10 * b22 - b12 * b20)
                 + b02 * (b10 * b21 - b11 * b20))
        phi = math.acos(min(max(det_b / 2.0, -1.0), 1.0)) / 3.0
        return q + 2.0 * p * math.cos(phi + 2.0 * math.pi / 3.0), q + 2.0 * p * math.cos(phi)

    @_jit
    def _prepare(params, cov, weights, jet, S, n, nblk):
        """Track checks, dummy substitution and weight matrices of one jet (as
        ``_fit._usable_tracks``, ``inv_spd`` and the substitution in ``_fit_one``).
        Returns (sum of weights, number of usable tracks with weight > 0, input flags): the
        flags are those of ``_fit._track_summary`` for this jet, bit 2 a track with weight > 0
        and a non-finite parameter, bit 4 such a track whose covariance is not finite or not
        positive definite (the eager path of ``fit`` raises on them)."""
        flags = 0
        for t in range(nblk * _L):  # scalar pass: copy in, finiteness, sin(theta)
            o = (t // _L) * _BLOCK + t % _L
            if t < n:
                pfin = True
                for i in range(5):
                    S[o + (_R_M + i) * _L] = params[jet, t, i]
                    pfin = pfin and math.isfinite(params[jet, t, i])
                cfin = True
                k = 0
                for i in range(5):
                    for j in range(5):
                        cfin = cfin and math.isfinite(cov[jet, t, i, j])
                        if j >= i:
                            S[o + (_R_C + k) * _L] = 0.5 * (cov[jet, t, i, j] + cov[jet, t, j, i])
                            k += 1
                if weights[jet, t] > 0.0:
                    flags |= (0 if pfin else 2) | (0 if cfin else 4)
                ok = pfin and cfin and params[jet, t, 4] != 0.0 and math.sin(params[jet, t, 3]) > 0.0
                S[o + _R_OK * _L] = 1.0 if ok else 0.0
                S[o + _R_WT * _L] = weights[jet, t]
            else:  # padding lane: the dummy track, weight 0
                for i in range(5):
                    S[o + (_R_M + i) * _L] = _DUMMY[i]
                k = 0
                for i in range(5):
                    for j in range(i, 5):
                        S[o + (_R_C + k) * _L] = 1.0 if i == j else 0.0
                        k += 1
                S[o + _R_OK * _L] = 1.0
                S[o + _R_WT * _L] = 0.0
        not_pd = 0.0
        for blk in range(nblk):  # SIMD pass: Cholesky, inverse, substitution
            ob = blk * _BLOCK
            for t in range(_L):
                c00, c01, c02, c03, c04 = (S[ob + (_R_C + 0) * _L + t], S[ob + (_R_C + 1) * _L + t],
                                           S[ob + (_R_C + 2) * _L + t], S[ob + (_R_C + 3) * _L + t],
                                           S[ob + (_R_C + 4) * _L + t])
                c11, c12, c13, c14 = (S[ob + (_R_C + 5) * _L + t], S[ob + (_R_C + 6) * _L + t],
                                      S[ob + (_R_C + 7) * _L + t], S[ob + (_R_C + 8) * _L + t])
                c22, c23, c24 = (S[ob + (_R_C + 9) * _L + t], S[ob + (_R_C + 10) * _L + t],
                                 S[ob + (_R_C + 11) * _L + t])
                c33, c34, c44 = (S[ob + (_R_C + 12) * _L + t], S[ob + (_R_C + 13) * _L + t],
                                 S[ob + (_R_C + 14) * _L + t])
                pd = True
                s = c00
                pd = pd & (s > 0.0)
                l00 = math.sqrt(s if s > 0.0 else 1.0)
                m00 = 1.0 / l00
                l10 = (c01) * m00
                l20 = (c02) * m00
                l30 = (c03) * m00
                l40 = (c04) * m00
                s = c11 - l10 * l10
                pd = pd & (s > 0.0)
                l11 = math.sqrt(s if s > 0.0 else 1.0)
                m11 = 1.0 / l11
                l21 = (c12 - l20 * l10) * m11
                l31 = (c13 - l30 * l10) * m11
                l41 = (c14 - l40 * l10) * m11
                s = c22 - l20 * l20 - l21 * l21
                pd = pd & (s > 0.0)
                l22 = math.sqrt(s if s > 0.0 else 1.0)
                m22 = 1.0 / l22
                l32 = (c23 - l30 * l20 - l31 * l21) * m22
                l42 = (c24 - l40 * l20 - l41 * l21) * m22
                s = c33 - l30 * l30 - l31 * l31 - l32 * l32
                pd = pd & (s > 0.0)
                l33 = math.sqrt(s if s > 0.0 else 1.0)
                m33 = 1.0 / l33
                l43 = (c34 - l40 * l30 - l41 * l31 - l42 * l32) * m33
                s = c44 - l40 * l40 - l41 * l41 - l42 * l42 - l43 * l43
                pd = pd & (s > 0.0)
                l44 = math.sqrt(s if s > 0.0 else 1.0)
                m44 = 1.0 / l44
                m10 = -(l10 * m00) * m11
                m20 = -(l20 * m00 + l21 * m10) * m22
                m30 = -(l30 * m00 + l31 * m10 + l32 * m20) * m33
                m40 = -(l40 * m00 + l41 * m10 + l42 * m20 + l43 * m30) * m44
                m21 = -(l21 * m11) * m22
                m31 = -(l31 * m11 + l32 * m21) * m33
                m41 = -(l41 * m11 + l42 * m21 + l43 * m31) * m44
                m32 = -(l32 * m22) * m33
                m42 = -(l42 * m22 + l43 * m32) * m44
                m43 = -(l43 * m33) * m44
                usable = (S[ob + _R_OK * _L + t] == 1.0) & pd
                not_pd += 1.0 if ((S[ob + _R_WT * _L + t] > 0.0) & (not pd)) else 0.0
                S[ob + (_R_W + 0) * _L + t] = (m00 * m00 + m10 * m10 + m20 * m20 + m30 * m30 + m40 * m40) if usable else 1.0
                S[ob + (_R_W + 1) * _L + t] = (m10 * m11 + m20 * m21 + m30 * m31 + m40 * m41) if usable else 0.0
                S[ob + (_R_W + 2) * _L + t] = (m20 * m22 + m30 * m32 + m40 * m42) if usable else 0.0
                S[ob + (_R_W + 3) * _L + t] = (m30 * m33 + m40 * m43) if usable else 0.0
                S[ob + (_R_W + 4) * _L + t] = (m40 * m44) if usable else 0.0
                S[ob + (_R_W + 5) * _L + t] = (m11 * m11 + m21 * m21 + m31 * m31 + m41 * m41) if usable else 1.0
                S[ob + (_R_W + 6) * _L + t] = (m21 * m22 + m31 * m32 + m41 * m42) if usable else 0.0
                S[ob + (_R_W + 7) * _L + t] = (m31 * m33 + m41 * m43) if usable else 0.0
                S[ob + (_R_W + 8) * _L + t] = (m41 * m44) if usable else 0.0
                S[ob + (_R_W + 9) * _L + t] = (m22 * m22 + m32 * m32 + m42 * m42) if usable else 1.0
                S[ob + (_R_W + 10) * _L + t] = (m32 * m33 + m42 * m43) if usable else 0.0
                S[ob + (_R_W + 11) * _L + t] = (m42 * m44) if usable else 0.0
                S[ob + (_R_W + 12) * _L + t] = (m33 * m33 + m43 * m43) if usable else 1.0
                S[ob + (_R_W + 13) * _L + t] = (m43 * m44) if usable else 0.0
                S[ob + (_R_W + 14) * _L + t] = (m44 * m44) if usable else 1.0
                for i in range(5):
                    m = S[ob + (_R_M + i) * _L + t]
                    S[ob + (_R_M + i) * _L + t] = m if usable else _DUMMY[i]
                wt = S[ob + _R_WT * _L + t] if usable else 0.0
                S[ob + _R_WT * _L + t] = wt
                S[ob + _R_USE * _L + t] = 1.0 if (usable & (wt > 0.0)) else 0.0
        wsum = 0.0
        n_use = 0.0
        for blk in range(nblk):
            ob = blk * _BLOCK
            for t in range(_L):
                wsum += S[ob + _R_WT * _L + t]
                n_use += S[ob + _R_USE * _L + t]
        if not_pd > 0.0:
            flags |= 4
        return wsum, n_use, flags

    @_jit
    def _directions(S, nblk, vx, vy, kb):
        """Scalar pass: the transcendental functions of each track's (phi, theta) at the vertex."""
        for blk in range(nblk):
            ob = blk * _BLOCK
            for t in range(_L):
                phi, th, qop = S[ob + (_R_Q) * _L + t], S[ob + (_R_Q + 1) * _L + t], S[ob + (_R_Q + 2) * _L + t]
                sp, cp = math.sin(phi), math.cos(phi)
                sth, cth = math.sin(th), math.cos(th)
                rho = kb * qop / sth
                S[ob + (_R_TR) * _L + t], S[ob + (_R_TR + 1) * _L + t], S[ob + (_R_TR + 2) * _L + t], S[ob + (_R_TR + 3) * _L + t] = sp, cp, sth, cth
                S[ob + (_R_TR + 4) * _L + t] = math.atan2(sp + rho * vx, cp - rho * vy)

    @_jit
    def _linearise(S, nblk, vx, vy, vz, kb):
        """Billoir blocks of every track at (v, q), one track per SIMD lane: fills the rows
        D^-1 E^T, D^-1 b, the track's terms of the vertex information and right-hand side,
        and its chi2 (unweighted)."""
        _directions(S, nblk, vx, vy, kb)
        r2v = vx * vx + vy * vy
        for blk in range(nblk):
            ob = blk * _BLOCK
            for t in range(_L):
                th, qop = S[ob + (_R_Q + 1) * _L + t], S[ob + (_R_Q + 2) * _L + t]
                sp, cp, sth, cth = S[ob + (_R_TR) * _L + t], S[ob + (_R_TR + 1) * _L + t], S[ob + (_R_TR + 2) * _L + t], S[ob + (_R_TR + 3) * _L + t]
                phi0 = S[ob + (_R_TR + 4) * _L + t]
                inv_sth = 1.0 / sth
                cot = cth * inv_sth
                rho = kb * qop * inv_sth
                rho_th = -rho * cot
                rho_q = kb * inv_sth
                a = vx * sp - vy * cp
                b = vx * cp + vy * sp
                big_r = math.sqrt(1.0 + 2.0 * rho * a + rho * rho * r2v)
                inv_big_r = 1.0 / big_r
                num = 2.0 * a + rho * r2v
                inv_den = 1.0 / (1.0 + big_r)
                d0 = -num * inv_den
                y_ = sp + rho * vx
                x_ = cp - rho * vy
                inv_r2xy = 1.0 / (x_ * x_ + y_ * y_)
                delta = _wrap(phi0 - S[ob + (_R_Q) * _L + t])
                small = abs(rho) < 1e-14
                inv_rho = 1.0 / (1.0 if small else rho)
                s = b if small else delta * inv_rho
                zp = vz - s * cot
                # d(d0, z0, phi0) along x, y (vertex) and phi, theta, q/p (track at the vertex)
                dd0_x = (num * (rho * sp + rho * rho * vx) * inv_big_r * inv_den
                         - (2.0 * sp + 2.0 * rho * vx)) * inv_den
                dphi0_x = x_ * rho * inv_r2xy
                dz_x = -cot * (cp if small else dphi0_x * inv_rho)
                dd0_y = (num * (rho * rho * vy - rho * cp) * inv_big_r * inv_den
                         - (2.0 * rho * vy - 2.0 * cp)) * inv_den
                dphi0_y = y_ * rho * inv_r2xy
                dz_y = -cot * (sp if small else dphi0_y * inv_rho)
                dd0_p = (num * rho * b * inv_big_r * inv_den - 2.0 * b) * inv_den
                dphi0_p = (x_ * cp + y_ * sp) * inv_r2xy
                dz_p = -cot * (-a if small else (dphi0_p - 1.0) * inv_rho)
                dd0_t = (num * (a + rho * r2v) * rho_th * inv_big_r * inv_den - r2v * rho_th) * inv_den
                dphi0_t = (x_ * vx + y_ * vy) * rho_th * inv_r2xy
                dz_t = (-cot * (0.0 if small else (dphi0_t - delta * rho_th * inv_rho) * inv_rho)
                        + s * inv_sth * inv_sth)
                dd0_q = (num * (a + rho * r2v) * rho_q * inv_big_r * inv_den - r2v * rho_q) * inv_den
                dphi0_q = (x_ * vx + y_ * vy) * rho_q * inv_r2xy
                dz_q = -cot * (0.0 if small else (dphi0_q - delta * rho_q * inv_rho) * inv_rho)
                # A = d h / d v: rows (d0, z0, phi0) = (a.0, a.1, [0, 1, 0]); rows theta, q/p = 0
                a00, a01, a10, a11, a20, a21 = dd0_x, dd0_y, dz_x, dz_y, dphi0_x, dphi0_y
                # B = d h / d (phi, theta, q/p): rows 3, 4 are (0, 1, 0), (0, 0, 1)
                b00, b01, b02 = dd0_p, dd0_t, dd0_q
                b10, b11, b12 = dz_p, dz_t, dz_q
                b20, b21, b22 = dphi0_p, dphi0_t, dphi0_q
                r0 = S[ob + _R_M * _L + t] - d0
                r1 = S[ob + (_R_M + 1) * _L + t] - zp
                r2 = _wrap(S[ob + (_R_M + 2) * _L + t] - phi0)
                r3 = S[ob + (_R_M + 3) * _L + t] - th
                r4 = S[ob + (_R_M + 4) * _L + t] - qop
                w00, w01, w02, w03, w04 = (S[ob + (_R_W) * _L + t], S[ob + (_R_W + 1) * _L + t], S[ob + (_R_W + 2) * _L + t],
                                           S[ob + (_R_W + 3) * _L + t], S[ob + (_R_W + 4) * _L + t])
                w11, w12, w13, w14 = S[ob + (_R_W + 5) * _L + t], S[ob + (_R_W + 6) * _L + t], S[ob + (_R_W + 7) * _L + t], S[ob + (_R_W + 8) * _L + t]
                w22, w23, w24 = S[ob + (_R_W + 9) * _L + t], S[ob + (_R_W + 10) * _L + t], S[ob + (_R_W + 11) * _L + t]
                w33, w34, w44 = S[ob + (_R_W + 12) * _L + t], S[ob + (_R_W + 13) * _L + t], S[ob + (_R_W + 14) * _L + t]
                # G = W A, H = W B, C = A^T W A, E = A^T W B, D = B^T W B, (A^T W r, B^T W r)
                g00 = w00 * a00 + w01 * a10 + w02 * a20
                g01 = w00 * a01 + w01 * a11 + w02 * a21
                g02 = w01
                g10 = w01 * a00 + w11 * a10 + w12 * a20
                g11 = w01 * a01 + w11 * a11 + w12 * a21
                g12 = w11
                g20 = w02 * a00 + w12 * a10 + w22 * a20
                g21 = w02 * a01 + w12 * a11 + w22 * a21
                g22 = w12
                g30 = w03 * a00 + w13 * a10 + w23 * a20
                g31 = w03 * a01 + w13 * a11 + w23 * a21
                g32 = w13
                g40 = w04 * a00 + w14 * a10 + w24 * a20
                g41 = w04 * a01 + w14 * a11 + w24 * a21
                g42 = w14
                h00 = w00 * b00 + w01 * b10 + w02 * b20
                h01 = w00 * b01 + w01 * b11 + w02 * b21 + w03
                h02 = w00 * b02 + w01 * b12 + w02 * b22 + w04
                h10 = w01 * b00 + w11 * b10 + w12 * b20
                h11 = w01 * b01 + w11 * b11 + w12 * b21 + w13
                h12 = w01 * b02 + w11 * b12 + w12 * b22 + w14
                h20 = w02 * b00 + w12 * b10 + w22 * b20
                h21 = w02 * b01 + w12 * b11 + w22 * b21 + w23
                h22 = w02 * b02 + w12 * b12 + w22 * b22 + w24
                h30 = w03 * b00 + w13 * b10 + w23 * b20
                h31 = w03 * b01 + w13 * b11 + w23 * b21 + w33
                h32 = w03 * b02 + w13 * b12 + w23 * b22 + w34
                h40 = w04 * b00 + w14 * b10 + w24 * b20
                h41 = w04 * b01 + w14 * b11 + w24 * b21 + w34
                h42 = w04 * b02 + w14 * b12 + w24 * b22 + w44
                c00 = a00 * g00 + a10 * g10 + a20 * g20
                c01 = a00 * g01 + a10 * g11 + a20 * g21
                c02 = a00 * g02 + a10 * g12 + a20 * g22
                c11 = a01 * g01 + a11 * g11 + a21 * g21
                c12 = a01 * g02 + a11 * g12 + a21 * g22
                c22 = g12
                e00 = a00 * h00 + a10 * h10 + a20 * h20
                e01 = a00 * h01 + a10 * h11 + a20 * h21
                e02 = a00 * h02 + a10 * h12 + a20 * h22
                e10 = a01 * h00 + a11 * h10 + a21 * h20
                e11 = a01 * h01 + a11 * h11 + a21 * h21
                e12 = a01 * h02 + a11 * h12 + a21 * h22
                e20 = h10
                e21 = h11
                e22 = h12
                d00 = b00 * h00 + b10 * h10 + b20 * h20
                d01 = b00 * h01 + b10 * h11 + b20 * h21
                d02 = b00 * h02 + b10 * h12 + b20 * h22
                d11 = b01 * h01 + b11 * h11 + b21 * h21 + h31
                d12 = b01 * h02 + b11 * h12 + b21 * h22 + h32
                d22 = b02 * h02 + b12 * h12 + b22 * h22 + h42
                av0 = g00 * r0 + g10 * r1 + g20 * r2 + g30 * r3 + g40 * r4
                av1 = g01 * r0 + g11 * r1 + g21 * r2 + g31 * r3 + g41 * r4
                av2 = g02 * r0 + g12 * r1 + g22 * r2 + g32 * r3 + g42 * r4
                bv0 = h00 * r0 + h10 * r1 + h20 * r2 + h30 * r3 + h40 * r4
                bv1 = h01 * r0 + h11 * r1 + h21 * r2 + h31 * r3 + h41 * r4
                bv2 = h02 * r0 + h12 * r1 + h22 * r2 + h32 * r3 + h42 * r4
                chi = (r0 * (w00 * r0 + w01 * r1 + w02 * r2 + w03 * r3 + w04 * r4) + r1 * (w01 * r0 + w11 * r1 + w12 * r2 + w13 * r3 + w14 * r4) + r2 * (w02 * r0 + w12 * r1 + w22 * r2 + w23 * r3 + w24 * r4) + r3 * (w03 * r0 + w13 * r1 + w23 * r2 + w33 * r3 + w34 * r4) + r4 * (w04 * r0 + w14 * r1 + w24 * r2 + w34 * r3 + w44 * r4))
                # D^-1 (symmetric adjugate)
                k00 = d11 * d22 - d12 * d12
                k01 = d02 * d12 - d01 * d22
                k02 = d01 * d12 - d02 * d11
                k11 = d00 * d22 - d02 * d02
                k12 = d01 * d02 - d00 * d12
                k22 = d00 * d11 - d01 * d01
                inv_det = 1.0 / (d00 * k00 + d01 * k01 + d02 * k02)
                i00, i01, i02 = k00 * inv_det, k01 * inv_det, k02 * inv_det
                i11, i12, i22 = k11 * inv_det, k12 * inv_det, k22 * inv_det
                # D^-1 E^T (row i, column j = sum_k Di[i, k] E[j, k]) and D^-1 b
                f00 = i00 * e00 + i01 * e01 + i02 * e02
                f01 = i00 * e10 + i01 * e11 + i02 * e12
                f02 = i00 * e20 + i01 * e21 + i02 * e22
                f10 = i01 * e00 + i11 * e01 + i12 * e02
                f11 = i01 * e10 + i11 * e11 + i12 * e12
                f12 = i01 * e20 + i11 * e21 + i12 * e22
                f20 = i02 * e00 + i12 * e01 + i22 * e02
                f21 = i02 * e10 + i12 * e11 + i22 * e12
                f22 = i02 * e20 + i12 * e21 + i22 * e22
                g0 = i00 * bv0 + i01 * bv1 + i02 * bv2
                g1 = i01 * bv0 + i11 * bv1 + i12 * bv2
                g2 = i02 * bv0 + i12 * bv1 + i22 * bv2
                S[ob + (_R_DIET) * _L + t], S[ob + (_R_DIET + 1) * _L + t], S[ob + (_R_DIET + 2) * _L + t] = f00, f01, f02
                S[ob + (_R_DIET + 3) * _L + t], S[ob + (_R_DIET + 4) * _L + t], S[ob + (_R_DIET + 5) * _L + t] = f10, f11, f12
                S[ob + (_R_DIET + 6) * _L + t], S[ob + (_R_DIET + 7) * _L + t], S[ob + (_R_DIET + 8) * _L + t] = f20, f21, f22
                S[ob + (_R_DIB) * _L + t], S[ob + (_R_DIB + 1) * _L + t], S[ob + (_R_DIB + 2) * _L + t] = g0, g1, g2
                # the track's terms: C - E D^-1 E^T (symmetric) and A^T W r - E D^-1 B^T W r
                S[ob + (_R_INFO) * _L + t] = c00 - (e00 * f00 + e01 * f10 + e02 * f20)
                S[ob + (_R_INFO + 1) * _L + t] = c01 - (e00 * f01 + e01 * f11 + e02 * f21)
                S[ob + (_R_INFO + 2) * _L + t] = c02 - (e00 * f02 + e01 * f12 + e02 * f22)
                S[ob + (_R_INFO + 3) * _L + t] = c11 - (e10 * f01 + e11 * f11 + e12 * f21)
                S[ob + (_R_INFO + 4) * _L + t] = c12 - (e10 * f02 + e11 * f12 + e12 * f22)
                S[ob + (_R_INFO + 5) * _L + t] = c22 - (e20 * f02 + e21 * f12 + e22 * f22)
                S[ob + (_R_RHS) * _L + t] = av0 - (e00 * g0 + e01 * g1 + e02 * g2)
                S[ob + (_R_RHS + 1) * _L + t] = av1 - (e10 * g0 + e11 * g1 + e12 * g2)
                S[ob + (_R_RHS + 2) * _L + t] = av2 - (e20 * g0 + e21 * g1 + e22 * g2)
                S[ob + (_R_CHI) * _L + t] = chi

    @_jit
    def _fit_jets(params, cov, weights, seeds, use_seeds, bfield, ppos, pinfo, tol, max_iter,
                  has_constraint, out_v, out_cov, out_chi2, out_ndf, out_local, out_mom,
                  out_iter, out_conv, out_valid, out_flags):
        n_jets, n = params.shape[0], params.shape[1]
        nblk = (n + _L - 1) // _L
        S = np.zeros(nblk * _BLOCK)
        info = np.empty((3, 3))
        info_inv = np.empty((3, 3))
        data_info = np.empty((3, 3))
        rhs = np.empty(3)
        for jet in range(n_jets):
            kb = C_LIGHT * bfield[jet]
            wsum, n_use, out_flags[jet] = _prepare(params, cov, weights, jet, S, n, nblk)
            if use_seeds:
                vx, vy, vz = seeds[jet, 0], seeds[jet, 1], seeds[jet, 2]
            else:
                norm = max(wsum, 1e-12)
                vx = vy = vz = 0.0
                for blk in range(nblk):
                    ob = blk * _BLOCK
                    for t in range(_L):
                        wt, d0, z0, phi0 = S[ob + (_R_WT) * _L + t], S[ob + _R_M * _L + t], S[ob + (_R_M + 1) * _L + t], S[ob + (_R_M + 2) * _L + t]
                        vx += wt * (-d0 * math.sin(phi0))
                        vy += wt * (d0 * math.cos(phi0))
                        vz += wt * z0
                vx, vy, vz = vx / norm, vy / norm, vz / norm
            for blk in range(nblk):  # local direction at the seed (as _helix.state_at_vertex)
                ob = blk * _BLOCK
                for t in range(_L):
                    d0, phi0, th, qop = S[ob + _R_M * _L + t], S[ob + (_R_M + 2) * _L + t], S[ob + (_R_M + 3) * _L + t], S[ob + (_R_M + 4) * _L + t]
                    rho = kb * qop / math.sin(th)
                    px0, py0 = -d0 * math.sin(phi0), d0 * math.cos(phi0)
                    ux = rho * (vx - px0) - math.sin(phi0)
                    uy = rho * (vy - py0) + math.cos(phi0)
                    S[ob + (_R_Q) * _L + t] = math.atan2(-ux, uy)
                    S[ob + (_R_Q + 1) * _L + t] = th
                    S[ob + (_R_Q + 2) * _L + t] = qop
            it = 0
            step = np.inf
            while True:
                _linearise(S, nblk, vx, vy, vz, kb)
                v = (vx, vy, vz)
                for i in range(3):
                    acc = 0.0
                    for j in range(3):
                        info[i, j] = pinfo[jet, i, j]
                        acc += pinfo[jet, i, j] * (ppos[jet, j] - v[j])
                    rhs[i] = acc
                chi2 = 0.0
                for blk in range(nblk):
                    ob = blk * _BLOCK
                    for t in range(_L):
                        wt = S[ob + (_R_WT) * _L + t]
                        info[0, 0] += wt * S[ob + (_R_INFO) * _L + t]
                        info[0, 1] += wt * S[ob + (_R_INFO + 1) * _L + t]
                        info[0, 2] += wt * S[ob + (_R_INFO + 2) * _L + t]
                        info[1, 1] += wt * S[ob + (_R_INFO + 3) * _L + t]
                        info[1, 2] += wt * S[ob + (_R_INFO + 4) * _L + t]
                        info[2, 2] += wt * S[ob + (_R_INFO + 5) * _L + t]
                        rhs[0] += wt * S[ob + (_R_RHS) * _L + t]
                        rhs[1] += wt * S[ob + (_R_RHS + 1) * _L + t]
                        rhs[2] += wt * S[ob + (_R_RHS + 2) * _L + t]
                        chi2 += wt * S[ob + (_R_CHI) * _L + t]
                info[1, 0] = info[0, 1] + (pinfo[jet, 1, 0] - pinfo[jet, 0, 1])
                info[2, 0] = info[0, 2] + (pinfo[jet, 2, 0] - pinfo[jet, 0, 2])
                info[2, 1] = info[1, 2] + (pinfo[jet, 2, 1] - pinfo[jet, 1, 2])
                if not (it < max_iter and step > tol[jet]):
                    break
                _inv3(info, info_inv)
                dv0 = info_inv[0, 0] * rhs[0] + info_inv[0, 1] * rhs[1] + info_inv[0, 2] * rhs[2]
                dv1 = info_inv[1, 0] * rhs[0] + info_inv[1, 1] * rhs[1] + info_inv[1, 2] * rhs[2]
                dv2 = info_inv[2, 0] * rhs[0] + info_inv[2, 1] * rhs[1] + info_inv[2, 2] * rhs[2]
                finite = math.isfinite(vx + dv0) and math.isfinite(vy + dv1) and math.isfinite(
                    vz + dv2)
                bad = 0.0
                for blk in range(nblk):  # q_new in the scratch rows, checked before it is kept
                    ob = blk * _BLOCK
                    for t in range(_L):
                        for i in range(3):
                            qn = S[ob + (_R_Q + i) * _L + t] + S[ob + (_R_DIB + i) * _L + t] - (
                                S[ob + (_R_DIET + 3 * i) * _L + t] * dv0 + S[ob + (_R_DIET + 3 * i + 1) * _L + t] * dv1
                                + S[ob + (_R_DIET + 3 * i + 2) * _L + t] * dv2)
                            S[ob + (_R_QNEW + i) * _L + t] = qn
                            bad += qn * 0.0  # NaN unless every qn is finite
                finite = finite and bad == 0.0
                it += 1
                if finite:
                    step = max(abs(dv0), abs(dv1), abs(dv2))
                    vx, vy, vz = vx + dv0, vy + dv1, vz + dv2
                    for i in range(3):
                        for blk in range(nblk):
                            ob = blk * _BLOCK
                            for t in range(_L):
                                S[ob + (_R_Q + i) * _L + t] = S[ob + (_R_QNEW + i) * _L + t]
                else:
                    step = 0.0
            _inv3(info, out_cov[jet])
            dpos = (vx - ppos[jet, 0], vy - ppos[jet, 1], vz - ppos[jet, 2])
            if has_constraint:
                for i in range(3):
                    for j in range(3):
                        chi2 += dpos[i] * pinfo[jet, i, j] * dpos[j]
            remove = 0.0 if has_constraint else 1.0
            for i in range(3):
                for j in range(3):
                    data_info[i, j] = 0.5 * ((info[i, j] - remove * pinfo[jet, i, j])
                                             + (info[j, i] - remove * pinfo[jet, j, i]))
            eig_min, eig_max = _eig_min_max(data_info)
            out_v[jet, 0], out_v[jet, 1], out_v[jet, 2] = vx, vy, vz
            out_chi2[jet] = chi2
            out_ndf[jet] = 2.0 * wsum - 3.0 + (3.0 if has_constraint else 0.0)
            for t in range(n):  # real tracks; the last linearisation was at the final q, so
                o = (t // _L) * _BLOCK + t % _L  # its sines and cosines are those of q
                phi, th, qop = S[o + _R_Q * _L], S[o + (_R_Q + 1) * _L], S[o + (_R_Q + 2) * _L]
                sp, cp = S[o + _R_TR * _L], S[o + (_R_TR + 1) * _L]
                sth, cth = S[o + (_R_TR + 2) * _L], S[o + (_R_TR + 3) * _L]
                p = 1.0 / abs(qop)
                out_local[jet, t, 0], out_local[jet, t, 1], out_local[jet, t, 2] = phi, th, qop
                out_mom[jet, t, 0] = p * sth * cp
                out_mom[jet, t, 1] = p * sth * sp
                out_mom[jet, t, 2] = p * cth
            out_iter[jet] = it
            out_conv[jet] = step <= tol[jet]
            well = eig_min > 1e-9 * max(eig_max, 1e-30)
            out_valid[jet] = ((n_use >= 2) or has_constraint) and well and math.isfinite(
                vx + vy + vz)
            # bit 8: a result the mask of _fit._mask_invalid would change (not valid, or a
            # non-finite or non-positive entry it replaces)
            acc = chi2 + out_ndf[jet]
            for i in range(3):
                acc += 0.0 if out_cov[jet, i, i] > 0.0 else math.nan
                for j in range(3):
                    acc += out_cov[jet, i, j]
            for t in range(n):
                for i in range(3):
                    acc += out_local[jet, t, i] + out_mom[jet, t, i]
            if not (out_valid[jet] and math.isfinite(acc * 0.0)):
                out_flags[jet] |= 8


_POOL: ThreadPoolExecutor | None = None
_COMPILE_LOCK = threading.Lock()
_COMPILED = False


def _threads() -> int:
    """Threads for one call: ``DIFPHYS_VERTEX_THREADS`` if set, else the usable cores."""
    if os.environ.get("DIFPHYS_VERTEX_THREADS"):
        return max(1, int(os.environ["DIFPHYS_VERTEX_THREADS"]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def fit_host(params, cov, weights, seeds, bfield, prior_position, prior_information, tol, *,
             max_iter: int, has_constraint: bool, use_seeds: bool):
    """Run the kernel on NumPy arrays with leading batch axes (any of them may be broadcast);
    returns the tuple of :class:`difphys.vertex.VertexFit` fields as NumPy arrays, then the
    input flags of all jets OR-ed (bit 2: a track with weight > 0 has a non-finite
    parameter; bit 4: such a track's covariance is not finite or not positive definite; bit 8:
    some fit is not valid or has a non-finite field, so the mask of ``fit`` is needed)."""
    global _POOL
    params = np.asarray(params)
    out_dtype = params.dtype
    batch, n = params.shape[:-2], params.shape[-2]
    total = int(np.prod(batch, dtype=np.int64))

    def flat(x, tail):
        # leading axes are a prefix of the batch axes (vmapped axes come first): align left
        x = np.asarray(x, np.float64)
        lead = x.shape[:x.ndim - len(tail)]
        x = x.reshape(lead + (1,) * (len(batch) - len(lead)) + tail)
        return np.ascontiguousarray(np.broadcast_to(x, batch + tail).reshape((total,) + tail))

    args = (flat(params, (n, 5)), flat(cov, (n, 5, 5)), flat(weights, (n,)),
            flat(seeds, (3,)), flat(bfield, ()), flat(prior_position, (3,)),
            flat(prior_information, (3, 3)), flat(tol, ()))
    outs = (np.empty((total, 3)), np.empty((total, 3, 3)), np.empty(total), np.empty(total),
            np.empty((total, n, 3)), np.empty((total, n, 3)), np.empty(total, np.int64),
            np.empty(total, np.bool_), np.empty(total, np.bool_), np.empty(total, np.int64))

    def run(lo, hi):
        p, c, w, s, b, pp, pi, tl = (a[lo:hi] for a in args)
        _fit_jets(p, c, w, s, use_seeds, b, pp, pi, tl, max_iter, has_constraint,
                  *(o[lo:hi] for o in outs))

    global _COMPILED
    if not _COMPILED:  # compile once, in one thread: numba's first compilation is not
        with _COMPILE_LOCK:  # safe to race from several threads (a KeyError in lowering)
            if not _COMPILED and total:
                run(0, 1)
                _COMPILED = True
    n_threads = min(_threads(), max(1, total // 64))
    if n_threads == 1:
        run(0, total)
    else:
        if _POOL is None or _POOL._max_workers < n_threads:
            _POOL = ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="difphys-vertex")
        edges = np.linspace(0, total, n_threads + 1).astype(int)
        for fut in [_POOL.submit(run, lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]:
            fut.result()
    v, cov_v, chi2, ndf, local, mom, n_iter, conv, valid, flags = outs
    shape = lambda x: x.reshape(batch + x.shape[1:])  # noqa: E731
    cast = lambda x: shape(x).astype(out_dtype, copy=False)  # noqa: E731
    return (cast(v), cast(cov_v), cast(chi2), cast(ndf), cast(mom), cast(local), shape(n_iter),
            shape(conv), shape(valid), int(np.bitwise_or.reduce(flags)) if total else 0)
