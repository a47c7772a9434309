"""Parton densities: Pythia 8's own interpolation of the same lhagrid1 set, the momentum sum rule,
gradients, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from difphys import pdf
from difphys.testing import check_grad_fd

SET = "NNPDF31_lo_as_0118"
FLAVOURS = (21, 1, 2, 3, 4, 5, -1, -2, -3, -4, -5)


@pytest.fixture(scope="module")
def pythia_pdf():
    p8 = pytest.importorskip("pythia8mc")
    py = p8.Pythia("", False)
    for line in (f"PDF:pSet = LHAGrid1:{SET}_0000.dat", "Beams:eCM = 13000.", "HardQCD:all = on",
                 "PartonLevel:all = off", "HadronLevel:all = off", "Print:quiet = on"):
        py.readString(line)
    assert py.init()
    return py, py.getPDFPtr(2212)  # keep the Pythia object alive with its PDF


@pytest.fixture(scope="module")
def nnpdf():
    pytest.importorskip("pythia8mc")  # the grids ship with its wheel
    return pdf.load(SET, alpha_s=0.118)


def _points(n, seed=0):
    rng = np.random.default_rng(seed)
    return 10 ** rng.uniform(-6, -0.02, n), 10 ** rng.uniform(0.25, 4.5, n)


def test_values_and_derivatives_match_pythia(pythia_pdf, nnpdf):
    """Pythia 8.317's LHAGrid1 reader on the same grid: values at 1,000 (x, Q) points, and
    d/dx, d/dQ against Pythia's central differences (step 1e-7 relative) at 1,000 points."""
    _, ref = pythia_pdf
    x, q = _points(1000)
    for fid in FLAVOURS:
        ours = np.asarray(nnpdf.xfx(fid, x, q))
        theirs = np.array([ref.xf(fid, a, b * b) for a, b in zip(x, q, strict=True)])
        # Pythia floors a negative density at zero (LO charm near threshold goes negative on
        # the NNPDF grid); difphys returns the grid's value, as LHAPDF does
        np.testing.assert_allclose(np.maximum(ours, 0.0), theirs, rtol=1e-6, atol=1e-12)
        assert np.all(ours[theirs > 0] > 0)
    for fid in (21, 2, -1, 5):
        dx = jax.vmap(jax.grad(lambda a, b, f=fid: nnpdf.xfx(f, a, b), argnums=(0, 1)))(
            jnp.asarray(x), jnp.asarray(q))
        h = 1e-7
        fx = np.array([(ref.xf(fid, a * (1 + h), b * b) - ref.xf(fid, a * (1 - h), b * b))
                       / (2 * h * a) for a, b in zip(x, q, strict=True)])
        fq = np.array([(ref.xf(fid, a, (b * (1 + h)) ** 2) - ref.xf(fid, a, (b * (1 - h)) ** 2))
                       / (2 * h * b) for a, b in zip(x, q, strict=True)])
        value = np.abs(np.asarray([ref.xf(fid, a, b * b) for a, b in zip(x, q, strict=True)]))
        on = value > 1e-8  # (b quarks vanish below their threshold)
        scale_x, scale_q = value[on] / x[on], value[on] / q[on]
        # relative to the function's own scale: a derivative can pass through zero
        assert np.max(np.abs(np.asarray(dx[0])[on] - fx[on]) / scale_x) < 1e-6
        assert np.max(np.abs(np.asarray(dx[1])[on] - fq[on]) / scale_q) < 1e-6


def _momentum(pdf_set, q):
    t = np.linspace(np.log(pdf_set.x_range[0]), 0.0, 20001)
    x = np.exp(t)
    total = sum(np.asarray(pdf_set.xfx(fid, x, q)) for fid in pdf_set.flavours)
    return np.trapezoid(total * x, t)


def test_momentum_sum_rule(nnpdf):
    """sum_f int x f(x, Q) dx = 1 at Q = 100 GeV within 1e-3 for NNPDF3.1 NNLO (photon included;
    x below the grid neglected). The LO grids hold 1.0014 (3.1) and 1.005 (2.3) at every Q: not
    exactly normalised, but conserved by the evolution, which the interpolation must keep."""
    nnlo = pdf.load("NNPDF31_nnlo_as_0118_luxqed")
    assert abs(_momentum(nnlo, 100.0) - 1) < 1e-3
    lo_10, lo_100 = _momentum(nnpdf, 10.0), _momentum(nnpdf, 100.0)
    assert abs(lo_10 - lo_100) < 1e-4 and abs(lo_100 - 1) < 3e-3


