"""Matrix elements: analytic formulas, Lorentz and gauge invariance, crossing, gradients, I/O."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from difphys import amplitudes as amp
from difphys import kinematics as kin
from difphys.amplitudes import _colour
from difphys.amplitudes._handbuilt import PROCESS_NAMES
from difphys.testing import check_grad_fd, random_boost, random_rotation

PARAMS = amp.SMParams()
#: Zero widths: MadGraph's convention (a fixed width in every propagator, t-channel ones too)
#: breaks gauge invariance at O(width / mass), and with it the frame independence of the
#: helicity sum (measured: 1.5e-6 for g g > t t~ at 1 TeV), so the exact symmetries are tested
#: without widths.
STABLE = PARAMS.replace(WT=0.0, WZ=0.0, WW=0.0, WH=0.0)


def events(key, proc, sqrt_s, n):
    """n phase-space points for ``proc`` at ``sqrt_s`` (incoming along +-z)."""
    u = jax.random.uniform(
        key, (n, proc.phase_space_dim), dtype=jnp.float64, minval=0.02, maxval=0.98
    )
    return proc.phase_space(u, sqrt_s, PARAMS)[0]


def mandelstam(p):
    s = kin.mass2(p[..., 0, :] + p[..., 1, :])
    t = kin.mass2(p[..., 0, :] - p[..., 2, :])
    u = kin.mass2(p[..., 0, :] - p[..., 3, :])
    return s, t, u


# ----------------------------------------------------------------- wavefunctions


def test_spinor_and_polarisation_completeness(key):
    p = jnp.array([250.0, 30.0, -120.0, 140.0])
    m = kin.mass(p)
    pslash = amp.slash(p.astype(jnp.complex128))
    eye = jnp.eye(4, dtype=jnp.complex128)
    m = m.astype(jnp.complex128)
    mr = jnp.real(m)
    uu = sum(jnp.outer(amp.u_spinor(p, mr, h), amp.ubar_spinor(p, mr, h)) for h in (-1, 1))
    vv = sum(jnp.outer(amp.v_spinor(p, mr, h), amp.vbar_spinor(p, mr, h)) for h in (-1, 1))
    np.testing.assert_allclose(uu, pslash + m * eye, atol=1e-11 * 250)
    np.testing.assert_allclose(vv, pslash - m * eye, atol=1e-11 * 250)
    # Dirac equation and helicity: (pslash - m) u = 0, (pslash + m) v = 0
    for h in (-1, 1):
        np.testing.assert_allclose((pslash - m * eye) @ amp.u_spinor(p, mr, h), 0, atol=1e-10 * 250)
        np.testing.assert_allclose((pslash + m * eye) @ amp.v_spinor(p, mr, h), 0, atol=1e-10 * 250)
    # Massive vector: sum eps eps* = -g + k k / m^2, and k.eps = 0.
    g = np.diag([1.0, -1, -1, -1])
    total = sum(
        jnp.outer(amp.polarization_vector(p, mr, h), jnp.conj(amp.polarization_vector(p, mr, h)))
        for h in (-1, 0, 1)
    )
    np.testing.assert_allclose(total, -g + np.outer(p, p) / float(mr) ** 2, atol=1e-12)
    for h in (-1, 0, 1):
        assert abs(amp.mdot(p.astype(jnp.complex128), amp.polarization_vector(p, mr, h))) < 1e-10
    # Massless spinors along -z and at rest are finite (the singular points of the angles).
    for q, mass in ((jnp.array([5.0, 0, 0, -5.0]), 0.0), (jnp.array([3.0, 0, 0, 0]), 3.0)):
        for h in (-1, 1):
            assert np.all(np.isfinite(amp.u_spinor(q, mass, h)))
            assert np.all(
                np.isfinite(
                    jax.jacobian(lambda x, m=mass, h=h: jnp.abs(amp.u_spinor(x, m, h)) ** 2)(q)
                )
            )


def test_ffs_vertex_matches_trace(key):
    # sum_hel |ubar(p) (cl PL + cr PR) v(q)|^2 = Tr[(pslash + m)(cl PL + cr PR)(qslash - M)(cr* PL + cl* PR)]
    p = jnp.array([100.0, 10.0, 20.0, 30.0])
    q = jnp.array([80.0, -15.0, 5.0, -40.0])
    m, big_m = float(kin.mass(p)), float(kin.mass(q))
    cl, cr = 0.3 + 0.1j, -0.7 + 0.2j
    total = sum(
        abs(amp.ffs_amplitude(amp.ubar_spinor(p, m, h1), amp.v_spinor(q, big_m, h2), cl, cr)) ** 2
        for h1 in (-1, 1)
        for h2 in (-1, 1)
    )
    pl, pr = np.diag([1, 1, 0, 0]), np.diag([0, 0, 1, 1])
    ps_, qs = np.asarray(amp.slash(p.astype(complex))), np.asarray(amp.slash(q.astype(complex)))
    trace = np.trace(
        (ps_ + m * np.eye(4))
        @ (cl * pl + cr * pr)
        @ (qs - big_m * np.eye(4))
        @ (np.conj(cr) * pl + np.conj(cl) * pr)
    )
    np.testing.assert_allclose(total, trace.real, rtol=1e-12)


# ----------------------------------------------------------------- analytic formulas


def ee_ffbar_analytic(p, params, q_f, t3_f, colour=1.0):
    """Massless e+ e- > f f~ via gamma + Z (helicity amplitudes; e.g. Peskin & Schroeder 20.1)."""
    s = kin.mass2(p[..., 0, :] + p[..., 1, :])
    t = kin.mass2(p[..., 1, :] - p[..., 3, :])  # (e- - f)^2
    u = kin.mass2(p[..., 1, :] - p[..., 2, :])  # (e- - fbar)^2
    e2 = params.ee**2
    gz2 = e2 / (params.sw2 * params.cw**2)
    chi = s.astype(jnp.complex128) / (
        (s - params.MZ**2).astype(jnp.complex128)
        + 1j * (params.MZ * params.WZ).astype(jnp.complex128)
    )
    ge = {"L": -0.5 + params.sw2, "R": params.sw2}
    gf = {"L": t3_f - q_f * params.sw2, "R": -q_f * params.sw2}
    a = {
        (i, j): (e2 * (-1.0) * q_f).astype(jnp.complex128)
        + (ge[i] * gf[j] * gz2).astype(jnp.complex128) * chi
        for i in "LR"
        for j in "LR"
    }
    same = abs(a["L", "L"]) ** 2 + abs(a["R", "R"]) ** 2
    opposite = abs(a["L", "R"]) ** 2 + abs(a["R", "L"]) ** 2
    return colour * (same * u**2 + opposite * t**2) / s**2


@pytest.mark.parametrize("sqrt_s", [20.0, 91.188, 200.0, 1000.0])
def test_ee_mumu_matches_analytic_gamma_z(key, sqrt_s):
    proc = amp.process("e+ e- > mu+ mu-")
    # order of final state: mu+ (leg 2), mu- (leg 3); analytic uses f = mu- (leg 3)
    p = events(key, proc, sqrt_s, 100)
    np.testing.assert_allclose(
        proc(p, PARAMS), ee_ffbar_analytic(p, PARAMS, -1.0, -0.5), rtol=1e-12
    )


def test_ee_uubar_and_ddbar_match_analytic(key):
    for name, q, t3 in (("e+ e- > u u~", 2 / 3, 0.5), ("e+ e- > d d~", -1 / 3, -0.5)):
        proc = amp.process(name)
        p = events(key, proc, 150.0, 50)
        swapped = p[..., jnp.array([0, 1, 3, 2]), :]  # analytic helper wants (fbar, f)
        np.testing.assert_allclose(
            proc(p, PARAMS), ee_ffbar_analytic(swapped, PARAMS, q, t3, 3.0), rtol=1e-12
        )


def test_qcd_two_to_two_match_textbook(key):
    g4 = PARAMS.gs**4
    mt = PARAMS.MT
    # u u~ > t t~ and g g > t t~: Combridge, Nucl. Phys. B151 (1979) 429 (see also ESW eq. 10.12)
    for name in ("u u~ > t t~", "g g > t t~"):
        proc = amp.process(name)
        p = events(key, proc, 600.0, 100)
        s, t, u = mandelstam(p)
        if name.startswith("u"):
            ref = g4 * 4 / 9 * ((mt**2 - t) ** 2 + (mt**2 - u) ** 2 + 2 * mt**2 * s) / s**2
        else:
            t1, t2, rho = (mt**2 - t) / s, (mt**2 - u) / s, 4 * mt**2 / s
            ref = g4 * (1 / (6 * t1 * t2) - 3 / 8) * (t1**2 + t2**2 + rho - rho**2 / (4 * t1 * t2))
        # the textbook tops are stable: MadGraph's convention keeps WT in t-channel propagators
        np.testing.assert_allclose(proc(p, PARAMS.replace(WT=0.0)), ref, rtol=1e-12)
    # u u~ > d d~: (4/9) g^4 (t^2 + u^2) / s^2 ; g g > g g: (9/2) g^4 (3 - tu/s^2 - su/t^2 - st/u^2)
    proc = amp.process("u u~ > d d~")
    p = events(key, proc, 300.0, 100)
    s, t, u = mandelstam(p)
    np.testing.assert_allclose(proc(p, PARAMS), g4 * 4 / 9 * (t**2 + u**2) / s**2, rtol=1e-12)
    proc = amp.process("g g > g g")
    p = events(key, proc, 300.0, 100)
    s, t, u = mandelstam(p)
    ref = g4 * 9 / 2 * (3 - t * u / s**2 - s * u / t**2 - s * t / u**2)
    np.testing.assert_allclose(proc(p, PARAMS), ref / 2, rtol=1e-12)  # 1/2: identical gluons


def _orientation_average(fn, p):
    """Average of fn over event orientations: Gauss-Legendre in cos(beta) x uniform alpha (exact
    for the degree-2 dependence on the beam direction of unpolarised e+ e- annihilation)."""
    nodes, weights = np.polynomial.legendre.leggauss(8)
    total = 0.0
    for c, w in zip(nodes, weights, strict=True):
        beta = math.acos(c)
        for alpha in np.arange(8) * 2 * np.pi / 8:
            # R = Ry(beta) Rz(alpha): the beam seen from the event, R^-1 z, covers the sphere.
            q = kin.rotate(p, jnp.array([0.0, 0.0, 1.0]), alpha)
            q = kin.rotate(q, jnp.array([0.0, 1.0, 0.0]), beta)
            total = total + w / 2 * fn(q) / 8
    return total


@pytest.mark.parametrize(("x1", "x2"), [(0.9, 0.8), (0.6, 0.95), (0.75, 0.7)])
@pytest.mark.parametrize("sqrt_s", [91.188, 250.0])
def test_ee_uubar_g_orientation_average_is_ert(x1, x2, sqrt_s):
    """Ellis-Ross-Terrano: <|M3|^2> = <|M2|^2> (8 pi C_F aS / s) (x1^2 + x2^2)/((1-x1)(1-x2))."""
    rs = sqrt_s
    x3 = 2 - x1 - x2
    e1, e2, e3 = x1 * rs / 2, x2 * rs / 2, x3 * rs / 2
    # quark along +z, antiquark and gluon in the x-z plane (massless, momentum conserved)
    cos12 = (e3**2 - e1**2 - e2**2) / (2 * e1 * e2)
    p1 = jnp.array([e1, 0.0, 0.0, e1])
    p2 = jnp.array([e2, e2 * math.sqrt(1 - cos12**2), 0.0, e2 * cos12])
    p3 = jnp.array([e3, 0.0, 0.0, 0.0]).at[1:].set(-(p1[1:] + p2[1:]))
    beams = jnp.array([[rs / 2, 0, 0, rs / 2], [rs / 2, 0, 0, -rs / 2]])
    proc3 = amp.process("e+ e- > u u~ g")
    proc2 = amp.process("e+ e- > u u~")
    final3 = jnp.stack([p1, p2, p3])
    m3 = _orientation_average(lambda q: proc3(jnp.concatenate([beams, q]), PARAMS), final3)
    back_to_back = jnp.array([[rs / 2, 0, 0, rs / 2], [rs / 2, 0, 0, -rs / 2]])
    m2 = _orientation_average(lambda q: proc2(jnp.concatenate([beams, q]), PARAMS), back_to_back)
    ert = (
        m2 * 8 * math.pi * _colour.C_F * PARAMS.aS / rs**2 * (x1**2 + x2**2) / ((1 - x1) * (1 - x2))
    )
    np.testing.assert_allclose(m3, ert, rtol=1e-6)


# ----------------------------------------------------------------- symmetries


ALL = [n for n in PROCESS_NAMES if n != "g g > g g g g"]


@pytest.mark.parametrize("name", ALL)
def test_lorentz_invariance(key, name):
    proc = amp.process(name)
    rs = 1000.0 if "w+" in name or "t t~ g" in name else 500.0
    p = events(key, proc, rs, 8)
    # widths break the frame independence only through external massless gauge bosons
    params = STABLE if {"g", "a"} & set(proc.outgoing + proc.incoming) else PARAMS
    reference = proc(p, params)
    assert np.all(reference > 0)
    for sub in jax.random.split(jax.random.fold_in(key, 1), 3):
        kb, kr = jax.random.split(sub)
        q = random_rotation(kr, random_boost(kb, p, max_beta=0.9))
        np.testing.assert_allclose(proc(q, params), reference, rtol=1e-10)


@pytest.mark.parametrize(
    "name",
    [
        "g g > t t~",
        "g g > t t~ g",
        "g g > g g",
        pytest.param("g g > g g g", marks=pytest.mark.slow),
        "e+ e- > u u~ g",
    ],
)
def test_gauge_invariance_of_gluon_legs(key, name):
    proc = amp.process(name)
    p = events(key, proc, 800.0, 4)
    scale = jnp.max(jnp.abs(proc.helicity_amplitudes(p, STABLE)))
    for leg, particle in enumerate(proc.particles):
        if particle.name == "g":
            ward = proc.helicity_amplitudes(p, STABLE, gauge_leg=leg)
            assert float(jnp.max(jnp.abs(ward)) / scale) < 1e-10, (
                leg,
                float(jnp.max(jnp.abs(ward)) / scale),
            )


def test_crossing_drell_yan_equals_annihilation(key):
    # T-invariance and crossing: |M|^2(q q~ > e+ e-)(p_q, p_qbar, p_e+, p_e-) equals
    # |M|^2(e+ e- > q q~)(p_e+, p_e-, p_q, p_qbar) times (colour 3 / 9) / (colour 3).
    for q in ("u", "d"):
        dy = amp.process(f"{q} {q}~ > e+ e-")
        ee = amp.process(f"e+ e- > {q} {q}~")
        p = events(key, dy, 200.0, 20)
        swapped = p[..., jnp.array([2, 3, 0, 1]), :]
        np.testing.assert_allclose(dy(p, PARAMS), ee(swapped, PARAMS) / 9.0, rtol=1e-12)


def test_bose_symmetry_of_gluons(key):
    for name in ("g g > g g", "g g > g g g", "g g > t t~ g"):
        proc = amp.process(name)
        p = events(key, proc, 900.0, 5)
        n = proc.n_external
        glu = [i for i, part in enumerate(proc.particles) if part.name == "g"]
        perm = list(range(n))
        perm[glu[0]], perm[glu[1]] = perm[glu[1]], perm[glu[0]]  # swap the incoming gluons
        np.testing.assert_allclose(
            proc(p[..., jnp.array(perm), :], PARAMS), proc(p, PARAMS), rtol=1e-11
        )


@pytest.mark.parametrize("n", [4, 5, pytest.param(6, marks=pytest.mark.slow)])
def test_parke_taylor_mhv_partial_amplitudes(key, n):
    """|A(1..n)|^2 = s_ij^4 / (s_12 s_23 ... s_n1) when exactly i, j have the other helicity.

    The compiler's colour basis is found numerically; the colour-ordered amplitude A(1, ..., n)
    is its coefficient in the Del Duca-Dixon-Maltoni basis, obtained by projecting the
    compiler's basis tensors onto the DDM tensors (F^{a_2} ... F^{a_{n-1}})_{a_1 a_n}."""
    proc = amp.process("g g > " + " ".join(["g"] * (n - 2)))
    p = events(key, proc, 700.0, 2)
    basis = np.stack([b.reshape(-1) for b in proc.colour_basis], axis=1)
    orders, _ = _colour.gluon_colour_matrix(n)
    ddm = np.stack(
        [_colour.adjoint_chain_tensor(o[1:-1], 0, n - 1, n).reshape(-1) for o in orders], axis=1
    )
    to_ddm, *_ = np.linalg.lstsq(ddm, basis, rcond=None)  # basis = ddm @ to_ddm
    np.testing.assert_allclose(ddm @ to_ddm, basis, atol=1e-12)
    amps = np.asarray(proc.helicity_amplitudes(p, PARAMS)) @ to_ddm[0]  # ordering (1..n)
    amps = amps / float(PARAMS.gs) ** (n - 2)
    k = jnp.concatenate([p[..., :2, :], -p[..., 2:, :]], axis=-2)  # all incoming
    s = lambda i, j: jnp.abs(kin.mass2(k[..., i, :] + k[..., j, :]))  # noqa: E731
    denominator = np.prod([s(i, (i + 1) % n) for i in range(n)], axis=0)
    hel_in = proc.helicities * np.array([1, 1] + [-1] * (n - 2))
    for h, row in enumerate(hel_in):
        minus = np.flatnonzero(row < 0)
        plus = np.flatnonzero(row > 0)
        value = np.abs(amps[:, h]) ** 2
        if len(minus) == 2 or len(plus) == 2:
            i, j = minus if len(minus) == 2 else plus
            np.testing.assert_allclose(value, s(i, j) ** 4 / denominator, rtol=1e-10)
        elif len(minus) <= 1 or len(plus) <= 1:
            assert np.all(value < 1e-20 * np.asarray(s(0, 1) ** 4 / denominator))


