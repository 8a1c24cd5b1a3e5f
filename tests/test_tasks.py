"""Tests of evograd.tasks: data shapes and splits, the MNIST IDX loader on tiny files, episodic fitness."""

import gzip
import struct

import numpy as np
import pytest
import torch

from evograd import noise, tasks


def _write_idx(path, array: np.ndarray, type_code: int = 0x08, compress: bool = False):
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(">u1" if type_code == 0x08 else ">f4").tobytes()
    with (gzip.open if compress else open)(path, "wb") as handle:  # closed here: gzip writes its trailer on close
        handle.write(payload)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_loader_reads_idx_files(tmp_path, compress):
    gen = np.random.default_rng(0)
    images = gen.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    labels = gen.integers(0, 10, size=12, dtype=np.uint8)
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images[:8], compress=compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels[:8], compress=compress)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images[8:], compress=compress)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels[8:], compress=compress)
    split = tasks.mnist(tmp_path)
    assert split.train_x.shape == (8, 784) and split.test_x.shape == (4, 784)
    assert torch.equal(split.train_y, torch.as_tensor(labels[:8], dtype=torch.int64))
    raw = images[:8].reshape(8, 784).astype(np.float64)
    expected = (raw - raw.mean(0)) / np.maximum(raw.std(0, ddof=1), 1e-6)
    np.testing.assert_allclose(split.train_x.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_read_idx_refuses_bad_files(tmp_path):
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="magic"):
        tasks.read_idx(tmp_path / "junk")
    _write_idx(tmp_path / "short", np.zeros((3, 4), dtype=np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-2])
    with pytest.raises(ValueError, match="header promises"):
        tasks.read_idx(tmp_path / "short")
    with pytest.raises(ValueError, match="lacks train-images"):
        tasks.mnist(tmp_path)


def test_digits_split_is_fixed_and_standardized():
    pytest.importorskip("sklearn")
    a, b = tasks.digits(seed=0), tasks.digits(seed=0)
    assert torch.equal(a.test_y, b.test_y) and len(a.train_x) + len(a.test_x) == 1797
    assert float(a.train_x.mean(0).abs().max()) < 1e-5
    assert not torch.equal(tasks.digits(seed=1).test_y, a.test_y)


def test_random_labels_keep_the_label_counts_but_not_the_labels():
    pytest.importorskip("sklearn")
    true, shuffled = tasks.digits(), tasks.random_labels()
    assert torch.equal(true.train_x, shuffled.train_x)
    assert torch.equal(torch.bincount(true.train_y), torch.bincount(shuffled.train_y))
    assert float((true.train_y == shuffled.train_y).double().mean()) < 0.2  # chance is ~0.1


def test_teacher_targets_come_from_the_teacher():
    split = tasks.teacher(sizes=(5, 7, 2), n_train=50, n_test=10, seed=3)
    net = tasks.mlp((5, 7, 2), seed=noise.stream_seed(3, "teacher"))  # the teacher's own stream of seed 3
    with torch.no_grad():
        torch.testing.assert_close(split.train_y, 2.0 * net(split.train_x))


def test_mlp_init_is_seeded_without_the_global_rng():
    state = torch.random.get_rng_state()
    a, b = tasks.mlp((4, 3, 2), seed=5), tasks.mlp((4, 3, 2), seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="task='imagenet' is unknown"):
        tasks.get("imagenet")


def test_cartpole_fitness_is_a_negated_return():
    pytest.importorskip("gymnasium")
    task = tasks.cartpole()
    model = task.make_model(0)
    fitness, steps = task.episode_fitness(model)
    assert fitness < 0 and steps == pytest.approx(-fitness * 3)  # CartPole pays 1 per step, 3 episodes
    assert task.episode_fitness(model) == (fitness, steps), "episodes are seeded"
