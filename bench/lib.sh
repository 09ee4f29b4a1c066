# Shell helpers shared by the bench scripts (sourced, not run).
# Times are $EPOCHREALTIME seconds; lists arrive one number a line on stdin.

now() { echo "$EPOCHREALTIME"; }
# elapsed A B [DECIMALS]: B - A seconds.
elapsed() { awk -v a="$1" -v b="$2" -v p="${3:-6}" 'BEGIN{printf "%.*f", p, b-a}'; }
rate() { awk -v n="$1" -v d="$2" 'BEGIN{printf "%.1f", n/d}'; }
# quantile Q: the Q-th quantile (0.5 median, 1 max) of stdin, or NA.
quantile() { sort -g | awk -v q="$1" '{a[NR]=$1} END{if(NR==0){print "NA"}else{i=int(NR*q+0.999); if(i<1)i=1; if(i>NR)i=NR; print a[i]}}'; }
median() { quantile 0.5; }
p99() { quantile 0.99; }

# Builds the release binary and sets DROVER to it; a DROVER already set
# (another build, for an A/B run) is used as it is.
build_drover() {
    if [[ -n ${DROVER:-} ]]; then
        DROVER=$(realpath "$DROVER")
        echo "== using $DROVER"
        return
    fi
    echo "== building drover (release)"
    (cd "$ROOT" && cargo build --release -q) || exit 1
    DROVER="$ROOT/target/release/drover"
}
