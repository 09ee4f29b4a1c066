#!/bin/bash
#SBATCH --job-name=benchmark
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --mem=256M
#SBATCH --time=5
#SBATCH --output=benchmark-%j.out

# CPU work: one busy loop per allocated CPU for a few seconds.
echo "cpus allocated: ${SLURM_CPUS_ON_NODE:-1} ($(grep Cpus_allowed_list /proc/self/status | cut -f2))"
start=$(date +%s.%N)
for ((c = 0; c < ${SLURM_CPUS_ON_NODE:-1}; c++)); do
    ( i=0; while ((i < 300000)); do ((i++)); done ) &
done
wait
echo "cpu: $(echo "$(date +%s.%N) - $start" | bc 2>/dev/null || echo '?') s for ${SLURM_CPUS_ON_NODE:-1} x 300k iterations"

# Memory work: touch 128 MiB (half the job's limit), then free it.
python3 - <<'PY'
import time
t = time.time()
block = bytearray(128 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
print(f"memory: touched 128 MiB in {time.time() - t:.2f} s")
PY
