#!/usr/bin/env python3
"""submitit (PyPI), unchanged, against a Drover cluster through the Slurm
command names. Its SlurmExecutor writes an sbatch script that runs the
pickled function through `srun --unbuffered --output ...` inside the job,
reads each rank's environment (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID,
SLURM_NODEID, SLURM_JOB_NODELIST) through its JobEnvironment, and polls
states with `sacct -o JobID,State,NodeList --parsable2`. Run by
tests/pypi_clients.rs with the links first on PATH:
    submitit_client.py WORKDIR
"""
import os
import sys
import time

import submitit

WORK = sys.argv[1]


def final_state(job, timeout=20):
    """The state sacct gives once the job has ended (submitit caches states
    for minutes; ask it to look again)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = job.watcher.get_state(job.job_id, mode="force")
        if state not in ("PENDING", "RUNNING", "COMPLETING", "UNKNOWN"):
            return state
        time.sleep(0.2)
    raise AssertionError(f"job {job.job_id} still {state} after {timeout} s")


def add(a, b):
    return a + b


def where_am_i():
    env = submitit.JobEnvironment()
    return (env.global_rank, env.num_tasks, env.local_rank, env.node, env.num_nodes, env.hostnames)


def fail():
    raise ValueError("on purpose")


def square(x):
    return x * x


def main():
    ex = submitit.SlurmExecutor(folder=os.path.join(WORK, "submitit-%j"), python=sys.executable)
    ex.update_parameters(time=5, partition="debug", nodes=1, ntasks_per_node=1, cpus_per_task=1)

    job = ex.submit(add, 2, 3)
    assert job.result() == 5, job.result()
    assert final_state(job) == "COMPLETED"
    print(f"add: job {job.job_id} -> {job.result()} (COMPLETED)")

    # Two nodes, two ranks each: every rank runs the function with its own place.
    ex.update_parameters(nodes=2, ntasks_per_node=2)
    job = ex.submit(where_am_i)
    places = sorted(job.results())
    assert [p[0] for p in places] == [0, 1, 2, 3], places
    assert all(p[1] == 4 and p[4] == 2 for p in places), places
    assert [(p[2], p[3]) for p in places] == [(0, 0), (1, 0), (0, 1), (1, 1)], places
    assert places[0][5] == ["node1", "node2"], places
    print(f"ranks: job {job.job_id} -> {places}")

    ex.update_parameters(nodes=1, ntasks_per_node=1)
    job = ex.submit(fail)
    try:
        job.result()
        raise AssertionError("the failing job returned")
    except submitit.core.utils.FailedJobError as e:
        assert "on purpose" in str(e), e
    state = final_state(job)
    assert state == "FAILED", state
    print(f"fail: job {job.job_id} raised as expected ({state})")

    jobs = ex.map_array(square, [1, 2, 3, 4])
    assert [j.result() for j in jobs] == [1, 4, 9, 16]
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1, [j.job_id for j in jobs]
    print(f"array: {[j.job_id for j in jobs]} -> {[j.result() for j in jobs]}")
    print("all checks passed")


if __name__ == "__main__":
    main()
