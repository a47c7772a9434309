"""Multi-device helpers, tested on 4 fake CPU devices in a subprocess."""

import textwrap

import jax
import jax.numpy as jnp
import pytest

from difphys import sharding
from difphys.testing import run_on_fake_cpu_devices

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from difphys import kinematics as kin, phasespace as ps, sharding
    assert jax.device_count() == 4, jax.devices()
    mesh = sharding.make_mesh()
    keys = jax.random.split(jax.random.key(3), 4096)
    masses = jnp.array([4.7, 4.7, 0.0])
    sample = jax.jit(jax.vmap(ps.rambo, in_axes=(0, None, None)))
    p, w = sample(keys, 100.0, masses)
    def observable(p, w):
        m12 = kin.mass(p[:, 0] + p[:, 1])
        return jnp.sum(w * m12), jnp.max(m12)
    reference = jax.jit(observable)(p, w)
    p_s, w_s = sharding.shard_batch((p, w), mesh)
    assert len(p_s.sharding.device_set) == 4 and p_s.addressable_shards[0].data.shape[0] == 1024
    sharded = jax.jit(observable)(p_s, w_s)
    np.testing.assert_allclose(sharded[0], reference[0], rtol=1e-13)
    np.testing.assert_allclose(sharded[1], reference[1], rtol=0)
    # Sampling itself sharded over keys gives the same events.
    p2, w2 = sample(sharding.shard_batch(keys, mesh), 100.0, masses)
    assert len(p2.sharding.device_set) == 4
    np.testing.assert_allclose(p2, p, rtol=1e-10, atol=1e-10 * 100.0)
    np.testing.assert_allclose(w2, w, rtol=1e-10)
    try:
        sharding.shard_batch(jnp.zeros(6), mesh)
    except ValueError as err:
        assert "divisible by 4" in str(err)
    else:
        raise AssertionError("indivisible batch was not rejected")
    print("SHARDING-OK")
    """
)


def test_sharded_equals_unsharded_on_four_fake_devices():
    run_on_fake_cpu_devices(SCRIPT, expect="SHARDING-OK", timeout=300)


def test_single_device_mesh_and_errors():
    mesh = sharding.make_mesh()
    x = sharding.shard_batch(jnp.arange(jax.device_count() * 2.0), mesh)
    assert x.shape == (jax.device_count() * 2,)
    with pytest.raises(ValueError, match="leading axis"):
        sharding.shard_batch(jnp.float64(1.0), mesh)
    with pytest.raises(ValueError, match="at least one device"):
        sharding.make_mesh(devices=[])


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"SLURM_NTASKS": "1"}, False),
        ({"SLURM_NTASKS": "8"}, True),
        ({"OMPI_COMM_WORLD_SIZE": "2"}, True),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
        ({"PMI_SIZE": "garbage"}, False),
    ],
)
def test_multihost_launcher_detection(environ, expected):
    assert sharding.launched_multihost(environ) is expected
    if not expected:
        assert sharding.initialize_distributed(environ) is False
