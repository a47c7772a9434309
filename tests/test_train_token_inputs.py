"""What the tokeniser sees (difphys.train._token_inputs): the token / reveal split, the
rank-Gauss transform, token R^2 and the context-free baseline; predict keeps modes."""

import itertools

import numpy as np
import pytest
from flax import nnx
from scipy.stats import norm

from difphys import nn, train


def test_tokens_may_not_use_revealed_features():
    with pytest.raises(ValueError, match=r"token features \[4, 15\] are also revealed"):
        nn.check_token_features((0, 4, 15), nn.ANGULAR_FEATURES)
    with pytest.raises(ValueError, match="empty"):
        nn.check_token_features((), nn.ANGULAR_FEATURES)
    assert not set(nn.TOKEN_FEATURES) & set(nn.ANGULAR_FEATURES)
    assert set(nn.TOKEN_FEATURES) | set(nn.ANGULAR_FEATURES) == set(range(17))
    backbone = nn.ParticleTransformer(nn.ParTConfig(embed_dims=(8,), pair_embed_dims=(4,),
                                                    num_heads=1, num_layers=1, num_cls_layers=1,
                                                    num_classes=0), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="also revealed"):
        nn.MaskedParticleModel(backbone, 8, token_features=tuple(range(17)), rngs=nnx.Rngs(1))
    # hiding everything allows tokens on every feature
    model = nn.MaskedParticleModel(backbone, 8, reveal=(), token_features=tuple(range(17)),
                                   rngs=nnx.Rngs(1))
    assert model.token_features == tuple(range(17))


def test_rank_gauss_is_monotone_invertible_and_normal():
    rng = np.random.default_rng(0)
    x = np.stack([rng.exponential(2.0, 20_000), rng.normal(5, 0.1, 20_000),
                  rng.integers(0, 3, 20_000).astype(float)], -1)
    mask = np.ones(len(x), bool)
    rg = train.RankGauss.fit(x, mask, n_quantiles=500)
    z = rg.transform(x)
    # continuous features become standard normal (KS distance of 20k draws: ~0.01)
    for i in (0, 1):
        grid = np.sort(z[:, i])
        ks = np.max(np.abs(norm.cdf(grid) - (np.arange(len(grid)) + 0.5) / len(grid)))
        assert ks < 0.02, (i, ks)
    # monotone non-decreasing on a fine grid, strictly inside the fitted range
    for i in (0, 1):
        grid = np.linspace(x[:, i].min() - 1, x[:, i].max() + 1, 5001)
        probe = np.tile(x[:1], (len(grid), 1))
        probe[:, i] = grid
        zi = rg.transform(probe)[:, i].astype(np.float64)
        assert np.all(np.diff(zi) >= 0)
        inside = (grid > rg.values[i][0]) & (grid < rg.values[i][-1])
        assert np.all(np.diff(zi[inside]) > 0)
    # the inverse recovers x on the fitted range (float32 z: relative 1e-4 of the spread)
    inside = (x[:, 0] > rg.values[0][0]) & (x[:, 0] < rg.values[0][-1])
    back = rg.inverse(rg.transform(x))
    np.testing.assert_allclose(back[inside, 0], x[inside, 0], atol=2e-3 * x[:, 0].std())
    # a three-valued feature keeps three ordered values
    assert len(np.unique(z[:, 2])) == 3
    assert np.all(np.diff([z[x[:, 2] == k, 2][0] for k in range(3)]) > 0)