# ----------------------------------------------------------------- gradients, compile counts, I/O


def test_gradients_wrt_momenta_and_parameters(key):
    proc = amp.process("e+ e- > mu+ mu-")
    p = events(key, proc, 91.0, 1)[0]
    check_grads(lambda q: proc(q, PARAMS), (p,), order=1, modes=("fwd", "rev"), eps=1e-5)
    for name in ("MZ", "WZ", "aEWM1"):
        f = lambda x, name=name: proc(p, PARAMS.replace(**{name: x}))  # noqa: E731
        check_grad_fd(f, getattr(PARAMS, name), rtol=1e-7)
    tt = amp.process("g g > t t~")
    p = events(key, tt, 500.0, 1)[0]
    check_grads(lambda q: tt(q, PARAMS), (p,), order=1, modes=("fwd", "rev"), eps=1e-4)
    for name in ("MT", "aS"):
        f = lambda x, name=name: tt(p, PARAMS.replace(**{name: x}))  # noqa: E731
        check_grad_fd(f, getattr(PARAMS, name), rtol=1e-7)


@pytest.mark.slow  # about 60 s: the full e+ e- > w+ b w- b~ traced three times
def test_gradients_of_the_full_wbwb_process_wrt_parameters(key):
    wbwb = amp.process("e+ e- > w+ b w- b~")
    p = events(key, wbwb, 500.0, 1)[0]
    for name in ("MT", "WT", "MZ"):
        f = lambda x, name=name: wbwb(p, PARAMS.replace(**{name: x}))  # noqa: E731
        check_grad_fd(f, getattr(PARAMS, name), rtol=1e-6)


