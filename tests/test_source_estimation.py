"""Source estimation (neural empirical Bayes): the marginal-likelihood estimators against the
Gaussian closed form, their bias and gradient properties, the fit, posteriors and their
coverage, the classifier two-sample test, conditional flows, and nuisance parameters fitted
with the source (identifiable and non-identifiable cases)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from difphys import flows

MU, S, SIGMA = 0.3, 0.474, 0.5


@pytest.fixture(scope="module")
def gaussian_data():
    problem = flows.gaussian_problem(MU, S, SIGMA)
    k1, k2 = jax.random.split(jax.random.key(11))
    y = problem.simulate(k2, problem.sample_source(k1, 20000))
    return problem, y


def _exact(y, mu=MU, s=S, sigma=SIGMA):
    tot = np.sqrt(s**2 + sigma**2)
    return -0.5 * ((np.asarray(y)[:, 0] - mu) / tot) ** 2 - np.log(tot) - 0.5 * np.log(2 * np.pi)


def _source(mu=MU, s=S):
    return flows.GaussianSource(jnp.array([mu]), jnp.log(jnp.array([s])))


class _ExactPosterior(eqx.Module):
    """The conjugate posterior of the Gaussian problem as a recognition network."""

    mu: float
    s: float
    sigma: float

    def _moments(self, y):
        prec = 1 / self.s**2 + 1 / self.sigma**2
        return (self.mu / self.s**2 + y / self.sigma**2) / prec, jnp.sqrt(1 / prec)

    def log_prob(self, x, y):
        m, sd = self._moments(y)
        return jnp.sum(-0.5 * ((x - m) / sd) ** 2 - jnp.log(sd) - 0.5 * jnp.log(2 * jnp.pi), -1)

    def sample_and_log_prob(self, key, y, n=None):
        m, sd = self._moments(y)
        shape = y.shape if n is None else (n, *y.shape)
        x = m + sd * jax.random.normal(key, shape)
        return x, self.log_prob(x, y)


def test_roulette_and_iw_equal_the_closed_form_within_monte_carlo_error(gaussian_data, key):
    problem, y = gaussian_data
    exact = _exact(y)
    k1, k2, k3 = jax.random.split(key, 3)
    rr = np.asarray(flows.log_marginal(k1, _source(), problem.log_lik, y, estimator="roulette", K=4))
    err = rr - exact
    assert abs(err.mean()) < 4 * err.std() / np.sqrt(len(err))
    rec = _ExactPosterior(MU, S, SIGMA)
    for est in ("iw", "elbo"):
        v = np.asarray(flows.log_marginal(jax.random.fold_in(k2, len(est)), _source(), problem.log_lik,
                                          y, estimator=est, K=8, recognition=rec))
        np.testing.assert_allclose(v, exact, rtol=0, atol=1e-10)  # weights are constant
    # with the source itself as the proposal the importance weights are p(y | x): iw == biased
    class SourceAsProposal(eqx.Module):
        src: flows.GaussianSource

        def sample_and_log_prob(self, key, y, n):
            x, lq = self.src.sample_and_log_prob(key, n * y.shape[0])
            return x.reshape(n, y.shape[0], -1), lq.reshape(n, y.shape[0])

    iw = np.asarray(flows.log_marginal(k3, _source(), problem.log_lik, y, estimator="iw", K=256,
                                       recognition=SourceAsProposal(_source())))
    e = iw - exact
    # a lower bound whose bias at K = 256 is below 0.01 nats (delta method: Var(w) / 2K)
    assert -0.01 - 4 * e.std() / np.sqrt(len(e)) < e.mean() < 4 * e.std() / np.sqrt(len(e))


def test_biased_estimator_error_is_negative_and_shrinks_like_one_over_k(gaussian_data, key):
    problem, y = gaussian_data
    exact = _exact(y)
    errors = {}
    for k_draws, sub in zip((4, 16, 64), jax.random.split(key, 3), strict=True):
        v = np.asarray(flows.log_marginal(sub, _source(), problem.log_lik, y, estimator="biased",
                                          K=k_draws))
        e = v - exact
        errors[k_draws] = (e.mean(), e.std() / np.sqrt(len(e)))
        assert e.mean() + 4 * errors[k_draws][1] < 0, (k_draws, errors[k_draws])
    # delta method: bias = -Var(w) / (2 K E[w]^2) + O(K^-2): ratios of 4 per factor 4 in K
    r1 = errors[4][0] / errors[16][0]
    r2 = errors[16][0] / errors[64][0]
    assert 3.0 < r1 < 5.0, r1
    assert 2.5 < r2 < 6.0, r2


def test_roulette_gradient_vanishes_at_the_maximum_likelihood_point(gaussian_data, key):
    problem, y = gaussian_data
    y = y[:2000]
    mu_ml = jnp.mean(y, axis=0)
    s_ml = jnp.sqrt(jnp.var(y, axis=0) - SIGMA**2)

    def grad_log_s(k, estimator, k_draws):
        def f(log_s):
            src = flows.GaussianSource(mu_ml, log_s)
            return jnp.mean(flows.log_marginal(k, src, problem.log_lik, y, estimator=estimator,
                                               K=k_draws))
        return jax.grad(f)(jnp.log(s_ml))[0]

    keys = jax.random.split(key, 300)
    rr = np.asarray(jax.jit(jax.vmap(lambda k: grad_log_s(k, "roulette", 4)))(keys))
    z_rr = rr.mean() / (rr.std() / np.sqrt(len(rr)))
    b1 = np.asarray(jax.jit(jax.vmap(lambda k: grad_log_s(k, "biased", 1)))(
        jax.vmap(jax.random.clone)(keys)))
    z_b1 = b1.mean() / (b1.std() / np.sqrt(len(b1)))
    assert abs(z_rr) < 3, z_rr
    assert abs(z_b1) > 100, z_b1


def test_biased_fit_with_256_draws_recovers_the_maximum_likelihood_source(gaussian_data, key):
    problem, y = gaussian_data
    fit = flows.fit_source(key, flows.GaussianSource(jnp.zeros(1), jnp.zeros(1)), problem.log_lik,
                           y, estimator="biased", K=256, steps=3000,
                           optimizer=optax.adam(1e-2), eval_every=200, patience=5, progress=False)
    mu_ml = float(np.mean(y))
    s_ml = float(np.sqrt(np.var(y) - SIGMA**2))
    mu_fit = float(fit.source.loc[0])
    s_fit = float(jnp.exp(fit.source.log_scale[0]))
    se_mu = np.sqrt(np.var(y) / len(y))
    assert abs(mu_fit - mu_ml) < max(0.03 * abs(mu_ml), 3 * se_mu)
    assert abs(s_fit - s_ml) / s_ml < 0.03
    assert fit.history.n_rows >= fit.best_step > 0
    assert np.isfinite(fit.best_val)


def test_small_k_biased_fit_collapses_while_roulette_does_not(gaussian_data, key):
    """Trained without early stopping (patience larger than the run), K = 1 shrinks the width
    towards 0; the debiased estimator with the same base draws stays near the ML width."""
    problem, y = gaussian_data
    s_ml = float(np.sqrt(np.var(y) - SIGMA**2))
    widths = {}
    for est, sub in zip(("biased", "roulette"), jax.random.split(key), strict=True):
        fit = flows.fit_source(sub, flows.GaussianSource(jnp.zeros(1), jnp.zeros(1)),
                               problem.log_lik, y, estimator=est, K=1, steps=1500,
                               optimizer=optax.adam(2e-2), eval_every=1500, patience=2,
                               val_K=16, progress=False)
        widths[est] = float(jnp.exp(fit.state.params[0].log_scale[0]))
    assert widths["biased"] < 0.25 * s_ml, widths
    assert abs(widths["roulette"] - s_ml) / s_ml < 0.1, widths


def test_log_marginal_gradient_matches_finite_differences(gaussian_data, key):
    problem, y = gaussian_data
    y = y[:64]
    for est in ("biased", "roulette"):
        def f(theta, est=est):
            src = flows.GaussianSource(theta[:1], theta[1:])
            return jnp.sum(flows.log_marginal(jax.random.clone(key), src, problem.log_lik, y,
                                              estimator=est, K=8))
        theta = jnp.array([0.1, -0.5])
        g = jax.grad(f)(theta)
        h = 1e-6
        fd = [(f(theta.at[i].add(h)) - f(theta.at[i].add(-h))) / (2 * h) for i in range(2)]
        np.testing.assert_allclose(g, fd, rtol=1e-6)


def test_posterior_matches_conjugate_and_intervals_cover(gaussian_data, key):
    problem, y = gaussian_data
    src = _source()
    k1, k2 = jax.random.split(key)
    post = flows.posterior(k1, src, problem.log_lik, y[0], 20000)
    rec = _ExactPosterior(MU, S, SIGMA)
    m, sd = rec._moments(y[0])
    w = np.exp(np.asarray(post.log_weights))
    mean = float(np.sum(w * np.asarray(post.x[:, 0])))
    assert abs(mean - float(m[0])) < 4 * float(sd) / np.sqrt(float(post.ess))
    assert 0.3 * 20000 < float(post.ess) <= 20000
    # 68% intervals over 500 held-out observations: binomial(500, 0.68) covers [0.63, 0.73]
    k_x, k_y = jax.random.split(k2)
    x_true = problem.sample_source(k_x, 500)
    y_obs = problem.simulate(k_y, x_true)
    keys = jax.random.split(jax.random.key(5), 500)
    lo, hi = jax.vmap(lambda k, yi: flows.credible_interval(
        flows.posterior(k, src, problem.log_lik, yi, 4000), 0.68))(keys, y_obs)
    cover = float(np.mean((np.asarray(lo) <= np.asarray(x_true)) & (np.asarray(x_true) <= np.asarray(hi))))
    assert 0.63 <= cover <= 0.73, cover


def test_weighted_quantile_equals_the_unweighted_one_for_equal_weights(key):
    x = jax.random.normal(key, (10001,))
    q = flows.weighted_quantile(x, jnp.zeros(10001), jnp.array([0.16, 0.5, 0.84]))
    np.testing.assert_allclose(q, np.quantile(np.asarray(x), [0.16, 0.5, 0.84]), atol=2e-3)


def test_c2st_is_half_for_equal_samples_and_near_one_for_separated(key):
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    a = np.asarray(jax.random.normal(k1, (4000, 2)))
    b = np.asarray(jax.random.normal(k2, (4000, 2)))
    same = flows.c2st_auc(k3, a, b, steps=500)
    assert abs(same.auc - 0.5) < 4 * same.error + 0.01, same
    far = flows.c2st_auc(k4, a, b + np.array([3.0, 0.0]), steps=500)
    assert far.auc > 0.95
    # a shift of 0.3 standard deviations: analytic AUC of the optimal score Phi(0.3 / sqrt 2)
    mid = flows.c2st_auc(k5, a, b + np.array([0.3, 0.0]), steps=500)
    assert abs(mid.auc - 0.5840) < 4 * mid.error + 0.01, mid


def test_conditional_flow_inverts_normalises_and_has_fd_gradients(key):
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    flow = flows.make_conditional_spline_flow(k1, 2, 3, n_layers=3, hidden=16, loc=(1.0, -2.0),
                                              scale=(2.0, 0.5))
    # randomise the zero-initialised last layer so the test sees a non-trivial map
    leaves, tree = jax.tree_util.tree_flatten(flow)
    keys = jax.random.split(k2, len(leaves))
    leaves = [leaf + 0.1 * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys, strict=True)]
    flow = jax.tree_util.tree_unflatten(tree, leaves)
    ctx = jax.random.normal(k3, (5, 3))
    x, lq = flow.sample_and_log_prob(k4, ctx, 7)
    assert x.shape == (7, 5, 2) and lq.shape == (7, 5)
    np.testing.assert_allclose(flow.log_prob(x, ctx), lq, atol=1e-9)
    z, ld = flow.inverse_and_log_det(x, ctx)
    x2, ld2 = flow.forward_and_log_det(z, ctx)
    np.testing.assert_allclose(x2, x, atol=1e-9)
    np.testing.assert_allclose(ld, -ld2, atol=1e-9)
    # the density integrates to one over a grid (for one context)
    g = np.linspace(-20, 22, 841)
    gy = np.linspace(-7, 3, 401)
    pts = jnp.asarray(np.stack(np.meshgrid(g, gy, indexing="ij"), -1).reshape(-1, 2))
    dens = np.exp(np.asarray(flow.log_prob(pts, ctx[0])))
    assert abs(dens.sum() * (g[1] - g[0]) * (gy[1] - gy[0]) - 1) < 2e-3
    # one-dimensional x: every layer transforms it from the context
    f1 = flows.make_conditional_spline_flow(k5, 1, 2, n_layers=2, hidden=8)
    assert f1.log_prob(jnp.zeros((4, 1)), jnp.ones((4, 2))).shape == (4,)

    def f(c):
        return jnp.sum(flow.log_prob(x[0], c))

    g_ad = jax.grad(f)(ctx)
    h = 1e-6
    e = jnp.zeros_like(ctx).at[2, 1].set(h)
    np.testing.assert_allclose(g_ad[2, 1], (f(ctx + e) - f(ctx - e)) / (2 * h), rtol=1e-5)


class _NoisyGaussian(eqx.Module):
    """``log p(y | x)`` for ``y`` = repeated measurements of a scalar ``x`` with one noise width
    (an array leaf: the nuisance parameter)."""

    log_sigma: jax.Array

    def __call__(self, y, x):
        sigma = jnp.exp(self.log_sigma)
        return jnp.sum(-0.5 * ((y - x[0]) / sigma) ** 2 - self.log_sigma - 0.5 * jnp.log(2 * jnp.pi))


def _fit_nuisance(key, y, log_sigma0, log_s0):
    return flows.fit_source(key, flows.GaussianSource(jnp.zeros(1), jnp.full(1, log_s0)),
                            _NoisyGaussian(jnp.asarray(log_sigma0)), y, estimator="biased", K=256,
                            steps=2500, optimizer=optax.adam(1e-2), fit_likelihood=True,
                            eval_every=250, patience=4, progress=False)


def test_nuisance_noise_width_is_recovered_from_repeated_measurements(key):
    """Two measurements of each source point separate the source width from the noise: the
    jointly fitted sigma recovers the true 0.5 and s the true 0.474."""
    k_x, k_e, k_fit = jax.random.split(key, 3)
    x = MU + S * jax.random.normal(k_x, (8000, 1))
    y = x + SIGMA * jax.random.normal(k_e, (8000, 2))
    fit = _fit_nuisance(k_fit, y, np.log(1.0), np.log(0.1))
    sigma = float(jnp.exp(fit.log_lik.log_sigma))
    s = float(jnp.exp(fit.source.log_scale[0]))
    assert abs(sigma - SIGMA) / SIGMA < 0.05, sigma
    assert abs(s - S) / S < 0.05, s


def test_nuisance_is_not_identifiable_from_single_measurements(key):
    """One measurement per source point identifies only s^2 + sigma^2: fits from two starting
    points agree on the sum and land on different splits."""
    k_x, k_e, k1, k2 = jax.random.split(key, 4)
    x = MU + S * jax.random.normal(k_x, (8000, 1))
    y = x + SIGMA * jax.random.normal(k_e, (8000, 1))
    splits = []
    for sub, (ls0, lsig0) in zip((k1, k2), ((np.log(0.1), np.log(0.9)), (np.log(0.9), np.log(0.1))),
                                 strict=True):
        fit = _fit_nuisance(sub, y, lsig0, ls0)
        splits.append((float(jnp.exp(fit.source.log_scale[0])), float(jnp.exp(fit.log_lik.log_sigma))))
    total = [s**2 + g**2 for s, g in splits]
    assert abs(total[0] - total[1]) / total[0] < 0.05, splits
    assert abs(total[0] - float(np.var(y))) / float(np.var(y)) < 0.05, splits
    assert abs(splits[0][0] - splits[1][0]) > 0.2, splits


def test_observations_no_draw_explains_are_left_out_of_fit_and_validation(gaussian_data, key):
    """A likelihood that is zero for some observations (here: every y > 1.5) gives them a
    -inf estimate; the fit and the held-out evaluation leave them out, so early stopping still
    sees the source improve (regression: a -inf held-out mean used to freeze the best step at 0)."""
    problem, y = gaussian_data

    def log_lik(yy, x):
        return jnp.where(yy[0] > 1.5, -jnp.inf, problem.log_lik(yy, x))

    assert float(np.mean(np.asarray(y)[:, 0] > 1.5)) > 0.005
    fit = flows.fit_source(key, flows.GaussianSource(jnp.zeros(1), jnp.zeros(1)), log_lik, y,
                           estimator="biased", K=64, steps=1000, optimizer=optax.adam(1e-2),
                           eval_every=200, patience=5, progress=False, shared_draws=True)
    assert fit.best_step > 0 and np.isfinite(fit.best_val)
    assert np.all(np.isfinite(fit.history.loss))
    assert fit.history.n_dead.max() > 0
