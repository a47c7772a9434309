"""Stochastic AD: unbiasedness against closed forms (>= 1e5 samples, 4 standard errors)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import gammaincc

from difphys import stochad as sd

N = 100_000
K_SE = 4.0


@functools.cache
def _cached_keys(seed, n):
    return jax.random.split(jax.random.key(seed), n)


def _keys(seed=0, n=N):
    """The same keys for every estimator (common random numbers), cloned for the key-reuse
    checker."""
    return jax.random.clone(_cached_keys(seed, n))


def _estimates(f, theta, method="stochad", seed=0, n=N, **options):
    g = jax.jit(jax.vmap(lambda k: sd.derivative_estimate(f, theta, key=k, method=method, **options)))
    return np.asarray(g(_keys(seed, n)))


def _assert_unbiased(est, exact, k=K_SE):
    mean = est.mean(axis=0)
    se = est.std(axis=0) / np.sqrt(est.shape[0])
    # exact-zero-variance estimators (e.g. Poisson mean) must hit the value to rounding
    tol = k * se + 1e-9 * (1 + np.abs(exact))
    assert np.all(np.abs(mean - exact) <= tol), (mean, exact, se)


# ---------------------------------------------------------------------- closed-form cases
def _two_bernoullis(th, k):
    k1, k2 = jax.random.split(k)
    return 2 * sd.bernoulli(k1, 3 * th) + sd.bernoulli(k2, th)


def _walk(th, k):
    return jnp.sum(2 * sd.bernoulli(k, th, shape=(20,)) - 1)


def _probs(th):
    return jnp.stack([th, 2 * th, 1 - 3 * th])


def _cat_sin(th, k):
    return jnp.sin(1.3 * sd.categorical(k, _probs(th)))


_CAT_EXACT = float(jax.grad(lambda th: jnp.sum(_probs(th) * jnp.sin(1.3 * jnp.arange(3.0))))(0.2))

CASES = {
    "bernoulli": (lambda p, k: sd.bernoulli(k, p), 0.3, 1.0),
    "binomial": (lambda p, k: sd.binomial(k, 10.0, p), 0.3, 10.0),
    "geometric": (lambda p, k: sd.geometric(k, p), 0.3, -1 / 0.3**2),
    "poisson": (lambda r, k: sd.poisson(k, r), 3.0, 1.0),
    "poisson_x2": (lambda r, k: sd.poisson(k, r) ** 2, 3.0, 1 + 2 * 3.0),
    "two_bernoullis": (_two_bernoullis, 0.1, 7.0),
    "random_walk": (_walk, 0.4, 40.0),
    "categorical_nonlinear": (_cat_sin, 0.2, _CAT_EXACT),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("method", ["stochad", "score", "score_baseline"])
def test_unbiased_closed_forms(name, method):
    f, theta, exact = CASES[name]
    _assert_unbiased(_estimates(f, theta, method), exact)


def _poisson_while(th, key):
    """Number of Poisson(th) draws until their running sum reaches 5 (a data-dependent loop)."""

    def body(c):
        i, s, k = c
        k, sub = jax.random.split(k)
        return i + 1, s + sd.poisson(sub, th), k

    init = (jnp.zeros((), jnp.int32), jnp.zeros((), th.dtype), key)
    i, _, _ = jax.lax.while_loop(lambda c: c[1] < 5, body, init)
    return i.astype(th.dtype)


def test_while_loop_with_poisson_trip_count():
    # N = min{i: S_i >= 5} with S_i ~ Poisson(i th): E[N] = sum_i P(S_i <= 4) = sum_i Q(5, i th)
    th = 1.3
    exact = float(jax.grad(lambda t: jnp.sum(gammaincc(5.0, jnp.arange(2000.0) * t)))(th))
    for method in ("stochad", "score_baseline"):
        _assert_unbiased(_estimates(_poisson_while, th, method, seed=1), exact)


def _cond_program(th, key):
    k1, k2 = jax.random.split(key)
    x = sd.bernoulli(k1, th)
    return jax.lax.cond(
        x > 0.5,
        lambda: sd.poisson(k2, 2 * th) ** 2,
        lambda: jnp.cos(th) + sd.bernoulli(k2, th),
    )


def test_cond_and_mixed_pathwise():
    # E = th (2th + 4th^2) + (1 - th)(cos th + th)
    th = 0.4
    exact = float(jax.grad(lambda t: t * (2 * t + 4 * t**2) + (1 - t) * (jnp.cos(t) + t))(th))
    _assert_unbiased(_estimates(_cond_program, th), exact)


def _scan_walk(th, key):
    def step(x, k):
        return x + 2 * sd.bernoulli(k, th) - 1, None

    x, _ = jax.lax.scan(step, jnp.zeros((), th.dtype), jax.random.split(key, 15))
    return x**2


def test_scan_nonlinear_walk():
    # x = 2B - 15 with B ~ Binomial(15, th): E[x^2] = 4 Var B + (2 E B - 15)^2
    th = 0.35
    exact = float(jax.grad(lambda t: 4 * 15 * t * (1 - t) + (30 * t - 15) ** 2)(th))
    _assert_unbiased(_estimates(_scan_walk, th), exact)


def test_vector_theta_gradient():
    def f(th, key):
        k1, k2, k3 = jax.random.split(key, 3)
        return sd.bernoulli(k1, th[0]) * sd.poisson(k2, th[1]) + sd.geometric(k3, th[0]) * th[1]

    th = jnp.array([0.3, 2.0])
    exact = np.array([th[1] - th[1] / th[0] ** 2, th[0] + (1 - th[0]) / th[0]])
    est = _estimates(f, th)
    assert est.shape == (N, 2)
    _assert_unbiased(est, exact)


def test_more_alternatives_reduce_variance():
    # f = sum_i i B_i with B_i ~ Bernoulli(th): d/dth E f = sum_i i = 190. Which of the 20 draws
    # gets the single alternative matters (f changes by i), so averaging 4 must cut the variance
    def f(th, k):
        return jnp.sum(jnp.arange(20.0) * sd.bernoulli(k, th, shape=(20,)))

    one = _estimates(f, 0.4, n=20_000)
    four = _estimates(f, 0.4, n=20_000, n_alternatives=4)
    _assert_unbiased(one, 190.0)
    _assert_unbiased(four, 190.0)
    assert four.var() < 0.6 * one.var()


# ------------------------------------------------------------------------ biased methods
@pytest.mark.parametrize("method", ["gumbel", "straight_through"])
def test_relaxed_methods_are_biased_on_nonlinear_case(method):
    f, theta, exact = CASES["categorical_nonlinear"]
    est = _estimates(f, theta, method)
    se = est.std() / np.sqrt(N)
    assert abs(est.mean() - exact) > 6 * se


def test_straight_through_exact_for_linear_program():
    f, theta, exact = CASES["two_bernoullis"]
    est = _estimates(f, theta, "straight_through", n=1000)
    np.testing.assert_allclose(est, exact, rtol=1e-12)


def test_gumbel_bias_shrinks_with_temperature():
    f, theta, exact = CASES["bernoulli"]
    hot = _estimates(f, theta, "gumbel", temperature=1.0).mean()
    cold = _estimates(f, theta, "gumbel", temperature=0.1).mean()
    assert abs(cold - exact) < abs(hot - exact)


def test_fd_common_random_numbers_on_smooth_program():
    def f(th, key):
        return jnp.sum(sd.normal(key, th, 2.0, shape=(3,)) ** 2)

    est = _estimates(f, 0.7, "fd", n=1000, h=1e-3)
    exact = jax.vmap(jax.grad(f))(jnp.full((1000,), 0.7), _keys(0, 1000))
    np.testing.assert_allclose(est, exact, rtol=1e-6)


# ---------------------------------------------------------------------- pathwise / grads
def _continuous(th, key):
    k1, k2, k3 = jax.random.split(key, 3)
    x = sd.normal(k1, th, 2 * th, shape=(4,))
    y = sd.exponential(k2, th)
    z = sd.uniform(k3, -th, th**2)
    return jnp.sum(jnp.sin(x)) * y + z


def test_pure_continuous_program_equals_jax_grad():
    keys = _keys(3, 500)
    est = jax.vmap(lambda k: sd.derivative_estimate(_continuous, 0.8, key=k))(keys)
    exact = jax.vmap(jax.grad(_continuous), in_axes=(None, 0))(0.8, keys)
    np.testing.assert_allclose(est, exact, rtol=1e-12, atol=1e-12)


def test_continuous_samplers_gradient_matches_finite_differences():
    from difphys.testing import check_grad_fd

    key = jax.random.key(5)
    check_grad_fd(lambda th: _continuous(th, key), jnp.asarray(0.8))


# ------------------------------------------------------------------------ samplers
@pytest.mark.parametrize(
    "draw, mean, var",
    [
        (lambda k: sd.bernoulli(k, 0.3, shape=(N,)), 0.3, 0.21),
        (lambda k: sd.binomial(k, 12.0, 0.4, shape=(N,)), 4.8, 2.88),
        (lambda k: sd.geometric(k, 0.25, shape=(N,)), 3.0, 12.0),
        (lambda k: sd.poisson(k, 4.5, shape=(N,)), 4.5, 4.5),
        (lambda k: sd.poisson(k, 150.0, shape=(N,)), 150.0, 150.0),
        (lambda k: sd.categorical(k, jnp.array([0.2, 0.5, 0.3]), shape=(N,)), 1.1, 0.49),
    ],
)
def test_sampler_moments(draw, mean, var):
    x = np.asarray(draw(jax.random.key(11)))
    assert abs(x.mean() - mean) < K_SE * np.sqrt(var / N)
    assert abs(x.var() - var) < 0.05 * var
    np.testing.assert_array_equal(x, np.round(x))


def test_sampler_is_deterministic_per_key_and_jittable():
    key = jax.random.key(2)
    a = sd.poisson(key, jnp.array([1.0, 7.0, 30.0]))
    b = jax.jit(lambda k: sd.poisson(k, jnp.array([1.0, 7.0, 30.0])))(key)
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------- errors
def test_bad_inputs_raise_clear_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="bernoulli p"):
        sd.bernoulli(key, 1.2)
    with pytest.raises(ValueError, match="NaN"):
        sd.poisson(key, jnp.nan)
    with pytest.raises(ValueError, match="geometric p"):
        sd.geometric(key, 0.0)
    with pytest.raises(ValueError, match="integer"):
        sd.binomial(key, 2.5, 0.5)
    with pytest.raises(ValueError, match="sum to one"):
        sd.categorical(key, jnp.array([0.5, 0.6]))
    with pytest.raises(ValueError, match="unknown method"):
        sd.derivative_estimate(lambda t, k: t, 1.0, key=key, method="magic")
    with pytest.raises(ValueError, match="unknown option"):
        sd.derivative_estimate(lambda t, k: t, 1.0, key=key, method="fd", temperature=1.0)
    with pytest.raises(ValueError, match="theta contains NaN"):
        sd.derivative_estimate(lambda t, k: sd.bernoulli(k, t), jnp.nan, key=key)
    with pytest.raises(TypeError, match="floats"):
        sd.derivative_estimate(lambda t, k: (t > 0).astype(jnp.int32), 1.0, key=key)


def test_draws_vmapped_inside_the_program():
    # 6 Bernoulli(th) draws with batched keys (vmap inside f), one of them with a batched
    # parameter: d/dth E[sum_i c_i B_i] with c = 1..6 and p_i = th * i / 6
    def f(th, key):
        keys = jax.random.split(key, 12)
        c = jnp.arange(1.0, 7.0)
        same = jax.vmap(lambda k: sd.bernoulli(k, th))(keys[:6])
        scaled = jax.vmap(lambda k, s: sd.bernoulli(k, th * s))(keys[6:], c / 6)
        return jnp.sum(c * same) + jnp.sum(scaled)

    exact = 21.0 + 21.0 / 6
    for method in ("stochad", "score"):
        _assert_unbiased(_estimates(f, 0.3, method, seed=4), exact)
    st = _estimates(f, 0.3, "straight_through", n=100)
    np.testing.assert_allclose(st, exact, rtol=1e-12)
