#!/bin/bash
#SBATCH --job-name=hello
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --time=00:01:00
#SBATCH --output=hello-%j.out

# Print where and as what the job runs.
echo "hello from ${SLURM_JOB_ID:-?} on $(hostname) as $(id -un)"
echo "nodes: ${SLURM_JOB_NODELIST:-?}  cpus on node: ${SLURM_CPUS_ON_NODE:-?}"
