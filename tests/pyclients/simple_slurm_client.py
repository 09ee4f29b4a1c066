#!/usr/bin/env python3
"""simple-slurm (PyPI), unchanged, against a Drover cluster through the
Slurm command names: it submits with `sbatch << EOF`, polls `squeue --me -o
<csv format>`, cancels with `scancel`; the test reads states back with
`sacct`. Run by tests/pypi_clients.rs with the links first on PATH:
    simple_slurm_client.py WORKDIR
"""
import subprocess
import sys
import time

from simple_slurm import Slurm

WORK = sys.argv[1]


def sacct(job, fields="State,ExitCode"):
    out = subprocess.run(["sacct", "-j", str(job), "-X", "-n", "-P", "-o", fields],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def wait(what, done, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if done():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


# A job: submitted through a here-document, waited for through squeue, its
# output and state read back.
hello = Slurm(job_name="ss-hello", output=f"{WORK}/ss-%j.out", ntasks=1, cpus_per_task=1)
job = hello.sbatch("echo hello from simple_slurm; echo job $SLURM_JOB_ID on $SLURM_JOB_NODELIST", verbose=False)
assert isinstance(job, int) and job > 0, job


def gone():
    hello.squeue.update_squeue()
    return job not in hello.squeue.jobs


wait(f"job {job} leaves the queue", gone)
out = open(f"{WORK}/ss-{job}.out").read()
assert "hello from simple_slurm" in out, out
assert f"job {job} on node" in out, out
assert sacct(job) == "COMPLETED|0:0", sacct(job)

# A failing job's exit code.
bad = Slurm(job_name="ss-bad", output="/dev/null").sbatch("exit 7", verbose=False)
wait(f"job {bad} fails", lambda: sacct(bad).startswith("FAILED"))
assert sacct(bad) == "FAILED|7:0", sacct(bad)

# A long job: seen running in squeue's parsed rows, then cancelled.
slow = Slurm(job_name="ss-slow", output="/dev/null")
sid = slow.sbatch("sleep 120", verbose=False)


def running():
    slow.squeue.update_squeue()
    row = slow.squeue.jobs.get(sid)
    return row is not None and row["ST"] == "R"


wait(f"job {sid} running", running)
row = slow.squeue.jobs[sid]
assert row["NAME"] == "ss-slow" and row["NODES"] == "1" and row["CPUS"] == "1", row
assert slow.squeue.get_filtered_jobs("ss-slow").keys() == {sid}
slow.scancel.cancel_job(sid)
wait(f"job {sid} cancelled", lambda: sacct(sid).startswith("CANCELLED"))

# An array from a Python range, every task's output present.
arr = Slurm(job_name="ss-arr", array=range(0, 4), output=f"{WORK}/arr-%A_%a.out")
aid = arr.sbatch("echo task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_TASK_COUNT", verbose=False)
wait(f"array {aid} done", lambda: all(
    line.endswith("|COMPLETED") for line in sacct(aid, "JobID,State").splitlines()) and
    len(sacct(aid, "JobID,State").splitlines()) == 4)
for t in range(4):
    text = open(f"{WORK}/arr-{aid}_{t}.out").read()
    assert text.strip() == f"task {t} of 4", text
print("simple-slurm: all checks passed")
