"""The label-efficiency benchmark's pairing (issue #22): every strategy of a seed trains on
the same label subset from the same head initialisation; seeds differ."""

import importlib.util
import pathlib

import jax
import numpy as np
from flax import nnx

PATH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "label_efficiency.py"
spec = importlib.util.spec_from_file_location("label_efficiency", PATH)
le = importlib.util.module_from_spec(spec)
spec.loader.exec_module(le)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_strategies_of_a_seed_share_subset_and_head():
    a, b = le._subset(5000, 300, 3), le._subset(5000, 300, 3)
    assert np.array_equal(a, b) and len(np.unique(a)) == 300
    assert not np.array_equal(a, le._subset(5000, 300, 4))
    backbones = {name: nnx.state(le.nn.ParticleTransformer(le.BACKBONE, rngs=nnx.Rngs(k)))
                 for k, name in enumerate(("sup", "mpm", "random"))}
    heads, modes = [], {}
    for s in le.STRATEGIES:
        model, modes[s] = le._model(s, backbones, seed=2)
        heads.append(_leaves(nnx.state(model.head)))
        if s != "scratch":
            source = {"sup": "sup", "mpm": "mpm", "random": "random"}[s.split("_")[0]]
            for x, y in zip(_leaves(nnx.state(model.backbone)), _leaves(backbones[source]),
                            strict=True):
                np.testing.assert_array_equal(x, y)
    for h in heads[1:]:
        for x, y in zip(h, heads[0], strict=True):
            np.testing.assert_array_equal(x, y)
    assert modes == {"scratch": "scratch", "sup_finetune": "finetune", "sup_frozen": "frozen",
                     "mpm_finetune": "finetune", "mpm_frozen": "frozen",
                     "random_frozen": "frozen"}
    other, _ = le._model("scratch", backbones, seed=3)
    assert not all(np.array_equal(x, y) for x, y in zip(_leaves(nnx.state(other.head)),
                                                          heads[0], strict=True))
