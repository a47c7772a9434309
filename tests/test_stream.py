"""Streaming training data (difphys.io.JetStream): every jet at most once per epoch, batches a
function of (key, step) only, and a training run resumed mid-epoch bit-identical to an
uninterrupted one."""

from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from difphys.io import DataConfig, JetStream
from difphys.nn import ParTConfig, ParticleTransformer
from difphys.train import fit

CONFIG = Path(__file__).parent / "data" / "zpole_full.yaml"
N_FILES = 20


@pytest.fixture(scope="module")
def files(zpole_files):
    """3000 Z-pole jets in 20 ROOT files of 150."""
    folder, _ = zpole_files(3000, [f"z{i:02d}" for i in range(N_FILES)])
    return [str(folder / f"z{i:02d}.root") for i in range(N_FILES)]


@pytest.fixture(scope="module")
def config():
    return DataConfig.from_yaml(CONFIG)


def _ids(batch):
    """One id per jet: the bytes of its four-momenta (distinct for distinct jets)."""
    return [row.tobytes() for row in np.asarray(batch["p4"])]


def test_every_jet_at_most_once_per_epoch(files, config):
    stream = JetStream(files, config, 32, key=jax.random.key(1), chunk_size=40,
                       buffer_chunks=3, lanes=2)
    assert len(stream.chunks) == N_FILES * 4  # 150 entries: chunks of 40, 40, 40, 30
    n = stream.n_jets
    steps = stream.epoch_steps(0)
    seen = [i for s in range(steps) for i in _ids(stream.batch_at(s))]
    assert len(seen) == len(set(seen)) == steps * 32
    # what an epoch leaves out: under b = 16 jets per lane, plus the larger lane's excess
    lane_sizes = [int(stream.counts[stream.lane_chunks(0, lane)].sum()) for lane in range(2)]
    assert sum(lane_sizes) == n
    assert n - len(seen) <= 2 * 15 + max(lane_sizes) - min(lane_sizes)
    assert max(lane_sizes) - min(lane_sizes) <= 40  # round-robin chunks: below one chunk
    # the next epoch is another order of the same jets (a shuffle across files)
    first, start = _ids(stream.batch_at(0)), steps
    assert stream.locate(start) == (1, 0)
    nxt = _ids(stream.batch_at(start))
    assert nxt != first and set(nxt) <= set(seen) | set(nxt)
    files_in_batch = {stream.chunks[c].file for c in stream.lane_chunks(0, 0)[:3]}
    assert len(files_in_batch) > 1  # one shuffle group mixes chunks of several files


def test_batches_depend_on_key_and_step_only(files, config):
    a = JetStream(files, config, 32, key=jax.random.key(7), chunk_size=50, buffer_chunks=2)
    b = JetStream(files, config, 32, key=jax.random.key(7), chunk_size=50, buffer_chunks=2)
    steps = a.epoch_steps(0)
    wanted = [steps - 1, steps, steps + 3, 2, 0]  # across the epoch boundary, out of order
    sequential = {s: a.batch_at(s) for s in sorted(wanted)}
    for s in wanted:
        got = b.batch_at(s)
        for k in got:
            np.testing.assert_array_equal(got[k], sequential[s][k])
    c = JetStream(files, config, 32, key=jax.random.key(8), chunk_size=50, buffer_chunks=2)
    assert _ids(c.batch_at(0)) != _ids(a.batch_at(0))
    # the lanes of the processes, concatenated, are the global batch
    d = JetStream(files, config, 32, key=jax.random.key(7), chunk_size=50, lanes=4)
    whole = d.batch_at(5)
    parts = [d.batch_at(5, lanes=range(2 * p, 2 * p + 2)) for p in range(2)]
    np.testing.assert_array_equal(np.concatenate([p["p4"] for p in parts]), whole["p4"])


def test_resume_mid_epoch_is_bit_identical(files, config, tmp_path):
    def stream():
        return JetStream(files, config, 16, key=jax.random.key(3), chunk_size=60,
                         buffer_chunks=2)

    assert stream().epoch_steps(0) > 9  # the interruption at step 4 is mid-epoch

    def model():
        return ParticleTransformer(ParTConfig.named("tiny", num_classes=3),  # with dropout
                                   rngs=nnx.Rngs(0))

    def key():  # the same run key, a fresh key object each time (the key-reuse checker)
        return jax.random.key(11)

    whole, _ = fit(model(), stream(), steps=9, batch_size=16, key=key(), progress=False)
    ck = tmp_path / "ck"
    fit(model(), stream(), steps=4, batch_size=16, key=key(), checkpoint_dir=ck,
        checkpoint_every=2, progress=False)
    resumed, history = fit(model(), stream(), steps=9, batch_size=16, key=key(),
                           checkpoint_dir=ck, checkpoint_every=2, progress=False)
    assert history["step"][0] > 4  # it continued; it did not start over
    for a, b in zip(jax.tree.leaves(nnx.state(whole)), jax.tree.leaves(nnx.state(resumed)),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_stream_requests_it_cannot_serve(files, config):
    with pytest.raises(ValueError, match="not divisible by lanes"):
        JetStream(files, config, 30, key=jax.random.key(0), lanes=4)
    with pytest.raises(ValueError, match="larger than"):
        JetStream(files[:1], config, 4096, key=jax.random.key(0))
    with pytest.raises(FileNotFoundError, match="no file matches"):
        JetStream([files[0] + ".missing*"], config, 8, key=jax.random.key(0))
    model = ParticleTransformer(ParTConfig.named("tiny", num_classes=3), rngs=nnx.Rngs(0))
    s = JetStream(files[:2], config, 8, key=jax.random.key(0), chunk_size=100)
    with pytest.raises(ValueError, match="differs from the stream"):
        fit(model, s, steps=1, batch_size=16, key=jax.random.key(0), progress=False)
    with pytest.raises(ValueError, match="in-memory data"):
        fit(model, s, steps=1, batch_size=8, key=jax.random.key(0), trim=16, progress=False)
