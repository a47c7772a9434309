"""scikit-hep at the edges: vector momenta, hist histograms, mplhep styles, iminuit fits on
difphys's differentiable NLL, and SLHA cards with blocks difphys does not use (pyslha too)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from difphys import amplitudes as amp
from difphys import kinematics as kin
from difphys.analysis import minuit_fit
from difphys.io import from_vector, to_vector

jax.config.update("jax_enable_x64", True)


def _momenta(key, n=50, p=7):
    k1, k2, k3 = jax.random.split(key, 3)
    three = jax.random.normal(k1, (n, p, 3)) * 20.0
    mass = jax.random.uniform(k2, (n, p), minval=0.0, maxval=5.0)
    energy = jnp.sqrt(jnp.sum(three**2, -1) + mass**2)
    mask = jax.random.uniform(k3, (n, p)) < 0.7
    p4 = jnp.concatenate([energy[..., None], three], -1)
    return np.asarray(jnp.where(mask[..., None], p4, 0.0)), np.asarray(mask)


def test_vector_round_trip_and_its_physics_agrees(key):
    pytest.importorskip("vector")
    p4, mask = _momenta(key)
    v = to_vector(p4, mask)
    np.testing.assert_array_equal(np.asarray([len(x) for x in v]), mask.sum(1))
    back, back_mask = from_vector(v, max_particles=p4.shape[1])
    # real particles first in each jet: compare the compacted rows
    for i in range(len(p4)):
        np.testing.assert_array_equal(back[i][back_mask[i]], p4[i][mask[i]])
    flat = to_vector(p4[mask])
    np.testing.assert_allclose(np.asarray(flat.mass), np.asarray(kin.mass(p4[mask])),
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.asarray(flat.pt), np.asarray(kin.pt(p4[mask])), rtol=1e-12)
    # vectors built from (pt, eta, phi, mass) come back as (E, px, py, pz)
    import vector

    cyl = vector.zip({"pt": [[30.0, 5.0], [12.0]], "eta": [[0.5, -1.0], [2.0]],
                      "phi": [[0.1, 3.0], [-2.0]], "mass": [[0.0, 0.14], [4.8]]})
    dense, m = from_vector(cyl)
    assert dense.shape == (2, 2, 4) and m.tolist() == [[True, True], [True, False]]
    np.testing.assert_allclose(np.asarray(kin.pt(dense[m])), [30.0, 5.0, 12.0], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(kin.mass(dense[m])), [0.0, 0.14, 4.8], atol=1e-9)
    with pytest.raises(ValueError, match="E, px, py, pz"):
        to_vector(np.zeros((3, 2, 3)))


def test_histogram_to_hist_keeps_values_errors_and_the_integral():
    pytest.importorskip("hist")
    proc = amp.process("e+ e- > mu+ mu-")
    edges = np.linspace(-1.0, 1.0, 11)

    def cos_theta(p):
        return p[:, 2, 3] / jnp.linalg.norm(p[:, 2, 1:], axis=-1)

    h = amp.dsigma(proc, cos_theta, edges, 91.1876, 20_000, key=jax.random.key(2))
    hh = h.to_hist(name="cos_theta", label="cos theta(mu-)")
    np.testing.assert_array_equal(hh.axes[0].edges, edges)
    np.testing.assert_array_equal(hh.values(), np.asarray(h.values))
    np.testing.assert_array_equal(hh.variances(), np.asarray(h.errors) ** 2)
    sigma = amp.cross_section(proc, 91.1876, 20_000, key=jax.random.key(2)).value
    np.testing.assert_allclose(np.sum(hh.values() * np.diff(edges)), float(sigma), rtol=1e-10)


def test_minuit_on_a_gaussian_likelihood_gives_the_analytic_errors(key):
    pytest.importorskip("iminuit")
    n = 400
    x = np.asarray(jax.random.normal(key, (n,)) * 2.0 + 5.0)

    def nll(v):
        mu, sigma = v[0], v[1]
        return jnp.sum(jnp.log(sigma) + (x - mu) ** 2 / (2 * sigma**2))

    r = minuit_fit(nll, {"mu": 4.0, "sigma": 1.5}, minos=True, limits={"sigma": (0.1, None)},
                   tol=1e-6)
    s = np.sqrt(np.mean((x - x.mean()) ** 2))  # the MLE of sigma
    assert r.valid and r.ngrad > 0
    assert r.values["mu"] == pytest.approx(x.mean(), abs=1e-4 * s)
    assert r.values["sigma"] == pytest.approx(s, rel=1e-4)
    # HESSE: the inverse Fisher information at the MLE
    assert r.errors["mu"] == pytest.approx(s / np.sqrt(n), rel=1e-3)
    assert r.errors["sigma"] == pytest.approx(s / np.sqrt(2 * n), rel=1e-3)
    # MINOS for mu profiles sigma: n/2 ln(s^2 + d^2) rises by 1/2 at d = s sqrt(e^(1/n) - 1)
    half = s * np.sqrt(np.expm1(1.0 / n))
    lo, hi = r.minos["mu"]
    assert -lo == pytest.approx(half, rel=1e-3) and hi == pytest.approx(half, rel=1e-3)
    with pytest.raises(ValueError, match="not finite"):
        minuit_fit(nll, {"mu": 4.0, "sigma": 0.0})


def test_minuit_on_the_z_line_shape_agrees_with_the_hessian_fit():
    pytest.importorskip("iminuit")
    from difphys.analysis import fit_scan, pseudo_data, scan_nll

    proc = amp.process("e+ e- > mu+ mu-")
    data = pseudo_data(proc, [89.0, 91.2, 93.0], [0.5, 0.5, 0.5], amp.SMParams(),
                       key=jax.random.key(11))
    key = jax.random.key(5)
    ref = fit_scan(data, proc, {"MZ": 91.0, "WZ": 2.6}, key=key, n_points=20_000)
    names = ("MZ", "WZ")
    r = minuit_fit(lambda v: scan_nll(v, names, data, proc, key=key, n_points=20_000),
                   {"MZ": 91.0, "WZ": 2.6})
    for name in names:
        assert r.values[name] == pytest.approx(ref.values[name], abs=0.02 * ref.errors[name])
        assert r.errors[name] == pytest.approx(ref.errors[name], rel=0.02)


SPINFO_CARD = """\
BLOCK SPINFO   # Spectrum calculator information
     1   SOFTSUSY    # spectrum calculator
     2   4.1.12      # version number
