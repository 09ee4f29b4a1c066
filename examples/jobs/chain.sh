#!/bin/bash
# A three-step dependency chain: each step starts only if the previous one
# completed successfully (afterok). Run it with:  bash examples/jobs/chain.sh
set -euo pipefail
first=$(drover submit --parsable -J prepare --wrap 'echo prepared > chain-data.txt')
second=$(drover submit --parsable -J compute -d "afterok:$first" --wrap 'wc -c < chain-data.txt > chain-result.txt')
third=$(drover submit --parsable -J report -d "afterok:$second" --wrap 'echo "result: $(cat chain-result.txt) bytes"')
echo "submitted $first -> $second -> $third"
drover wait "$first" "$second" "$third" && drover logs "$third"
