"""Test configuration: float64 physics, strict dtype promotion, a fixed key."""

import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def key():
    """A fixed typed PRNG key; tests split it, never reuse it."""
    return jax.random.key(20261123)


@pytest.fixture(scope="session")
def zpole_sample(tmp_path_factory):
    """5000 generated Z-pole events (10,000 jets) shared by the data and foundation tests:
    ``(GenerationReport, dense batch with max_particles = 96)``."""
    pytest.importorskip("pythia8mc")
    pytest.importorskip("fastjet")
    from difphys.data import generate
    from difphys.io import read_jetclass

    path = tmp_path_factory.mktemp("zpole") / "zpole.root"
    report = generate("zpole", 5000, 2026, path, workers=2, progress=False)
    return report, read_jetclass(path, max_particles=96)
