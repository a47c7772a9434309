"""The flavour tagger with a differentiable vertex-fit layer: track arrays, gradients through the
implicit fit, training, and the b-tagging / vertexing metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from difphys.io import TRACK_FEATURES, jet_axis, jet_tracks, load_tracks
from difphys.nn import VERTEX_FEATURES, VertexTagger, tagger_loss
from difphys.train import (
    b_discriminant,
    flavour_metrics,
    train_flavour_tagger,
    vertex_performance,
)


@pytest.fixture(scope="module")
def tracks(zpole_sample):
    report, _ = zpole_sample
    return load_tracks(report.path, max_tracks=12)


def test_track_arrays(tracks):
    n, t = tracks["mask"].shape
    assert t == 12 and tracks["features"].shape == (n, t, len(TRACK_FEATURES))
    assert tracks["params"].dtype == np.float64 and tracks["cov"].shape == (n, t, 5, 5)
    theta = tracks["params"][..., 3][tracks["mask"]]
    assert np.all((theta > 0) & (theta < np.pi))
    # covariances of real tracks are symmetric positive definite; padding is the identity
    cov = tracks["cov"][tracks["mask"]]
    assert np.allclose(cov, np.swapaxes(cov, -1, -2))
    assert np.all(np.linalg.eigvalsh(cov)[:, 0] > 0)
    assert np.all(tracks["cov"][~tracks["mask"]] == np.eye(5))
    assert np.all(tracks["features"][~tracks["mask"]] == 0)
    # physics: heavy-flavour-decay tracks are common in b jets and rare in light jets, and
    # their lifetime-signed impact-parameter significance is positive on average
    label, mask, hf = tracks["label"], tracks["mask"], tracks["hf"]
    assert hf[(label == 0)[:, None] & mask].mean() > 0.3
    assert hf[(label == 2)[:, None] & mask].mean() < 0.05
    sd0sig = tracks["features"][..., TRACK_FEATURES.index("trk_sd0sig")]
    assert np.median(sd0sig[hf & mask]) > 1.0
    assert abs(np.median(sd0sig[~hf & mask & (label == 2)[:, None]])) < 0.3
    # true b-hadron decay vertices lie along the jet, at mm-scale distances
    b = (label == 0) & tracks["has_sv"]
    length = np.sum(tracks["sv"][b] * tracks["axis"][b], axis=-1)
    assert np.median(length) > 0.5 and np.mean(length > 0) > 0.95


def test_jet_axis_is_a_unit_vector_along_eta_phi():
    eta, phi = np.array([0.0, 1.3, -2.0]), np.array([0.2, -3.0, 1.0])
    axis = jet_axis(eta, phi)
    assert np.allclose(np.linalg.norm(axis, axis=-1), 1.0)
    assert np.allclose(np.arctan2(axis[:, 1], axis[:, 0]), phi)
    assert np.allclose(np.arctanh(axis[:, 2]), eta)


def test_track_errors(zpole_sample):
    _, batch = zpole_sample
    with pytest.raises(ValueError, match="max_tracks"):
        jet_tracks(batch, max_tracks=1)
    with pytest.raises(KeyError, match="part_trk_d0"):
        jet_tracks({k: v for k, v in batch.items() if k != "part_trk_d0"})


def _tiny(vertex, key, dtype=jnp.float64):
    return VertexTagger(9, 3, vertex=vertex, dim=8, heads=2, layers=1, tol=1e-12, max_iter=50,
                        rngs=nnx.Rngs(int(jax.random.randint(key, (), 0, 1000))),
                        param_dtype=dtype)


def _batch(tracks, n=6, dtype=np.float64):
    keys = ("features", "mask", "params", "cov", "axis", "hf", "label")
    b = {k: tracks[k][:n] for k in keys}
    b["features"] = b["features"].astype(dtype)
    return {k: jnp.asarray(v) for k, v in b.items()}


def _weight_head_loss(model, batch):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(kernel):
        p = jax.tree.map(lambda x: x, params)
        p["weight_head"]["kernel"] = kernel
        return tagger_loss(nnx.merge(graphdef, p, rest), batch, key=None, aux_weight=0.0)[0]

    return loss, params["weight_head"]["kernel"][...]


def test_gradients_reach_the_track_weights_through_the_fit(tracks, key):
    """The classification loss alone (no auxiliary track loss) differentiates the per-track
    weight network only through the implicit vertex fit: non-zero, equal to central finite
    differences in float64, and exactly zero without the vertex layer."""
    batch = _batch(tracks)
    with jax.numpy_dtype_promotion("standard"):  # flax LayerNorm promotes internally
        loss, kernel = _weight_head_loss(_tiny("learned", key), batch)
        grad = np.asarray(jax.grad(loss)(kernel))
        assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 1e-6
        rng = np.random.default_rng(0)
        for _ in range(3):
            d = jnp.asarray(rng.normal(size=kernel.shape))
            h = 1e-5
            fd = (loss(kernel + h * d) - loss(kernel - h * d)) / (2 * h)
            assert np.isclose(float(np.sum(grad * np.asarray(d))), float(fd), rtol=2e-4,
                              atol=1e-10)
        loss_none, kernel_none = _weight_head_loss(_tiny("none", jax.random.clone(key)), batch)
        assert np.all(np.asarray(jax.grad(loss_none)(kernel_none)) == 0.0)


def test_vertex_layer_outputs(tracks, key):
    batch = _batch(tracks, n=32, dtype=np.float32)
    model = _tiny("truth", key, jnp.float32)
    out = model(batch)
    assert out.logits.shape == (32, 3) and out.logits.dtype == jnp.float32
    assert out.vertex_features.shape == (32, len(VERTEX_FEATURES))
    assert out.vertex.position.dtype == jnp.float64  # the fit runs in float64
    # with true heavy-flavour tracks, b jets with >= 2 of them give a valid vertex near the
    # true b-hadron decay (within 3 mm for most: cascade charm decays pull it outward)
    hf_count = np.sum(np.asarray(batch["hf"] & batch["mask"]), axis=1)
    valid = np.asarray(out.vertex.valid)
    assert np.all(valid[hf_count >= 2])
    assert not np.any(valid[hf_count == 0])
    assert np.all(np.asarray(out.vertex_features)[~valid] == 0)
    b = (np.asarray(batch["label"]) == 0) & valid & tracks["has_sv"][:32]
    dist = np.linalg.norm(np.asarray(out.vertex.position)[b] - tracks["sv"][:32][b], axis=-1)
    assert np.median(dist) < 3.0
    with pytest.raises(KeyError, match="hf"):
        model({k: v for k, v in batch.items() if k != "hf"})
    with pytest.raises(ValueError, match="vertex must be"):
        VertexTagger(vertex="magic", rngs=nnx.Rngs(0))
    bad = dict(batch)
    bad["params"] = batch["params"].at[0, 0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="NaN or infinity in params"):
        model(bad)
    with pytest.raises(ValueError, match=r"features must be \(B, T, 9\)"):
        model({**batch, "features": batch["features"][..., :4]})


def test_tagger_trains_end_to_end(tracks, key):
    result = train_flavour_tagger(tracks, vertex="learned", steps=80, batch_size=128, key=key,
                                  dim=16, layers=1, learning_rate=3e-3, progress=False)
    hist = result.history  # logged every 10 steps
    assert np.mean(hist.loss[-3:]) < 0.85 * hist.loss[0]
    assert result.metrics.auc_b_vs_light > 0.95  # lifetime information is learned in 80 steps
    assert 0.9 < result.vertex_valid_fraction_b <= 1.0
    held_b = tracks["label"][result.held_out] == 0
    assert sum(b.jets for b in result.vertex) == int(np.sum(
        held_b & tracks["has_sv"][result.held_out] & result.evaluation.valid))
    assert result.evaluation.n_rows == len(result.held_out)


def test_b_discriminant_formula():
    logits = np.log(np.array([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]]))
    d = b_discriminant(logits, f_c=0.2)
    expected = np.log(np.array([0.6 / (0.2 * 0.3 + 0.8 * 0.1), 0.1 / (0.2 * 0.2 + 0.8 * 0.7)]))
    assert np.allclose(d, expected)
    with pytest.raises(ValueError, match="f_c"):
        b_discriminant(logits, f_c=1.5)


def test_flavour_metrics_on_known_scores():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], 4000)
    # b jets score 2 higher than c and light in the b logit: AUC = Phi(2 / sqrt(2))
    logits = np.zeros((len(labels), 3))
    logits[:, 0] = rng.normal(size=len(labels)) + 2.0 * (labels == 0)
    m = flavour_metrics(logits, labels)
    from math import erf, sqrt
    expected_auc = 0.5 * (1 + erf(2.0 / sqrt(2) / sqrt(2)))
    assert abs(m.auc_b_vs_light - expected_auc) < 0.015
    assert abs(m.auc_b_vs_c - expected_auc) < 0.015
    # at 70% b efficiency the cut is at 2 + z_0.3; the mistag rate is 1 - Phi(2 + z_0.3)
    z = 2.0 - 0.5244
    mistag = 0.5 * (1 - erf(z / sqrt(2)))
    assert abs(1 / m.light_rejection - mistag) < 4 * np.sqrt(mistag / 4000)
    with pytest.raises(ValueError, match="b, c and light"):
        flavour_metrics(logits[:8000], labels[:8000])


def test_vertex_pulls_of_a_calibrated_fit_are_unit():
    rng = np.random.default_rng(2)
    n = 20000
    sv = rng.normal(size=(n, 3)) * 3.0
    sigma = rng.uniform(0.01, 0.2, size=(n, 3))
    cov = np.zeros((n, 3, 3))
    cov[:, [0, 1, 2], [0, 1, 2]] = sigma**2
    position = sv + sigma * rng.normal(size=(n, 3))
    rows = vertex_performance(position, cov, np.ones(n, bool), sv, np.ones(n, bool))
    for row in rows:
        if row.jets > 1000:
            assert np.allclose(row.pull_width_xyz, 1.0, atol=0.06)
    assert sum(r.jets for r in rows) == n