BLOCK QNUMBERS 9000005  # a new scalar
     1 0   # 3 times electric charge
BLOCK MASS
     6  1.725e+02   # MT
    23  9.11876e+01 # MZ
BLOCK SMINPUTS
     1  1.279e+02   # aEWM1
     3  1.18e-01    # aS
BLOCK NMIX  # a mixing matrix
  1  1  9.8e-01
DECAY  6  1.42e+00
   1.0  2  5  24
DECAY 23  2.4952e+00
"""


def test_slha_cards_with_text_blocks_are_read_by_both_backends(tmp_path):
    card = tmp_path / "card.slha"
    card.write_text(SPINFO_CARD)
    mine = amp.SMParams.from_param_card(card)
    assert float(mine.MT) == 172.5 and float(mine.WT) == 1.42 and float(mine.aS) == 0.118
    assert float(mine.aEWM1) == 127.9 and float(mine.WZ) == 2.4952
    pytest.importorskip("pyslha")
    theirs = amp.SMParams.from_param_card(card, backend="pyslha")
    for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(theirs), strict=True):
        assert float(a) == float(b)
    # a card difphys writes reads back the same through pyslha
    written = amp.SMParams().replace(MT=171.0, WZ=2.5).to_param_card(tmp_path / "w.dat")
    back = amp.SMParams.from_param_card(written, backend="pyslha")
    for a, b in zip(jax.tree.leaves(amp.SMParams().replace(MT=171.0, WZ=2.5)),
                    jax.tree.leaves(back), strict=True):
        assert float(a) == pytest.approx(float(b), rel=1e-6)
    with pytest.raises(ValueError, match="backend"):
        amp.SMParams.from_param_card(card, backend="mg5")


def test_mplhep_style_for_the_cli_plots(tmp_path):
    pytest.importorskip("mplhep")
    import matplotlib

    from difphys.cli import build_parser
    from difphys.jobs._plots import plot_roc, set_plot_style

    assert build_parser().parse_args(["--plot-style", "CMS", "demo"]).plot_style == "CMS"
    with pytest.raises(ValueError, match="plot style"):
        set_plot_style("Tufte")
    try:
        set_plot_style("CMS")
        plot_roc(tmp_path / "roc.png", np.linspace(0, 1, 5), np.linspace(0.01, 1, 5), 0.8,
                 "b vs light")
        assert "TeX Gyre Heros" in matplotlib.rcParams["font.sans-serif"]  # mplhep's CMS font
        assert (tmp_path / "roc.png").stat().st_size > 5000
    finally:
        set_plot_style(None)
    assert "TeX Gyre Heros" not in matplotlib.rcParams["font.sans-serif"]
