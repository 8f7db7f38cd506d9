#!/usr/bin/env bash
# Real test of deploy/init/redirect.sh in two throw-away network namespaces.
#
#   client ns  veth 10.123.0.1/24  <---->  veth 10.123.0.2/24  pod ns
#                                          redirect.sh runs here; a banner server listens on
#                                          8080 (the "app"), 15000 (admin) and 15006 (proxy)
#
# Each listener answers a connection with one line: the port it accepted on and, from
# getsockopt(SOL_IP, SO_ORIGINAL_DST=80), the original destination -- what Outrider reads
# (for a connection that was not redirected it is the address itself, or none).
# Needs root, iproute2 (ip), iptables and python3. Prints `N passed, N failed`; exits 1 on a
# failure, 2 when it cannot run (not root / tools missing). The namespaces live only for the
# test and are removed on exit.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REDIRECT="$HERE/redirect.sh"
ID="$$"
NS_CLIENT="outrider-t-client-$ID"
NS_POD="outrider-t-pod-$ID"
VETH_C="orc$ID"
VETH_P="orp$ID"
POD_IP=10.123.0.2
CLIENT_IP=10.123.0.1
TMP="$(mktemp -d /tmp/outrider-redirect-test.XXXXXX)"
SERVER_PID=""
PASS=0
FAIL=0

if [ "$(id -u)" != 0 ]; then echo "test_redirect: needs root (network namespaces, iptables)" >&2; exit 2; fi
missing=""
for t in ip iptables python3; do command -v "$t" >/dev/null 2>&1 || missing="$missing $t"; done
if [ -n "$missing" ]; then
  echo "test_redirect: missing:$missing (apt-get install -y iproute2 iptables python3)" >&2; exit 2
fi

cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  ip netns del "$NS_CLIENT" 2>/dev/null
  ip netns del "$NS_POD" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat > "$TMP/banner.py" <<'PY'
import selectors, socket, struct, sys
sel = selectors.DefaultSelector()
for port in map(int, sys.argv[1:]):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64); sel.register(s, selectors.EVENT_READ, port)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        c, _ = key.fileobj.accept()
        try:
            raw = c.getsockopt(socket.SOL_IP, 80, 16)          # SO_ORIGINAL_DST
            _, p, a = struct.unpack("!HH4s8x", raw)
            orig = f"{socket.inet_ntoa(a)}:{p}"
        except OSError:
            orig = "none"
        c.sendall(f"port={key.data} orig={orig}\n".encode()); c.close()
PY

cat > "$TMP/probe.py" <<'PY'
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as s:
        print(s.makefile().readline().strip())
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print(f"error {e}")
PY

in_pod() { ip netns exec "$NS_POD" "$@"; }
in_client() { ip netns exec "$NS_CLIENT" "$@"; }

check() { # check NAME EXPECTED ACTUAL
  if [ "$2" = "$3" ]; then PASS=$((PASS + 1)); echo "ok   $1"
  else FAIL=$((FAIL + 1)); echo "FAIL $1: expected '$2', got '$3'"; fi
}
from_client() { in_client python3 "$TMP/probe.py" "$POD_IP" "$1"; }
from_pod_lo() { in_pod python3 "$TMP/probe.py" 127.0.0.1 "$1"; }
port_of() { echo "${1%% orig=*}"; }  # the accepting port, without the original destination
count_rules() { in_pod iptables -w -t nat -S | grep -c "$1"; }

set -e
ip netns add "$NS_CLIENT"
ip netns add "$NS_POD"
ip link add "$VETH_C" type veth peer name "$VETH_P"
ip link set "$VETH_C" netns "$NS_CLIENT"
ip link set "$VETH_P" netns "$NS_POD"
in_client ip addr add "$CLIENT_IP/24" dev "$VETH_C"
in_pod ip addr add "$POD_IP/24" dev "$VETH_P"
for ns in "$NS_CLIENT" "$NS_POD"; do ip -n "$ns" link set lo up; done
in_client ip link set "$VETH_C" up
in_pod ip link set "$VETH_P" up

in_pod python3 "$TMP/banner.py" 8080 15000 15006 > "$TMP/server.out" 2>&1 &
SERVER_PID=$!
for _ in $(seq 50); do grep -q ready "$TMP/server.out" 2>/dev/null && break; sleep 0.1; done
set +e

echo "# before redirect.sh"
check "8080 reaches the app directly"            "port=8080"  "$(port_of "$(from_client 8080)")"

echo "# redirect.sh -p 15006 -x 15000 (run twice: idempotent)"
in_pod "$REDIRECT" -p 15006 -x 15000 2>"$TMP/redirect.err" || { echo "redirect.sh failed:"; cat "$TMP/redirect.err"; }
in_pod "$REDIRECT" -p 15006 -x 15000 2>>"$TMP/redirect.err" || { echo "redirect.sh (2nd run) failed:"; cat "$TMP/redirect.err"; }
check "8080 from the client lands on 15006"      "port=15006 orig=$POD_IP:8080" "$(from_client 8080)"
check "any other port (9999) lands on 15006"     "port=15006 orig=$POD_IP:9999" "$(from_client 9999)"
check "excluded admin port 15000 is not redirected" "port=15000" "$(port_of "$(from_client 15000)")"
check "15006 itself still answers"               "port=15006" "$(port_of "$(from_client 15006)")"
check "pod-local 127.0.0.1:8080 not redirected (proxy -> upstream)" "port=8080" "$(port_of "$(from_pod_lo 8080)")"
check "exactly one PREROUTING jump after two runs" "1" "$(count_rules '^-A PREROUTING .*OUTRIDER_INBOUND')"
check "one REDIRECT rule after two runs"          "1" "$(count_rules 'REDIRECT --to-ports 15006')"
check "every OUTRIDER rule carries an outrider-init/ comment" \
  "$(count_rules '^-A .*OUTRIDER_')" "$(count_rules '^-A .*outrider-init/')"

echo "# redirect.sh -b 8080 (include list) -p 15006"
in_pod "$REDIRECT" -b 8080 -p 15006 -x "" 2>>"$TMP/redirect.err" || echo "redirect.sh -b failed"
check "listed port 8080 lands on 15006"          "port=15006 orig=$POD_IP:8080" "$(from_client 8080)"
check "unlisted port 15000 is not redirected"    "port=15000" "$(port_of "$(from_client 15000)")"
check "unlisted port 9999 is not redirected"     "refused" "$(from_client 9999)"

echo "# bad arguments"
in_pod "$REDIRECT" -p 99999 >/dev/null 2>&1; rc=$?
check "-p 99999 is rejected (exit 2)"            "2" "$rc"
in_pod "$REDIRECT" -x 15000,abc >/dev/null 2>&1; rc=$?
check "-x with a bad port is rejected (exit 2)"  "2" "$rc"

echo "# redirect.sh --clean"
in_pod "$REDIRECT" --clean 2>>"$TMP/redirect.err" || echo "redirect.sh --clean failed"
check "after --clean 8080 reaches the app"       "port=8080" "$(port_of "$(from_client 8080)")"
check "after --clean no OUTRIDER chains remain"  "0" "$(count_rules 'OUTRIDER_')"
in_pod "$REDIRECT" --clean 2>>"$TMP/redirect.err"; rc=$?
check "--clean twice is fine"                    "0" "$rc"

echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
