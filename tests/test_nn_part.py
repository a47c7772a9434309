"""Particle Transformer: parameter count against weaver-core, permutation and padding invariance,
gradients, and the pairwise features."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from difphys.kinematics import mass2, pairwise_features, pt, rapidity
from difphys.nn import ParTConfig, ParticleTransformer, count_params

#: weaver-core's ParticleTransformer(input_dim=17, num_classes=10) with its defaults
#: (example_ParticleTransformer.py of the ParT repository): 2,143,486 trainable parameters.
WEAVER_FULL_PARAMS = 2_143_486


def _expected_params(cfg: ParTConfig) -> int:
    """Closed-form count of the architecture (BatchNorm/LayerNorm affine, Linear weights +
    biases, per-head and residual scales, class token)."""
    n, d = 0, cfg.input_dim
    n += 2 * d  # input BatchNorm
    for w in cfg.embed_dims:
        n += 2 * d + d * w + w
        d = w
    d = cfg.pair_input_dim
    n += 2 * d
    for w in (*cfg.pair_embed_dims, cfg.num_heads):
        n += d * w + w + 2 * w
        d = w
    e, f = cfg.embed_dim, cfg.embed_dim * cfg.ffn_ratio
    block = 2 * e + (3 * e * e + 3 * e) + (e * e + e) + 2 * e + 2 * e + (e * f + f) + 2 * f \
        + (f * e + e) + cfg.num_heads + e
    n += (cfg.num_layers + cfg.num_cls_layers) * block
    n += 2 * e + (e * cfg.num_classes + cfg.num_classes) + e
    return n


def _float64_norms():
    """Flax's LayerNorm promotes its statistics with float32, which strict promotion refuses
    for a float64 model; the float64 gradient checks run under standard promotion."""
    return jax.numpy_dtype_promotion("standard")


def _jets(key, batch=3, n=12, dtype=jnp.float64):
    k1, k2, k3 = (jax.random.fold_in(key, i) for i in range(3))  # ``key`` stays unconsumed
    features = jax.random.normal(k1, (batch, n, 17), dtype)
    p3 = jax.random.normal(k2, (batch, n, 3), dtype) * 5.0
    p3 = p3.at[..., 0].add(30.0)  # a jet along +x
    m = jax.random.uniform(k3, (batch, n), dtype, 0.0, 0.5)
    energy = jnp.sqrt(jnp.sum(p3 * p3, axis=-1) + m * m)
    p4 = jnp.concatenate([energy[..., None], p3], axis=-1)
    lengths = jnp.array([n, n // 2, 3][:batch])
    mask = jnp.arange(n)[None, :] < lengths[:, None]
    return features, p4, mask


def _model(cfg=None, dtype=jnp.float32, seed=0):
    cfg = cfg or ParTConfig.small(num_classes=3)
    return ParticleTransformer(cfg, rngs=nnx.Rngs(seed), param_dtype=dtype)


def test_full_size_matches_weaver_core_parameter_count():
    model = ParticleTransformer(ParTConfig(), rngs=nnx.Rngs(0))
    assert count_params(model) == WEAVER_FULL_PARAMS == _expected_params(ParTConfig())


@pytest.mark.parametrize("cfg", [ParTConfig.small(num_classes=2),
                                 ParTConfig(num_layers=2, num_cls_layers=1, num_classes=5)])
def test_parameter_count_formula(cfg):
    assert count_params(ParticleTransformer(cfg, rngs=nnx.Rngs(1))) == _expected_params(cfg)


def test_parameter_count_against_torch_weaver_core():
    pytest.importorskip("torch")
    weaver = pytest.importorskip("weaver.nn.model.ParticleTransformer")
    torch_model = weaver.ParticleTransformer(input_dim=17, num_classes=10)
    n_torch = sum(p.numel() for p in torch_model.parameters() if p.requires_grad)
    assert count_params(ParticleTransformer(ParTConfig(), rngs=nnx.Rngs(0))) == n_torch


@pytest.mark.parametrize("train_mode", [False, True])
def test_permutation_invariance(key, train_mode):
    model = _model()
    if not train_mode:
        model.eval()
    features, p4, mask = _jets(key)
    features, p4 = features.astype(jnp.float32), p4.astype(jnp.float32)
    perm = jax.random.permutation(jax.random.fold_in(key, 7), features.shape[1])
    graphdef, state = nnx.split(model)
    logits = jax.jit(lambda st, f, p, m: nnx.merge(graphdef, st)(f, p, m))
    a = logits(state, features, p4, mask)
    b = logits(state, features[:, perm], p4[:, perm], mask[:, perm])
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("train_mode", [False, True])
def test_padding_invariance(key, train_mode):
    """Extra padded slots holding garbage change nothing, with batch statistics too."""
    model = _model()
    if not train_mode:
        model.eval()
    features, p4, mask = _jets(key, dtype=jnp.float32)
    graphdef, state = nnx.split(model)
    logits = jax.jit(lambda st, f, p, m: nnx.merge(graphdef, st)(f, p, m))
    a = logits(state, features, p4, mask)
    pad = 9
    junk_f = jax.random.normal(jax.random.fold_in(key, 1), (3, pad, 17), jnp.float32) * 100.0
    junk_p = jnp.abs(jax.random.normal(jax.random.fold_in(key, 2), (3, pad, 4), jnp.float32))
    b = logits(
        state,
        jnp.concatenate([jnp.where(mask[..., None], features, 55.0), junk_f], axis=1),
        jnp.concatenate([jnp.where(mask[..., None], p4, 3.0), junk_p], axis=1),
        jnp.concatenate([mask, jnp.zeros((3, pad), bool)], axis=1),
    )
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def _check_directional(f, args, key, eps=1e-6, rtol=1e-5):
    """Forward- and reverse-mode derivatives of ``f`` (jitted) along a random direction in
    every argument against a central difference with step ``eps``."""
    leaves, tree = jax.tree.flatten(args)
    keys = jax.random.split(key, len(leaves))
    tangent = jax.tree.unflatten(
        tree, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)])
    shift = lambda a, t, h: jax.tree.map(lambda x, y: x + h * y, a, t)  # noqa: E731
    jvp = jax.jit(lambda a, t: jax.jvp(lambda b: f(*b), (a,), (t,)))
    value, forward = jvp(args, tangent)
    fj = jax.jit(lambda a: f(*a))
    central = (fj(shift(args, tangent, eps)) - fj(shift(args, tangent, -eps))) / (2 * eps)
    np.testing.assert_allclose(np.asarray(forward), np.asarray(central), rtol=rtol,
                               atol=rtol * float(jnp.max(jnp.abs(forward))))
    cot = jax.random.normal(jax.random.fold_in(key, 99), value.shape, value.dtype)
    pullback = jax.jit(lambda a, c: jax.vjp(lambda b: f(*b), a)[1](c)[0])(args, cot)
    lhs = sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(pullback), jax.tree.leaves(tangent),
                                             strict=True))
    np.testing.assert_allclose(float(lhs), float(jnp.vdot(cot, forward)), rtol=1e-9)


def test_gradients_match_finite_differences(key):
    """Float64 derivatives (forward and reverse) with respect to the features, the four-momenta
    and the parameters against central differences, through the batch-statistics (training)
    path of a tiny model."""
    cfg = ParTConfig(embed_dims=(8, 8), pair_embed_dims=(4,), num_heads=2, num_layers=1,
                     num_cls_layers=1, num_classes=2, dropout=0.0, attn_dropout=0.0,
                     activation_dropout=0.0)
    model = _model(cfg, dtype=jnp.float64)
    features, p4, mask = _jets(key, batch=2, n=5)
    graphdef, params, stats = nnx.split(model, nnx.Param, ...)

    # Parameters and statistics enter as arguments (traced), as in a training step: NNX lets a
    # module update its batch statistics only at the trace level of the computation.
    def f(feats, p, prm, st):
        return nnx.merge(graphdef, prm, st)(feats, p, mask)

    with _float64_norms():
        _check_directional(f, (features, p4, params, stats), key)


def test_parameter_gradient_matches_finite_difference(key):
    """The running-statistics (eval) path."""
    cfg = ParTConfig(embed_dims=(8,), pair_embed_dims=(4,), num_heads=2, num_layers=1,
                     num_cls_layers=1, num_classes=2)
    model = _model(cfg, dtype=jnp.float64)
    model.eval()
    features, p4, mask = _jets(key, batch=2, n=5)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(prm, p):
        return jnp.sum(nnx.merge(graphdef, prm, rest)(features, p, mask) ** 2)

    with _float64_norms():
        _check_directional(loss, (params, p4), key)


def test_dropout_needs_a_key_and_is_reproducible(key):
    model = _model(ParTConfig.small(num_classes=2, dropout=0.5), dtype=jnp.float32)
    features, p4, mask = _jets(key, dtype=jnp.float32)

    def runners(m):
        graphdef, state = nnx.split(m)  # the state is traced (batch statistics update in it)
        run = jax.jit(lambda s, k: nnx.merge(graphdef, s)(features, p4, mask, key=k))
        run_det = jax.jit(lambda s: nnx.merge(graphdef, s)(features, p4, mask))
        return (lambda k: run(state, k)), (lambda: run_det(state))

    run, run_det = runners(model)  # training mode
    det = run_det()
    a, b = run(jax.random.fold_in(key, 1)), run(jax.random.fold_in(key, 1))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(det))
    np.testing.assert_array_equal(np.asarray(det), np.asarray(run_det()))
    model.eval()  # evaluation mode: no dropout even with a key, as PyTorch's model.eval()
    run, run_det = runners(model)
    np.testing.assert_array_equal(np.asarray(run(jax.random.fold_in(key, 1))),
                                  np.asarray(run_det()))


def test_float32_stays_float32_under_jit(key):
    model = _model(dtype=jnp.float32)
    features, p4, mask = _jets(key, dtype=jnp.float32)
    graphdef, state = nnx.split(model)
    out = jax.jit(lambda s, f, p, m: nnx.merge(graphdef, s)(f, p, m))(state, features, p4, mask)
    assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))


def test_bad_shapes_are_rejected(key):
    model = _model(dtype=jnp.float32)
    features, p4, mask = _jets(key, dtype=jnp.float32)
    with pytest.raises(ValueError, match="features"):
        model(features[..., :5], p4, mask)
    with pytest.raises(ValueError, match="p4"):
        model(features, p4[..., :3], mask)
    with pytest.raises(ValueError, match="mask"):
        model(features, p4, mask[:, :4])
    with pytest.raises(ValueError, match="features contain NaN"):
        model(features.at[0, 0, 3].set(jnp.nan), p4, mask)
    with pytest.raises(ValueError, match="p4 contain NaN"):
        model(features, p4.at[1, 0, 0].set(jnp.inf), mask)
    # NaN on a padded slot is ignored (masked out exactly)
    out = model(features.at[2, -1].set(jnp.nan), p4.at[2, -1].set(jnp.nan), mask)
    assert bool(jnp.all(jnp.isfinite(out)))


def test_pairwise_features_formulas(key):
    _, p4, _ = _jets(key, batch=1, n=4)
    p4 = p4[0]
    feats = pairwise_features(p4)
    i, j = 0, 2
    dy = rapidity(p4[i]) - rapidity(p4[j])
    dphi = jnp.arctan2(p4[i, 2], p4[i, 1]) - jnp.arctan2(p4[j, 2], p4[j, 1])
    dphi = (dphi + jnp.pi) % (2 * jnp.pi) - jnp.pi
    delta = jnp.hypot(dy, dphi)
    ptmin = jnp.minimum(pt(p4[i]), pt(p4[j]))
    expected = [jnp.log(delta), jnp.log(ptmin * delta),
                jnp.log(ptmin / (pt(p4[i]) + pt(p4[j]))), jnp.log(mass2(p4[i] + p4[j]))]
    np.testing.assert_allclose(np.asarray(feats[i, j]), np.asarray(jnp.stack(expected)),
                               rtol=1e-12)
    np.testing.assert_allclose(np.asarray(feats), np.asarray(jnp.swapaxes(feats, 0, 1)))
    # invariance of the whole matrix under a rotation about the beam axis
    c, s = np.cos(0.7), np.sin(0.7)
    rot = p4.at[:, 1].set(c * p4[:, 1] - s * p4[:, 2]).at[:, 2].set(s * p4[:, 1] + c * p4[:, 2])
    np.testing.assert_allclose(np.asarray(pairwise_features(rot)), np.asarray(feats), atol=1e-10)


def test_pairwise_features_gradient(key):
    _, p4, _ = _jets(key, batch=1, n=3)
    off_diagonal = ~np.eye(3, dtype=bool)
    _check_directional(lambda p: pairwise_features(p)[off_diagonal], (p4[0],), key, rtol=1e-6)


def test_pairwise_features_of_chosen_partners(key):
    _, p4, _ = _jets(key, batch=2, n=7)
    partners = np.array([[(i + d) % 7 for d in (1, 3, 6)] for i in range(7)])
    chosen = pairwise_features(p4, partners)
    assert chosen.shape == (2, 7, 3, 4)
    full = pairwise_features(p4)
    rows = np.arange(7)[:, None]
    np.testing.assert_allclose(np.asarray(chosen), np.asarray(full[:, rows, partners]),
                               rtol=1e-13)
    _check_directional(lambda p: pairwise_features(p, partners), (p4[0],), key, rtol=1e-6)
    with pytest.raises(ValueError, match="partners must be"):
        pairwise_features(p4, partners[:5])


@pytest.mark.parametrize("n", [1, 2, 5, 12])
@pytest.mark.parametrize("train_mode", [False, True])
def test_pair_bias_equals_the_upper_triangle_expansion(key, n, train_mode):
    """The circulant layout evaluates each unordered pair once and symmetrises with pads and
    reshapes; it must give exactly the bias of the direct construction: the MLP on the pairs
    i <= j (batch statistics over real pairs), copied to (i, j) and (j, i)."""
    with _float64_norms():
        model = _model(dtype=jnp.float64)
        if not train_mode:
            model.eval()
        _, p4, mask = _jets(key, n=n)
        mask = mask.at[:, 0].set(True)
        emb = model.embed_pairs
        iu, ju = np.triu_indices(n)
        feats = pairwise_features(p4)[..., iu, ju, :]
        pair_mask = (mask[..., iu] & mask[..., ju]).reshape(-1, 1)
        upper = emb._mlp(feats.reshape(-1, 4), pair_mask).reshape(3, len(iu), -1)
        index = np.zeros((n, n), int)
        index[iu, ju] = index[ju, iu] = np.arange(len(iu))
        expected = jnp.moveaxis(upper[:, index, :], -1, -3)
        got = emb(p4, mask, jnp.float64)
    assert got.shape == (3, model.config.num_heads, n, n)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-10, atol=1e-12)


def test_evaluation_pair_mlp_chunking_changes_nothing(key, monkeypatch):
    """In evaluation mode the pair MLP runs a few jets at a time (lax.map with a remainder
    when the batch does not divide); the bias equals the one-pass result."""
    from difphys.nn import _layers

    model = _model(dtype=jnp.float32)
    model.eval()
    _, p4, mask = _jets(key, dtype=jnp.float32)
    per_jet = 12 * 7
    whole = model.embed_pairs(p4, mask, jnp.float32)
    for jets in (1, 2):
        monkeypatch.setattr(_layers, "_PAIR_CHUNK", jets * per_jet)
        np.testing.assert_allclose(np.asarray(model.embed_pairs(p4, mask, jnp.float32)),
                                   np.asarray(whole), rtol=1e-6, atol=1e-6)


def test_standardise_closed_form_derivative_equals_autodiff(key):
    """The LayerNorm core's hand-written JVP (``dy = r (dx - mean dx) - y r mean(y dx)``) equals
    autodiff of the formula it replaces, in forward and reverse mode (float64), and the
    LayerNorm built on it is ``(x - mean) / sqrt(var + eps) * scale + bias`` (two-pass
    variance)."""
    from difphys.nn import _layers

    def plain(x):
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(x * x, axis=-1, keepdims=True) - mean * mean
        return (x - mean) / jnp.sqrt(var + 1e-5)

    kx, kt, kc, kn = jax.random.split(key, 4)
    x = 3.0 + 2.0 * jax.random.normal(kx, (4, 6, 9), jnp.float64)
    tangent = jax.random.normal(kt, x.shape, jnp.float64)
    cot = jax.random.normal(kc, x.shape, jnp.float64)
    ours = lambda z: _layers._standardise(z, 1e-5)  # noqa: E731
    y, dy = jax.jvp(ours, (x,), (tangent,))
    y_ref, dy_ref = jax.jvp(plain, (x,), (tangent,))
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(dy), np.asarray(dy_ref), rtol=1e-10, atol=1e-12)
    (gx,) = jax.vjp(ours, x)[1](cot)
    (gx_ref,) = jax.vjp(plain, x)[1](cot)
    np.testing.assert_allclose(np.asarray(gx), np.asarray(gx_ref), rtol=1e-10, atol=1e-12)
    # the gradient is orthogonal to shifts of a row (LayerNorm is shift invariant)
    np.testing.assert_allclose(np.asarray(jnp.sum(gx, axis=-1)), 0.0, atol=1e-11)

    norm = nnx.LayerNorm(9, epsilon=1e-5, rngs=nnx.Rngs(0), param_dtype=jnp.float64)
    norm.scale[...] = jax.random.normal(kn, (9,), jnp.float64)
    norm.bias[...] = jnp.arange(9.0, dtype=jnp.float64)
    centred = x - jnp.mean(x, axis=-1, keepdims=True)
    expected = (centred / jnp.sqrt(jnp.mean(centred**2, axis=-1, keepdims=True) + 1e-5)
                * norm.scale[...] + norm.bias[...])
    np.testing.assert_allclose(np.asarray(_layers._apply_norm(norm, x)), np.asarray(expected),
                               rtol=1e-10, atol=1e-12)
