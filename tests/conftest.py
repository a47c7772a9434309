"""Test configuration: float64 physics, strict dtype promotion, JAX's key-reuse checker, a
fixed key.

The key-reuse checker (``jax_debug_key_reuse``) is on for every test module except those in
``KEY_REUSE_BY_DESIGN``: there the method itself replays one key (common random numbers for
gradients and differences of Monte-Carlo estimates, stochastic AD's coupled reruns of a
program inside its interpreter, the demo that runs them, the bad-input suite that calls
one function with one key eagerly and under jit to compare). Elsewhere an intended second use
says so with ``jax.random.clone(key)``."""

import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")

KEY_REUSE_BY_DESIGN = {
    "test_amplitudes", "test_amplitudes_cross_section", "test_analysis", "test_phasespace",
    "test_phasespace_montecarlo", "test_stochad", "test_sim", "test_cli", "test_jobs_demo_story", "test_bad_input",
    "test_hep_interop",  # the same key for two fits of one likelihood (common random numbers)
}


@pytest.fixture(autouse=True)
def _key_reuse_checker(request):
    module = request.module.__name__.rsplit(".", 1)[-1]
    with jax.debug_key_reuse(module not in KEY_REUSE_BY_DESIGN):
        yield


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


@pytest.fixture(scope="session")
def zpole_files(zpole_sample, tmp_path_factory):
    """``split(n_jets, names) -> (folder, jets)``: the first ``n_jets`` jets of the shared
    Z-pole sample cut into consecutive, equally long ROOT files ``folder/<name>.root`` (tree
    ``tree``, every branch), and those jets as an awkward record array."""
    import uproot

    all_jets = uproot.open(zpole_sample[0].path)["tree"].arrays(library="ak")

    def split(n_jets, names):
        folder = tmp_path_factory.mktemp("zpole_files")
        per = n_jets // len(names)
        for i, name in enumerate(names):
            part = all_jets[per * i:per * (i + 1)]
            with uproot.recreate(folder / f"{name}.root") as f:
                f["tree"] = {k: part[k] for k in part.fields}
        return folder, all_jets[:n_jets]

    return split