def test_changing_parameters_does_not_recompile(key):
    proc = amp.process("e+ e- > mu+ mu-")
    p = events(key, proc, 91.0, 16)

    @jax.jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def me(momenta, params):
        return proc(momenta, params)

    for mz in (91.0, 91.188, 92.5):
        me(p, PARAMS.replace(MZ=mz, WZ=2.5))


def test_param_card_round_trip_and_errors(tmp_path):
    changed = PARAMS.replace(MZ=91.1876, MT=172.5, WT=1.42, aS=0.1179)
    path = changed.to_param_card(tmp_path / "param_card.dat")
    back = amp.SMParams.from_param_card(path)
    for leaf_a, leaf_b in zip(jax.tree.leaves(changed), jax.tree.leaves(back), strict=True):
        assert float(leaf_a) == float(leaf_b)
    with pytest.raises(FileExistsError):
        changed.to_param_card(path)
    bad = tmp_path / "bad.dat"
    bad.write_text("BLOCK MASS\n  6 1.73e2 # mt\n  23 ninety-one # mz\n")
    with pytest.raises(ValueError, match=r"bad.dat:3"):
        amp.SMParams.from_param_card(bad)
    # A MadGraph-style card with extra blocks and branching-ratio lines is accepted.
    card = tmp_path / "mg.dat"
    card.write_text(
        "BLOCK CKMBLOCK #\n  1 2.27e-01 # cabi\nBLOCK MASS #\n  23 9.0e+01 # MZ\n"
        "DECAY 6 1.50e+00 # WT\n  1.0 2 5 24 # BR\nDECAY 23 2.5e+00\n"
    )
    read = amp.SMParams.from_param_card(card)
    assert float(read.MZ) == 90.0 and float(read.WT) == 1.5 and float(read.WZ) == 2.5


