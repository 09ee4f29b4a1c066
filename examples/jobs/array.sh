#!/bin/bash
#SBATCH --job-name=squares
#SBATCH --array=0-99%10
#SBATCH --time=1
#SBATCH --output=squares-%A_%a.out

# Each task squares its index.
echo $(( SLURM_ARRAY_TASK_ID * SLURM_ARRAY_TASK_ID ))
