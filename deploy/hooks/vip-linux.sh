#!/bin/sh
# Drover leadership hook: moves a floating (virtual) IP to the leading
# controller, the way Pacemaker's IPaddr2 does for an active/passive pair.
#
#   drover controller ... --leader-hook '/usr/lib/drover/vip-linux.sh'
#
# The controller runs it with
#   DROVER_LEADER_EVENT   acquire (became leader) or release (stopped leading)
#   DROVER_CONTROLLER_ID, DROVER_CONTROLLER_ADDR, DROVER_TERM
# and this script reads
#   DROVER_VIP        the address with its prefix, e.g. 10.0.0.100/24 (required)
#   DROVER_VIP_DEV    the interface to put it on, e.g. eth0 (required)
#   DROVER_VIP_NETNS  run inside this network namespace (optional; the tests use it)
#
# On acquire it adds the address and announces it with gratuitous ARP
# (arping, when installed), so switches and neighbours learn the new owner
# at once; on release it removes the address. Both are idempotent: a
# repeated acquire or a release of an address not held succeeds.
set -eu

: "${DROVER_LEADER_EVENT:?set by the controller: acquire or release}"
: "${DROVER_VIP:?set DROVER_VIP to the floating address, e.g. 10.0.0.100/24}"
: "${DROVER_VIP_DEV:?set DROVER_VIP_DEV to the interface, e.g. eth0}"

ip_cmd() {
    if [ -n "${DROVER_VIP_NETNS:-}" ]; then
        ip -n "$DROVER_VIP_NETNS" "$@"
    else
        ip "$@"
    fi
}

held() {
    ip_cmd -o addr show dev "$DROVER_VIP_DEV" | grep -q " ${DROVER_VIP%/*}/"
}

case "$DROVER_LEADER_EVENT" in
acquire)
    held || ip_cmd addr add "$DROVER_VIP" dev "$DROVER_VIP_DEV"
    if command -v arping >/dev/null 2>&1; then
        # Unsolicited ARP; a failure (say, on a device without ARP) is not fatal.
        if [ -n "${DROVER_VIP_NETNS:-}" ]; then
            ip netns exec "$DROVER_VIP_NETNS" arping -q -U -c 2 -I "$DROVER_VIP_DEV" "${DROVER_VIP%/*}" || true
        else
            arping -q -U -c 2 -I "$DROVER_VIP_DEV" "${DROVER_VIP%/*}" || true
        fi
    fi
    echo "vip-linux: controller ${DROVER_CONTROLLER_ID:-?} holds $DROVER_VIP on $DROVER_VIP_DEV (term ${DROVER_TERM:-?})"
    ;;
release)
    if held; then
        ip_cmd addr del "$DROVER_VIP" dev "$DROVER_VIP_DEV"
    fi
    echo "vip-linux: controller ${DROVER_CONTROLLER_ID:-?} released $DROVER_VIP"
    ;;
*)
    echo "vip-linux: unknown DROVER_LEADER_EVENT '$DROVER_LEADER_EVENT' (acquire or release)" >&2
    exit 2
    ;;
esac