def test_gradient_matches_finite_differences(nnpdf):
    check_grad_fd(lambda v: nnpdf.xfx(21, v[0], v[1]), jnp.array([0.013, 91.2]), eps=1e-6,
                  rtol=1e-6)


def test_bad_input_is_refused_clearly(nnpdf, tmp_path):
    with pytest.raises(FileNotFoundError, match="NoSuchSet.*searched"):
        pdf.load("NoSuchSet")
    with pytest.raises(ValueError, match=r"x must lie in \(0, 1\]"):
        nnpdf.xfx(21, 1.5, 100.0)
    with pytest.raises(ValueError, match="below the grid"):
        nnpdf.xfx(21, 1e-12, 100.0)
    with pytest.raises(ValueError, match="Q outside the grid"):
        nnpdf.xfx(21, 0.1, 0.5)
    with pytest.raises(ValueError, match="finite"):
        nnpdf.xfx(21, np.nan, 100.0)
    bad = tmp_path / "Bad_0000.dat"
    bad.write_text("PdfType: central\nFormat: lhagrid1\n---\n0.1 0.2\n")
    with pytest.raises(ValueError, match="no subgrid"):
        pdf.load(bad)
    with pytest.raises(ValueError, match="no alpha_s"):
        pdf.load(SET).alpha_s(91.0)
    # under jit out-of-grid points are frozen at the border and flagged by inside()
    frozen = jax.jit(lambda a: nnpdf.xfx(21, a, 100.0))(jnp.array([1e-12, 1e-9]))
    assert float(frozen[0]) == float(frozen[1])
    assert not bool(nnpdf.inside(1e-12, 100.0)) and bool(nnpdf.inside(1e-3, 100.0))
    np.testing.assert_allclose(nnpdf.alpha_s(91.1876), 0.118)


def _pythia_ttbar_sigma(n_events=40_000):
    """Pythia 8's LO t t~ cross section (pb) with the same PDF, fixed scales mu = MT = 173 GeV,
    fixed alpha_s = 0.118, an on-shell top, no shower."""
    p8 = pytest.importorskip("pythia8mc")
    py = p8.Pythia("", False)
    for line in ("Beams:eCM = 13000.", "Top:gg2ttbar = on", "Top:qqbar2ttbar = on",
                 f"PDF:pSet = LHAGrid1:{SET}_0000.dat", "SigmaProcess:renormScale2 = 5",
                 "SigmaProcess:factorScale2 = 5", "SigmaProcess:renormFixScale = 29929.",
                 "SigmaProcess:factorFixScale = 29929.", "SigmaProcess:alphaSorder = 0",
                 "SigmaProcess:alphaSvalue = 0.118", "6:m0 = 173.0",
                 "PhaseSpace:useBreitWigners = off", "PartonLevel:all = off",
                 "HadronLevel:all = off", "ProcessLevel:resonanceDecays = off",
                 "Print:quiet = on", "Random:setSeed = on", "Random:seed = 20261203"):
        assert py.readString(line), line
    assert py.init()
    for _ in range(n_events):
        py.next()
    info = py.infoPython()
    return info.sigmaGen() * 1e9, info.sigmaErr() * 1e9  # mb -> pb


@pytest.mark.slow
def test_pp_to_ttbar_matches_pythia(key, nnpdf):
    """sigma(p p > t t~) at 13 TeV, LO, five-flavour proton (Pythia's qqbar2ttbar takes b b~
    too), within 3 combined standard errors of Pythia's sigmaGen. Measured: 576.8 +- 4.5 pb
    against Pythia's 574.3 +- 1.7 pb (40,000 events), 0.5 combined sigma. (Slow: 11 subprocesses
    compile, about 75 s.)"""
    from difphys import amplitudes as amp

    params = amp.SMParams(MB=0.0, aS=0.118)
    pp = amp.process("define p = g u c d s b u~ c~ d~ s~ b~; p p > t t~")
    ours = amp.cross_section(pp, 13000.0, 50_000, params, key=key, pdf=nnpdf, scale=173.0)
    ref, ref_err = _pythia_ttbar_sigma()
    combined = float(np.hypot(float(ours.error), ref_err))
    assert abs(float(ours.value) - ref) < 3 * combined, (float(ours.value), ref, combined)
    assert float(ours.error) < 0.03 * ref