def test_rank_gauss_holds_out_neutral_impact_parameters():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(200, 10, 17))
    f[..., 5] = rng.integers(-1, 2, (200, 10))          # charge
    neutral = f[..., 5] == 0
    for i in train.IMPACT_FEATURES:
        f[..., i] = np.where(neutral, 0.0, f[..., i])
    mask = rng.random((200, 10)) < 0.9
    exclude = train.neutral_impact_mask(f)
    assert np.array_equal(exclude[..., 11], neutral) and not exclude[..., 0].any()
    rg = train.RankGauss.fit(f, mask, exclude=exclude)
    z = rg.transform(f, exclude=exclude)
    assert np.all(z[..., 11][neutral] == 0.0)
    charged = ~neutral & mask
    assert abs(np.mean(z[..., 11][charged])) < 0.1 and abs(np.std(z[..., 11][charged]) - 1) < 0.1
    with pytest.raises(ValueError, match="NaN"):
        train.RankGauss.fit(np.where(mask[..., None], np.nan, f), mask)
    inputs = train.TokenInputs.fit(f, mask)
    assert inputs.features == nn.TOKEN_FEATURES
    assert inputs.apply(f).shape == (200, 10, len(nn.TOKEN_FEATURES))


def test_token_r2():
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 4, 1000)
    values = np.stack([tokens * 2.0, rng.normal(size=1000)], -1)  # fixed by the token / not
    r2 = train.token_r2(tokens, values, np.ones(1000, bool))
    np.testing.assert_allclose(r2[0], 1.0, atol=1e-12)
    assert abs(r2[1]) < 0.02  # 3 / 1000 expected by chance


def test_context_free_baseline_equals_a_numpy_lookup():
    rng = np.random.default_rng(3)
    k, bins, alpha = 5, 3, 0.5
    rf, re_ = rng.normal(size=(400, 2)), rng.normal(size=(300, 2))
    tf = (rf[:, 0] > 0).astype(int) * 2 + rng.integers(0, 2, 400)
    te = (re_[:, 0] > 0).astype(int) * 2 + rng.integers(0, 2, 300)
    got = train.context_free_baseline(rf, tf, re_, te, codebook_size=k, bins=bins, alpha=alpha)
    # the same lookup, written out with loops over the cells
    edges = [np.quantile(rf[:, j], [1 / 3, 2 / 3]) for j in range(2)]

    def cell(r):
        return tuple(int(np.sum(r[j] >= edges[j])) for j in range(2))

    counts = {c: np.full(k, alpha) for c in itertools.product(range(bins), repeat=2)}
    for r, t in zip(rf, tf, strict=True):
        counts[cell(r)][t] += 1
    nll = [-np.log(counts[cell(r)][t] / counts[cell(r)].sum()) for r, t in zip(re_, te,
                                                                                strict=True)]
    np.testing.assert_allclose(got.cross_entropy, np.mean(nll), rtol=1e-12)
    freq = np.bincount(te, minlength=k) / len(te)
    np.testing.assert_allclose(got.entropy, -np.sum(freq[freq > 0] * np.log(freq[freq > 0])))
    assert got.cells == 9 and got.cross_entropy < got.entropy  # the angle predicts the token
    with pytest.raises(ValueError, match="tokens must lie"):
        train.context_free_baseline(rf, tf + 5, re_, te, codebook_size=k)


def test_predict_leaves_train_and_eval_modes_as_found():
    cfg = nn.ParTConfig(embed_dims=(8,), pair_embed_dims=(4,), num_heads=1, num_layers=1,
                        num_cls_layers=1, num_classes=2)
    model = nn.JetClassifier(nn.ParticleTransformer(cfg, rngs=nnx.Rngs(0)), 2, rngs=nnx.Rngs(1))
    model.backbone.blocks.eval()  # a frozen part in eval mode, the rest training
    before = [(type(m).__name__, a, v) for m, a, v in train._loop._modes(model)]
    assert {v for _, _, v in before} == {True, False}
    rng = np.random.default_rng(0)
    data = {"features": rng.normal(size=(6, 4, 17)).astype(np.float32),
            "p4": np.abs(rng.normal(size=(6, 4, 4))).astype(np.float32) + 1,
            "mask": np.ones((6, 4), bool)}
    data["p4"][..., 0] += 5
    logits = train.predict(model, data, batch_size=4)
    assert logits.shape == (6, 2) and np.all(np.isfinite(logits))
    after = [(type(m).__name__, a, v) for m, a, v in train._loop._modes(model)]
    assert after == before
