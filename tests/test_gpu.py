"""The GPU code paths against the CPU ones, in one process (marker ``gpu``).

Run where a GPU is present, by ``benchmarks/gpu_check.sh`` (``pytest -m gpu``); ``make test``
deselects them and they skip without a GPU. Each test computes the same thing on the GPU and on
the CPU device of the same process and compares: float64 physics to rounding (the GPU takes the
XLA paths: the jitted |M|^2 validation, the XLA vertex fit, the rolled flow scan), float32
networks at the highest matmul precision (TF32, the GPU default, is checked separately to its
own looser tolerance)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

# the same jets and perturbed flows as the CPU tests (pytest puts tests/ on the path)
from test_flows import _perturbed
from test_vertex_kernel import _jets

from difphys import amplitudes as amp
from difphys import flows, sharding
from difphys import vertex as vx
from difphys.nn import ParTConfig, ParticleTransformer

pytestmark = pytest.mark.gpu


def _gpu():
    try:
        devices = jax.devices("gpu")
    except RuntimeError:
        devices = []
    if not devices:
        pytest.skip("no GPU")
    return devices[0]


CPU = jax.devices("cpu")[0]


def _on(device, tree):
    return jax.device_put(tree, device)


def _platform(x):
    return next(iter(jax.tree.leaves(x)[0].devices())).platform


def _events(proc, n, seed):
    u = jax.random.uniform(jax.random.key(seed), (n, proc.phase_space_dim), jnp.float64, 0.02,
                           0.98)
    return proc.phase_space(u, jnp.asarray(1500.0), amp.SMParams())[0]


def test_matrix_element_and_its_gradient_on_gpu_equal_cpu():
    gpu = _gpu()
    params = amp.SMParams()
    proc = amp.process("g g > t t~ g")
    momenta = _events(proc, 2048, 1)
    values = {}
    for name, dev in (("gpu", gpu), ("cpu", CPU)):
        values[name] = proc(_on(dev, momenta), params)  # eager: the checks run on that device
        assert _platform(values[name]) == dev.platform
    np.testing.assert_allclose(values["gpu"], values["cpu"], rtol=1e-11)
    assert np.all(np.asarray(values["gpu"]) > 0)
    # the gradient in the momenta and in a model parameter (the top mass)
    proc = amp.process("g g > t t~")
    momenta = _events(proc, 2048, 2)

    def loss(q, mt):
        return jnp.sum(jnp.log(proc(q, params.replace(MT=mt))))

    grads = {name: jax.jit(jax.grad(loss, argnums=(0, 1)))(_on(dev, momenta),
                                                           _on(dev, jnp.float64(173.0)))
             for name, dev in (("gpu", gpu), ("cpu", CPU))}
    for a, b in zip(grads["gpu"], grads["cpu"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-14)


def test_vertex_fit_on_gpu_equals_cpu_and_its_implicit_gradient():
    gpu = _gpu()
    tracks = _on(CPU, _jets(jax.random.key(2), 4096, 12))
    weights = jnp.ones(tracks.params.shape[:-1], jnp.float64)
    cpu_fit = vx.fit(tracks, weights, bfield=2.0)  # eager CPU: the numba kernel if present
    gpu_fit = vx.fit(_on(gpu, tracks), _on(gpu, weights), bfield=2.0)  # the XLA iterations
    assert _platform(gpu_fit.position) == gpu.platform
    valid = np.asarray(cpu_fit.valid)
    np.testing.assert_array_equal(np.asarray(gpu_fit.valid), valid)
    assert valid.mean() > 0.99
    np.testing.assert_allclose(np.asarray(gpu_fit.position)[valid],
                               np.asarray(cpu_fit.position)[valid], rtol=1e-8, atol=1e-9)

    def loss(w, t):
        return jnp.sum(vx.fit(t, w, bfield=2.0, backend="xla").position ** 2)

    g = {name: jax.jit(jax.grad(loss))(_on(dev, weights), _on(dev, tracks))
         for name, dev in (("gpu", gpu), ("cpu", CPU))}
    np.testing.assert_allclose(g["gpu"], g["cpu"], rtol=1e-7, atol=1e-10)


def _part_inputs(batch=64, n=48):
    rng = np.random.default_rng(0)
    p3 = rng.normal(size=(batch, n, 3)) * 2.0 + np.array([30.0, 0.0, 0.0])
    energy = np.sqrt((p3**2).sum(-1) + 0.14**2)
    lengths = rng.integers(5, n + 1, batch)
    return (rng.normal(size=(batch, n, 17)).astype(np.float32),
            np.concatenate([energy[..., None], p3], -1).astype(np.float32),
            np.arange(n)[None, :] < lengths[:, None])


def test_part_forward_on_gpu_equals_cpu():
    gpu = _gpu()
    model = ParticleTransformer(ParTConfig.small(num_classes=3), rngs=nnx.Rngs(0))
    model.eval()
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, f, p, m: nnx.merge(graphdef, s)(f, p, m))
    inputs = _part_inputs()
    with jax.default_matmul_precision("highest"):
        out = {name: np.asarray(forward(_on(dev, state), *_on(dev, inputs)))
               for name, dev in (("gpu", gpu), ("cpu", CPU))}
    # float32 through 4 blocks: GPU and CPU kernels sum in other orders (measured on an H200:
    # 5.5e-4 at most on logits of order 1)
    np.testing.assert_allclose(out["gpu"], out["cpu"], rtol=2e-3, atol=2e-3)
    # the GPU's default float32 matmuls (TF32, 10-bit mantissa) stay within a looser bound
    tf32 = np.asarray(forward(_on(gpu, state), *_on(gpu, inputs)))
    np.testing.assert_allclose(tf32, out["cpu"], rtol=3e-2, atol=3e-2)


def test_rolled_flow_scan_gradient_on_gpu_equals_unrolled_on_cpu():
    """The rolled scan (the GPU default) at 4096 points, a FAB-sized batch, equals the
    derivative of the CPU's unrolled path."""
    gpu = _gpu()
    flow = flows.make_spline_flow(jax.random.key(0), 8, support="unit_cube", n_layers=8,
                                  hidden=64, n_bins=10)
    flow = _perturbed(flow)
    x = jax.random.uniform(jax.random.key(2), (4096, 8), jnp.float64, 0.01, 0.99)

    def loss(f, x):
        return -jnp.mean(f.log_prob(x))

    rolled = dataclasses.replace(flow, scan="rolled")
    unrolled = dataclasses.replace(flow, scan="unrolled")
    g_gpu = jax.jit(jax.grad(loss))(_on(gpu, rolled), _on(gpu, x))
    g_cpu = jax.jit(jax.grad(loss))(_on(CPU, unrolled), _on(CPU, x))
    for a, b in zip(jax.tree.leaves(g_gpu), jax.tree.leaves(g_cpu), strict=True):
        assert np.all(np.isfinite(np.asarray(a)))
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-11)


def test_sharded_batch_on_the_gpu_mesh_equals_unsharded():
    gpu = _gpu()
    mesh = sharding.make_mesh(devices=[gpu])
    x = _on(gpu, jax.random.normal(jax.random.key(3), (8192, 4), jnp.float64))
    reference = jax.jit(lambda v: jnp.sum(jnp.sin(v) ** 2))(x)
    sharded = jax.jit(lambda v: jnp.sum(jnp.sin(v) ** 2))(sharding.shard_batch(x, mesh))
    np.testing.assert_allclose(sharded, reference, rtol=1e-13)
