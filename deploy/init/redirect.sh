#!/usr/bin/env bash
# outrider-init: redirect a pod's INBOUND TCP traffic to the Outrider sidecar (iptables, nat table).
#
# Same shape as istio-init's inbound half:
#   PREROUTING -p tcp -> OUTRIDER_INBOUND
#   OUTRIDER_INBOUND:     RETURN for each excluded port (admin/readiness, ...)
#                         (include mode: jump only for the listed ports)
#                         -> OUTRIDER_IN_REDIRECT
#   OUTRIDER_IN_REDIRECT: REDIRECT --to-ports <inbound port, 15006>
# Every rule carries `-m comment --comment outrider-init/<what>`.
#
# Only PREROUTING is touched: traffic the pod makes itself (the proxy's connection to its
# upstream 127.0.0.1:8080, the app's outbound calls) goes through OUTPUT and is not redirected.
# Outbound capture (istio's 15001 + uid-owner 1337 exemption) is out of scope: the sidecar has
# one fixed upstream, so there is no original destination to route outbound traffic to.
#
# Idempotent: the chains are created if missing and flushed, and the PREROUTING jump is
# re-added exactly once. `--clean` removes everything this script added.
#
# Usage: redirect.sh [-p PORT] [-x PORTS] [-b PORTS] [-6] [--dry-run] [--clean]
#   -p PORT    port Outrider's inbound listener accepts on      (env OUTRIDER_INBOUND_PORT, 15006)
#   -x PORTS   comma list of inbound ports NOT redirected        (env OUTRIDER_EXCLUDE_INBOUND_PORTS, 15000)
#   -b PORTS   comma list of inbound ports to redirect; `*` = all (env OUTRIDER_INBOUND_PORTS, *)
#   -6         also program ip6tables                            (env OUTRIDER_IPV6=1)
#   --dry-run  print the commands instead of running them
#   --clean    remove the chains and the PREROUTING jump, then exit
# Env OUTRIDER_IPTABLES picks the binary (default `iptables`; e.g. `iptables-legacy` on nodes
# whose kube-proxy uses the legacy backend).
# Needs root with NET_ADMIN and NET_RAW in the pod's network namespace.
set -euo pipefail

INBOUND_PORT="${OUTRIDER_INBOUND_PORT:-15006}"
EXCLUDE_PORTS="${OUTRIDER_EXCLUDE_INBOUND_PORTS:-15000}"
INCLUDE_PORTS="${OUTRIDER_INBOUND_PORTS:-*}"
IPV6="${OUTRIDER_IPV6:-0}"
IPT4="${OUTRIDER_IPTABLES:-iptables}"
DRY_RUN=0
CLEAN=0

usage() { sed -n '/^# Usage:/,/^# Needs root/p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    -p) INBOUND_PORT="${2:?-p needs a port}"; shift 2 ;;
    -x) EXCLUDE_PORTS="${2?-x needs a port list}"; shift 2 ;;
    -b) INCLUDE_PORTS="${2:?-b needs a port list}"; shift 2 ;;
    -6) IPV6=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --clean) CLEAN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "outrider-init: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

valid_port() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }
split_ports() { # comma list -> words, validated
  local list="$1" p
  IFS=',' read -r -a _ports <<< "$list"
  for p in "${_ports[@]}"; do
    p="${p// /}"
    [ -z "$p" ] && continue
    valid_port "$p" || { echo "outrider-init: bad port '$p' in '$list'" >&2; exit 2; }
    echo "$p"
  done
}

valid_port "$INBOUND_PORT" || { echo "outrider-init: bad inbound port '$INBOUND_PORT'" >&2; exit 2; }
EXCLUDES=$(split_ports "$EXCLUDE_PORTS")
if [ "$INCLUDE_PORTS" != "*" ]; then INCLUDES=$(split_ports "$INCLUDE_PORTS"); fi

run() {
  if [ "$DRY_RUN" = 1 ]; then echo "$*"; else "$@"; fi
}