def test_madgraph_sm_derived_parameters():
    # MadGraph sm model with default inputs: MW = 80.419002 GeV, sw^2 = 0.222246.
    np.testing.assert_allclose(PARAMS.MW, 80.41900244575616, rtol=1e-12)
    np.testing.assert_allclose(PARAMS.sw2, 1 - PARAMS.MW**2 / PARAMS.MZ**2, rtol=1e-15)
    np.testing.assert_allclose(PARAMS.ee, math.sqrt(4 * math.pi / 132.507), rtol=1e-14)
    np.testing.assert_allclose(PARAMS.gs, math.sqrt(4 * math.pi * 0.118), rtol=1e-14)


def test_bad_input(key):
    proc = amp.process("g g > t t~")
    with pytest.raises(ValueError, match=r"\(\.\.\., 4, 4\)"):
        proc(jnp.ones((3, 4)), PARAMS)
    with pytest.raises(ValueError, match="NaN"):
        proc(jnp.full((4, 4), jnp.nan), PARAMS)
    with pytest.raises(ValueError, match="unknown particle 'zz'"):
        amp.process("e+ e- > zz h")
    with pytest.raises(ValueError, match="unknown SM parameter"):
        amp.SMParams(MQ=1.0)
    with pytest.raises(ValueError, match="threshold"):
        amp.cross_section(amp.process("e+ e- > t t~"), 300.0, 100, key=key)


