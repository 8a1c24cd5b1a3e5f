"""Tests of evograd.protocols: who implements what, and wrappers that declare what they wrap."""

import copy

import pytest
import torch
from torch.nn import functional as F

from evograd import (
    FunctionEvaluator,
    HybridOptimizer,
    Mutation,
    OpenES,
    RollingImprovement,
    ScaleFreeEvolution,
    SerialEvaluator,
    VmapEvaluator,
)
from evograd import directions as D
from evograd.mpi import MPIEvaluator, MPIModelEvaluator, MPIVectorEvaluator
from evograd.protocols import Evaluator, GradientEstimator, ModelEvaluator, State, Strategy, VectorEvaluator
from evograd.tasks import mlp


class OneRank:
    """A communicator of one rank: enough to build an MPIEvaluator without MPI."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1


class Bare:
    """An evaluator with nothing but the Evaluator protocol: a population of zeros."""

    evaluations = fe = 0

    def __call__(self, center, seeds, mutation):
        self.evaluations += len(seeds)
        self.fe += len(seeds)
        return torch.zeros(len(seeds))


def sphere():
    return FunctionEvaluator(lambda x: (x**2).sum(1))


def test_evaluators_and_strategies_implement_their_protocols():
    model = mlp((4, 3, 2), seed=0)
    for evaluator in (VmapEvaluator(model, F.cross_entropy), SerialEvaluator(model, F.cross_entropy)):
        assert isinstance(evaluator, ModelEvaluator) and not isinstance(evaluator, VectorEvaluator)
    assert isinstance(sphere(), VectorEvaluator) and not isinstance(sphere(), ModelEvaluator)
    assert isinstance(Bare(), Evaluator) and not isinstance(Bare(), (ModelEvaluator, VectorEvaluator))
    assert not isinstance(lambda center, seeds, mutation: seeds, Evaluator)  # no cost counters
    for strategy in (RollingImprovement(size=4), OpenES(size=4)):
        assert isinstance(strategy, GradientEstimator)
        assert isinstance(strategy.init(torch.zeros(3), seed=0), State)
    assert isinstance(ScaleFreeEvolution(size=4), Strategy) and not isinstance(ScaleFreeEvolution(), GradientEstimator)


def test_gradient_estimates_point_uphill():
    """On a sphere the loss gradient at x is 2x: both estimators must agree with it in sign."""
    center = torch.linspace(0.5, 1.5, 8, dtype=torch.float64)
    for strategy in (
        RollingImprovement(size=32, mutation=Mutation(sigma=0.01, antithetic=True), lr=0.0),
        OpenES(size=32, mutation=Mutation(sigma=0.01, antithetic=True), lr=0.0),
    ):
        state = strategy.init(center, seed=0)
        assert strategy.gradient_estimate(state) is None or not strategy.gradient_estimate(state).any()
        seeds = strategy.ask(state)
        state, _ = strategy.tell(state, seeds, sphere()(state.center, seeds, state.mutation))
        assert F.cosine_similarity(strategy.gradient_estimate(state), 2 * center, dim=0) > 0.5, strategy


def test_vector_objective_is_the_function_of_one_vector():
    loss, samples = sphere().vector_objective()
    x = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    assert samples == 1 and loss(x).item() == 5.25
    _, slope = torch.func.jvp(loss, (x,), (torch.ones(3, dtype=torch.float64),))
    assert slope.item() == pytest.approx(2 * (1.0 - 2.0 + 0.5))  # differentiable: ∇·1 = 2Σx


def test_mpi_evaluator_declares_and_forwards_what_it_wraps():
    model = mlp((4, 3, 2), seed=0)
    local = VmapEvaluator(model, F.cross_entropy, chunk_size=5)
    wrapped = MPIEvaluator(local, OneRank())
    assert type(wrapped) is MPIModelEvaluator and isinstance(wrapped, ModelEvaluator)
    assert wrapped.model is model and wrapped.block == 5
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randn(6, 4, generator=gen), torch.randint(0, 2, (6,), generator=gen))
    wrapped.set_batch(batch)
    assert local.batch is batch and wrapped.batch is batch
    loss, samples = wrapped.objective()
    assert samples == 6 and torch.equal(loss({}), F.cross_entropy(model(batch[0]), batch[1]))

    vector = MPIEvaluator(sphere(), OneRank())
    assert type(vector) is MPIVectorEvaluator and not isinstance(vector, ModelEvaluator)
    assert vector.vector_objective()[0](torch.tensor([3.0, 4.0])).item() == 25.0
    copied = copy.copy(wrapped)  # a wrapper copies like any object, keeping what it declares
    assert type(copied) is MPIModelEvaluator and copied.local is local
    bare = MPIEvaluator(Bare(), OneRank())
    assert type(bare) is MPIEvaluator and not isinstance(bare, (ModelEvaluator, VectorEvaluator)) and bare.block == 1
    with pytest.raises(TypeError, match="local must be an evograd.Evaluator"):
        MPIEvaluator(object(), OneRank())


def test_what_an_evaluator_lacks_is_named():
    x = torch.nn.Parameter(torch.ones(4))
    with pytest.raises(TypeError, match="evaluator must be an evograd.Evaluator"):
        HybridOptimizer([x], D.backprop(), evaluator=lambda center, seeds, mutation: seeds)
    with pytest.raises(TypeError, match="spsa\\(\\) needs the loss as a function of the parameters"):
        HybridOptimizer([x], D.spsa(seed=0), evaluator=Bare()).step()
    optimizer = HybridOptimizer([x], D.improvement(RollingImprovement(size=4), seed=0), evaluator=Bare())
    optimizer.step()  # a population needs nothing but the Evaluator protocol
    assert optimizer.fe == 5  # parent and 4 mutations, 1 FE each as Bare counts them
    with pytest.raises(TypeError, match="Bare takes no batch: it is not a ModelEvaluator"):
        optimizer.step(batch=(torch.zeros(2, 4), torch.zeros(2)))
    with pytest.raises(TypeError, match="improvement\\(\\) needs an ask/tell strategy that estimates the gradient"):
        D.improvement(ScaleFreeEvolution(size=4), seed=0)


def test_a_source_without_an_estimate_yet_moves_nothing():
    """A GradientEstimator may answer None; the source then returns a zero direction, not an error."""

    class Late(RollingImprovement):
        def gradient_estimate(self, state):
            return None

    x = torch.nn.Parameter(torch.ones(3))
    optimizer = HybridOptimizer([x], D.improvement(Late(size=4), seed=0), evaluator=sphere(), lr=1.0)
    optimizer.step()
    assert torch.equal(x.grad, torch.zeros(3)) and torch.equal(x.detach(), torch.ones(3))
    assert optimizer.fe == 5  # the population was still scored