# try: a command whose failure is expected (chain absent, rule absent)
try() {
  if [ "$DRY_RUN" = 1 ]; then echo "$* || true"; else "$@" 2>/dev/null; fi
}

JUMP_COMMENT="outrider-init/inbound-capture"

remove_jump() { # delete every copy of our PREROUTING jump
  local ipt="$1" n=0
  [ "$DRY_RUN" = 1 ] && { try "$ipt" -w -t nat -D PREROUTING -p tcp -m comment --comment "$JUMP_COMMENT" -j OUTRIDER_INBOUND; return 0; }
  while "$ipt" -w -t nat -D PREROUTING -p tcp -m comment --comment "$JUMP_COMMENT" -j OUTRIDER_INBOUND 2>/dev/null; do
    n=$((n + 1)); [ $n -gt 100 ] && break
  done
  return 0
}

clean() {
  local ipt="$1"
  remove_jump "$ipt"
  for c in OUTRIDER_INBOUND OUTRIDER_IN_REDIRECT; do
    try "$ipt" -w -t nat -F "$c" || true
    try "$ipt" -w -t nat -X "$c" || true
  done
}

program() {
  local ipt="$1" p
  # own chains: create if missing, then flush (idempotent re-runs)
  for c in OUTRIDER_INBOUND OUTRIDER_IN_REDIRECT; do
    try "$ipt" -w -t nat -N "$c" || true
    run "$ipt" -w -t nat -F "$c"
  done
  run "$ipt" -w -t nat -A OUTRIDER_IN_REDIRECT -p tcp \
    -m comment --comment "outrider-init/redirect-to-$INBOUND_PORT" -j REDIRECT --to-ports "$INBOUND_PORT"
  # never loop the proxy's own port
  run "$ipt" -w -t nat -A OUTRIDER_INBOUND -p tcp --dport "$INBOUND_PORT" \
    -m comment --comment "outrider-init/proxy-port" -j RETURN
  for p in $EXCLUDES; do
    run "$ipt" -w -t nat -A OUTRIDER_INBOUND -p tcp --dport "$p" \
      -m comment --comment "outrider-init/exclude-$p" -j RETURN
  done
  if [ "$INCLUDE_PORTS" = "*" ]; then
    run "$ipt" -w -t nat -A OUTRIDER_INBOUND -p tcp \
      -m comment --comment "outrider-init/capture-all" -j OUTRIDER_IN_REDIRECT
  else
    for p in $INCLUDES; do
      run "$ipt" -w -t nat -A OUTRIDER_INBOUND -p tcp --dport "$p" \
        -m comment --comment "outrider-init/capture-$p" -j OUTRIDER_IN_REDIRECT
    done
  fi
  remove_jump "$ipt"
  run "$ipt" -w -t nat -A PREROUTING -p tcp -m comment --comment "$JUMP_COMMENT" -j OUTRIDER_INBOUND
}

TABLES=("$IPT4")
if [ "$IPV6" = 1 ]; then TABLES+=("${IPT4/iptables/ip6tables}"); fi

for ipt in "${TABLES[@]}"; do
  if [ "$DRY_RUN" != 1 ] && ! command -v "$ipt" >/dev/null 2>&1; then
    echo "outrider-init: $ipt not found" >&2; exit 1
  fi
  if [ "$CLEAN" = 1 ]; then
    clean "$ipt"
    echo "outrider-init: $ipt: removed OUTRIDER_* chains" >&2
  else
    program "$ipt"
    echo "outrider-init: $ipt: inbound tcp -> :$INBOUND_PORT (ports: ${INCLUDE_PORTS}; excluded: ${EXCLUDE_PORTS:-none})" >&2
  fi
done
if [ "$DRY_RUN" != 1 ] && [ "$CLEAN" != 1 ]; then
  for ipt in "${TABLES[@]}"; do "$ipt" -w -t nat -S 2>/dev/null | grep -E 'OUTRIDER_|outrider-init/' >&2 || true; done
fi
