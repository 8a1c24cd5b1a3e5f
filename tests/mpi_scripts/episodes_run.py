"""Rank script: episodic training with observation normalization through MPIEvaluator(EpisodeEvaluator).

    mpiexec -n 3 python -m mpi4py episodes_run.py OUT.pt    # the SPMD run (rank 0 writes OUT.pt)
    python episodes_run.py --reference OUT.pt                # the same loops in one process, no MPI

Each rank scores its share of the members' episodes and sends each member's row of observation
statistics with its fitness; every rank merges all rows in member order. The population (18, in
chunks of 4) does not divide evenly by 2 or 3 ranks; Pendulum's continuous torques make any bit of
difference in the statistics visible in the returns.
"""

import argparse

import torch

from evograd import Mutation, OpenES, flat, tasks

CHUNK = 4
GENERATIONS = 3
TASKS = {"cartpole": 2, "pendulum": 1}  # task: episodes per member


def run(wrap):
    """Fitness of every generation, the final center, the policy's statistics and the cost, per task."""
    results = {}
    for name, episodes in TASKS.items():
        task = tasks.get(name)
        model = task.make_model(0)
        local = tasks.EpisodeEvaluator(
            model, task.environment, seed=0, episodes=episodes, obs_norm=True, chunk_size=CHUNK
        )
        evaluate = wrap(local)
        strategy = OpenES(size=18, mutation=Mutation(sigma=0.3, antithetic=True), lr=0.05)
        state = strategy.init(flat.flatten(model), seed=0)
        history = []
        for _ in range(GENERATIONS):
            seeds = strategy.ask(state)
            fitness = evaluate(state.center, seeds, state.mutation)
            history.append(fitness)
            state, _ = strategy.tell(state, seeds, fitness)
        norm = model[0]
        results[name] = {
            "fitness": torch.stack(history),
            "center": state.center,
            "statistics": (norm.count.clone(), norm.mean.clone(), norm.m2.clone(), norm.scale.clone()),
            "fe": evaluate.fe,
            "generation": local.generation,
        }
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--reference", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.reference:
        torch.save(run(lambda local: local), args.out)
        return
    from mpi4py import MPI

    from evograd.mpi import MPIEvaluator

    results = run(MPIEvaluator)
    comm = MPI.COMM_WORLD
    if comm.Get_rank() == 0:
        torch.save(results, args.out)
    print(f"rank {comm.Get_rank()} of {comm.Get_size()} ok", flush=True)


if __name__ == "__main__":
    main()