def test_float32_matrix_elements_are_finite(key):
    proc = amp.process("g g > t t~ g")
    p = events(key, proc, 1000.0, 16).astype(jnp.float32)
    params32 = jax.tree.map(lambda x: x.astype(jnp.float32), PARAMS)
    out = jax.jit(proc)(p, params32)
    assert out.dtype == jnp.float32 and np.all(np.isfinite(out)) and np.all(out > 0)
    np.testing.assert_allclose(out, proc(p.astype(jnp.float64), PARAMS), rtol=2e-3)


def test_colour_algebra():
    f = _colour.structure_constants()
    t = _colour.generators()
    # [t^a, t^b] = i f^{abc} t^c ; f^{123} = 1 ; Casimirs C_F = 4/3, C_A = 3
    comm = np.einsum("aij,bjk->abik", t, t) - np.einsum("bij,ajk->abik", t, t)
    np.testing.assert_allclose(comm, 1j * np.einsum("abc,cij->abij", f, t), atol=1e-14)
    assert abs(f[0, 1, 2] - 1) < 1e-14
    np.testing.assert_allclose(np.einsum("aij,ajk->ik", t, t), _colour.C_F * np.eye(3), atol=1e-14)
    np.testing.assert_allclose(np.einsum("acd,bcd->ab", f, f), _colour.C_A * np.eye(8), atol=1e-13)