def test_hadronic_sigma_gradient_in_mt(key, nnpdf):
    """d sigma(g g > t t~) / d MT by autodiff equals a central difference with common random
    numbers (the same key)."""
    from difphys import amplitudes as amp

    gg = amp.process("g g > t t~")

    def sigma(mt):
        params = amp.SMParams(MT=mt)
        return amp.cross_section(gg, 13000.0, 8192, params, key=key, pdf=nnpdf, scale=173.0,
                                 batch_size=8192).value

    auto = float(jax.grad(sigma)(173.0))
    h = 1e-3
    numeric = (float(sigma(173.0 + h)) - float(sigma(173.0 - h))) / (2 * h)
    assert auto < 0
    np.testing.assert_allclose(auto, numeric, rtol=1e-5)


def test_hadronic_bad_input(key, nnpdf):
    from difphys import amplitudes as amp

    gg = amp.process("g g > t t~")
    with pytest.raises(ValueError, match="needs scale"):
        amp.cross_section(gg, 13000.0, 100, key=key, pdf=nnpdf)
    with pytest.raises(ValueError, match="outside the PDF grid"):
        amp.cross_section(gg, 13000.0, 100, key=key, pdf=nnpdf, scale=1e7)
    with pytest.raises(ValueError, match="massless"):
        amp.cross_section(amp.process("b b~ > t t~"), 13000.0, 100, key=key, pdf=nnpdf,
                          scale=173.0)
    with pytest.raises(ValueError, match="beams"):
        amp.cross_section(gg, 13000.0, 100, key=key, pdf=nnpdf, scale=173.0, beams=(2212, 11))


def test_alpha_s_table_of_an_info_file(tmp_path):
    """An ``.info`` with LHAPDF's ``AlphaS_Qs``/``AlphaS_Vals`` (here tabulated from two-loop
    running with a threshold at MB): the knots are reproduced exactly, values between them
    within 1e-5 of the function (1e-3 next to the table's ends), d alpha_s / dQ equals finite differences; Q off the table
    is an error; an explicit alpha_s= still means one-loop running."""
    import shutil

    pytest.importorskip("pythia8mc")
    dat, _ = pdf.find(SET)
    folder = tmp_path / "MySet"
    folder.mkdir()
    shutil.copy(dat, folder / "MySet_0000.dat")

    def two_loop(q, nf):
        b0, b1 = (33 - 2 * nf) / (12 * np.pi), (153 - 19 * nf) / (24 * np.pi**2)
        lam = 0.2 if nf == 5 else 0.25
        lg = np.log(q**2 / lam**2)
        return 1 / (b0 * lg) - b1 * np.log(lg) / (b0**3 * lg**2)

    below = np.geomspace(1.65, 4.7, 12)
    above = np.geomspace(4.7, 1e4, 40)
    qs = np.concatenate([below, above])
    vals = np.concatenate([two_loop(below, 4), two_loop(above, 5)])
    (folder / "MySet.info").write_text(
        "SetDesc: test\nAlphaS_MZ: 0.118\nAlphaS_Type: ipol\n"
        f"AlphaS_Qs: [{', '.join(f'{q:.15e}' for q in qs)}]\n"
        f"AlphaS_Vals: [{', '.join(f'{v:.15e}' for v in vals)}]\n")
    s = pdf.load(folder)
    # the knots; at the threshold itself the lower subgrid holds (as for the PDF grids)
    expected = vals.copy()
    expected[12] = vals[11]
    np.testing.assert_allclose(np.asarray(s.alpha_s(jnp.asarray(qs))), expected, rtol=1e-13)
    mid = np.sqrt(above[1:] * above[:-1])
    got = np.asarray(s.alpha_s(jnp.asarray(mid)))
    np.testing.assert_allclose(got[1:-1], two_loop(mid, 5)[1:-1], rtol=1e-5)
    np.testing.assert_allclose(got, two_loop(mid, 5), rtol=1e-3)  # one-sided end slopes
    assert float(s.alpha_s(3.0)) == pytest.approx(two_loop(3.0, 4), rel=1e-5)  # below MB
    check_grad_fd(lambda q: s.alpha_s(q), jnp.asarray(173.0), eps=1e-3, rtol=1e-6)
    with pytest.raises(ValueError, match="alpha_s table"):
        s.alpha_s(2e4)
    assert float(pdf.load(folder, alpha_s=0.118).alpha_s(91.1876)) == pytest.approx(0.118)
