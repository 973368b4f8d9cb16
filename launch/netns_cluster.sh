#!/usr/bin/env bash
# A simulated multi-host cluster on one machine: N network namespaces ("hosts") joined by veth
# pairs to a bridge that lives in its own namespace, each link rate-limited in both directions
# with tc tbf, plus an Open MPI hostfile and an rsh agent that "logs in" to a host by entering its
# namespace. MPI then runs over real TCP between hosts, so communication costs (and the effect of
# link speed on training) can be rehearsed without a cluster. The root namespace is not touched:
# no address, route or link is added there. Recipe: ../shared/NOTES-cluster.md.
#
# Run with --help for usage. Needs root, iproute2 (ip, tc) and Open MPI's mpirun.
# shellcheck disable=SC2015,SC2016,SC2153  # A && B || die; generated agent text; sourced state
set -euo pipefail

usage() {
  cat <<'EOF'
usage: launch/netns_cluster.sh COMMAND [options]

A simulated cluster: N network namespaces <prefix>0..<prefix>N-1 ("hosts") on a private subnet,
each joined to a bridge (in namespace <prefix>br) by a veth pair rate-limited with tc tbf in both
directions. Open MPI reaches the hosts through a generated rsh agent (ip netns exec).

commands:
  up N [--rate R] [--slots K] [--prefix P] [--subnet A.B.C]
        create N hosts (1..250). R: tc rate, e.g. 1gbit, 100mbit, 10gbit, or "none" for no limit
        [10gbit]; K: MPI slots per host [1]; P: name prefix [ft]; subnet: first three octets of
        the /24 used inside the namespaces [10.77.0]. Host i gets address <subnet>.(i+1).
  run -- MPIRUN_ARGS...
        run mpirun inside host 0 with the hostfile, the rsh agent, TCP only on the cluster subnet
        and --allow-run-as-root, followed by MPIRUN_ARGS (e.g. -np 2 ./prog).
  exec I -- CMD...
        run CMD inside host I (a shell on a "node").
  status
        print hosts, addresses and the tbf rates actually installed.
  down [--prefix P]
        remove everything up made (namespaces, veths, bridge, state dir). Idempotent; works
        after a failed up. Without a state dir, --prefix P removes namespaces P0.., Pbr.
  --help

environment:
  FT_NETNS_DIR   state dir holding the state file, hostfile and agent [/tmp/ft-netns]

example:
  launch/netns_cluster.sh up 2 --rate 1gbit
  launch/netns_cluster.sh run -- -np 2 build/firetrain bench comm --models squeezenet1_0
  launch/netns_cluster.sh down
EOF
}

die() { echo "netns_cluster: $*" >&2; exit 1; }
usage_error() { echo "netns_cluster: $*" >&2; echo "(see --help)" >&2; exit 2; }

STATE_DIR="${FT_NETNS_DIR:-/tmp/ft-netns}"
STATE_FILE="$STATE_DIR/state"

need_root_and_ip() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "netns_cluster: must run as root (network namespaces, veth, tc)" >&2; exit 2
  fi
  if ! command -v ip >/dev/null 2>&1; then
    echo "netns_cluster: 'ip' (iproute2) not found; apt-get install iproute2" >&2; exit 2
  fi
  if ! ip netns list >/dev/null 2>&1; then
    echo "netns_cluster: 'ip netns' does not work here (no network namespace support?)" >&2; exit 2
  fi
}

# (No "grep -q" in pipelines here: with pipefail, its early exit can make the pipeline fail.)
ns_exists() { ip netns list 2>/dev/null | awk -v n="$1" '$1 == n {f = 1} END {exit !f}'; }

# tc rate ("1gbit", "100mbit", "2500kbit", "800bit") -> bytes per second.
rate_bytes() {
  local r=${1,,} num unit
  [[ $r =~ ^([0-9]+(\.[0-9]+)?)([kmg]?)bit$ ]] || return 1
  num=${BASH_REMATCH[1]}; unit=${BASH_REMATCH[3]}
  awk -v n="$num" -v u="$unit" 'BEGIN {
    m = (u == "k") ? 1e3 : (u == "m") ? 1e6 : (u == "g") ? 1e9 : 1;
    printf "%.0f\n", n * m / 8 }'
}

# Installs tbf on DEV inside namespace NS. burst = 2 ms of traffic (at least 64 KB): large
# enough that the token bucket is not the bottleneck below the rate at 250 Hz kernels, small
# enough that a transfer of a few MB already runs at the rate.
add_tbf() {
  local ns=$1 dev=$2 rate=$3 bps burst
  bps=$(rate_bytes "$rate")
  burst=$(( bps / 500 )); (( burst < 65536 )) && burst=65536
  ip netns exec "$ns" tc qdisc add dev "$dev" root tbf rate "$rate" burst "$burst" latency 50ms
}

# Removes the namespaces of a cluster (the veths die with them; the bridge lives in <prefix>br).
remove_cluster() {
  local prefix=$1 n=$2 i removed=0
  for ((i = 0; i < n; i++)); do
    if ns_exists "$prefix$i"; then ip netns del "$prefix$i" && removed=$((removed + 1)); fi
  done
  if ns_exists "${prefix}br"; then ip netns del "${prefix}br" && removed=$((removed + 1)); fi
  echo "netns_cluster: removed $removed namespace(s) of prefix '$prefix'"
}

# EXIT trap of up: anything but a completed up removes what was made.
up_cleanup() {
  local rc=$?
  ((UP_DONE)) && return
  echo "netns_cluster: up failed (status $rc); cleaning up" >&2
  set +e
  remove_cluster "$UP_PREFIX" "$UP_N" >&2
  rm -rf "$STATE_DIR"
  exit $((rc == 0 ? 1 : rc))
}

cmd_up() {
  local n="" rate=10gbit slots=1 prefix=ft subnet=10.77.0
  while (($#)); do
    case $1 in
      --rate) rate=${2:?--rate needs a value}; shift 2 ;;
      --slots) slots=${2:?--slots needs a value}; shift 2 ;;
      --prefix) prefix=${2:?--prefix needs a value}; shift 2 ;;
      --subnet) subnet=${2:?--subnet needs a value}; shift 2 ;;
      -h|--help) usage; exit 0 ;;
      -*) usage_error "up: unknown option $1" ;;
      *) [[ -z $n ]] || usage_error "up: more than one host count"; n=$1; shift ;;
    esac
  done
  [[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 250)) || usage_error "up: N must be 1..250, got '$n'"
  [[ $slots =~ ^[0-9]+$ ]] && ((slots >= 1)) || usage_error "up: --slots must be >= 1"
  [[ $prefix =~ ^[a-z][a-z0-9]{0,7}$ ]] ||
    usage_error "up: --prefix must be 1-8 lowercase letters/digits starting with a letter"
  [[ $subnet =~ ^10\.([0-9]{1,3})\.([0-9]{1,3})$ ]] ||
    usage_error "up: --subnet must be 10.X.Y (a private /24 used only inside the namespaces)"
  if [[ ${rate,,} != none ]]; then
    rate_bytes "$rate" >/dev/null || usage_error "up: bad --rate '$rate' (e.g. 1gbit, 100mbit)"
    command -v tc >/dev/null 2>&1 || { echo "netns_cluster: 'tc' not found" >&2; exit 2; }
  fi
  need_root_and_ip
  command -v mpirun >/dev/null 2>&1 || echo "netns_cluster: warning: mpirun not in PATH" >&2

  [[ -e $STATE_FILE ]] &&
    die "a cluster is already recorded in $STATE_DIR (run 'down' first, or set FT_NETNS_DIR)"
  local i
  for ((i = 0; i < n; i++)); do
    ns_exists "$prefix$i" &&
      die "namespace $prefix$i already exists (another cluster? 'down --prefix $prefix')"
  done
  ns_exists "${prefix}br" && die "namespace ${prefix}br already exists"

  # From here on everything made is recorded first, so a failure (or Ctrl-C) undoes it.
  mkdir -p "$STATE_DIR"
  cat >"$STATE_FILE" <<EOF
PREFIX=$prefix
N=$n
SUBNET=$subnet
RATE=$rate
SLOTS=$slots
EOF
  UP_PREFIX=$prefix UP_N=$n UP_DONE=0
  trap up_cleanup EXIT
  trap 'exit 130' INT TERM

  local br="${prefix}br"
  ip netns add "$br"
  ip -n "$br" link set lo up
  ip -n "$br" link add br0 type bridge
  ip -n "$br" link set br0 up
  for ((i = 0; i < n; i++)); do
    local h="$prefix$i" addr="$subnet.$((i + 1))"
    ip netns add "$h"
    ip -n "$h" link set lo up
    # Created inside the bridge namespace, the host end moved straight into the host: no
    # interface ever appears in the root namespace.
    ip -n "$br" link add "h$i" type veth peer name eth0 netns "$h"
    ip -n "$br" link set "h$i" master br0
    ip -n "$br" link set "h$i" up
    ip -n "$h" addr add "$addr/24" dev eth0
    ip -n "$h" link set eth0 up
    if [[ ${rate,,} != none ]]; then
      add_tbf "$h" eth0 "$rate"     # host -> bridge
      add_tbf "$br" "h$i" "$rate"   # bridge -> host
    fi
  done

  # Hostfile: addresses, so Open MPI needs no name resolution.
  : >"$STATE_DIR/hostfile"
  for ((i = 0; i < n; i++)); do
    echo "$subnet.$((i + 1)) slots=$slots" >>"$STATE_DIR/hostfile"
  done

  # rsh agent: Open MPI calls "AGENT [options] HOST COMMAND...", COMMAND meant for a remote shell.
  local agent="$STATE_DIR/rsh-agent.sh"
  {
    echo '#!/bin/sh'
    echo "# Generated by launch/netns_cluster.sh: 'log in' to a simulated host = enter its netns."
    echo 'while [ $# -gt 0 ]; do case $1 in -*) shift ;; *) break ;; esac; done'
    echo 'host=$1; shift'
    echo 'case $host in'
    for ((i = 0; i < n; i++)); do
      echo "  $subnet.$((i + 1))|$prefix$i) ns=$prefix$i ;;"
    done
    echo '  *) echo "rsh-agent: unknown host $host" >&2; exit 255 ;;'
    echo 'esac'
    echo 'exec ip netns exec "$ns" sh -c "$*"'
  } >"$agent"
  chmod +x "$agent"
  UP_DONE=1
  trap - EXIT INT TERM

  # Reachability check: host 0 pings the last host once.
  if ((n > 1)) && command -v ping >/dev/null 2>&1; then
    ip netns exec "${prefix}0" ping -c 1 -W 2 "$subnet.$n" >/dev/null ||
      echo "netns_cluster: warning: ${prefix}0 cannot ping $subnet.$n" >&2
  fi
  echo "netns_cluster: up: $n host(s) ${prefix}0..${prefix}$((n - 1)) on $subnet.0/24, rate $rate" \
       "each way, $slots slot(s)/host; state in $STATE_DIR"
}

load_state() {
  [[ -r $STATE_FILE ]] || die "no cluster recorded in $STATE_DIR (run 'up' first)"
  # shellcheck disable=SC1090
  source "$STATE_FILE"
}

cmd_run() {
  [[ ${1:-} == -- ]] && shift
  need_root_and_ip
  load_state
  # shellcheck disable=SC2054  # "tcp,self" is one argument
  local mca=(--hostfile "$STATE_DIR/hostfile"
             --mca plm_rsh_agent "$STATE_DIR/rsh-agent.sh"
             --mca plm_rsh_no_tree_spawn 1
             --mca btl tcp,self
             --mca btl_tcp_if_include "$SUBNET.0/24"
             --mca oob_tcp_if_include "$SUBNET.0/24")
  [[ $(id -u) -eq 0 ]] && mca+=(--allow-run-as-root)
  exec ip netns exec "${PREFIX}0" mpirun "${mca[@]}" "$@"
}

cmd_exec() {
  need_root_and_ip
  load_state
  local i=${1:?exec needs a host index}; shift
  [[ ${1:-} == -- ]] && shift
  [[ $i =~ ^[0-9]+$ ]] && ((i < N)) || usage_error "exec: host index must be 0..$((N - 1))"
  exec ip netns exec "$PREFIX$i" "$@"
}

# First "rate X" of the root qdisc of DEV in NS, or "-".
qdisc_rate() {
  local out
  out=$(ip netns exec "$1" tc qdisc show dev "$2" 2>/dev/null || true)
  awk 'BEGIN {r = "-"} {for (i = 1; i < NF; i++) if ($i == "rate" && r == "-") r = $(i + 1)}
       END {print r}' <<<"$out"
}

cmd_status() {
  need_root_and_ip
  load_state
  echo "state: $STATE_DIR   subnet: $SUBNET.0/24   requested rate: $RATE   slots/host: $SLOTS"
  printf '%-10s %-15s %-8s %-14s %-14s\n' host address state "rate host->br" "rate br->host"
  local i
  for ((i = 0; i < N; i++)); do
    local h="$PREFIX$i" st=missing up_rate=- down_rate=-
    if ns_exists "$h"; then
      st=$(ip -n "$h" -br link show eth0 2>/dev/null | awk '{print $2}')
      up_rate=$(qdisc_rate "$h" eth0)
      down_rate=$(qdisc_rate "${PREFIX}br" "h$i")
    fi
    printf '%-10s %-15s %-8s %-14s %-14s\n' "$h" "$SUBNET.$((i + 1))" "${st:-?}" "$up_rate" \
      "$down_rate"
  done
  echo "hostfile: $STATE_DIR/hostfile   agent: $STATE_DIR/rsh-agent.sh"
}

cmd_down() {
  local prefix=""
  while (($#)); do
    case $1 in
      --prefix) prefix=${2:?--prefix needs a value}; shift 2 ;;
      *) usage_error "down: unknown argument $1" ;;
    esac
  done
  need_root_and_ip
  if [[ -r $STATE_FILE ]]; then
    # shellcheck disable=SC1090
    source "$STATE_FILE"
    [[ -z $prefix || $prefix == "$PREFIX" ]] ||
      die "down: --prefix $prefix but $STATE_DIR records prefix $PREFIX"
    remove_cluster "$PREFIX" "$N"
    rm -rf "$STATE_DIR"
  elif [[ -n $prefix ]]; then
    # No state (lost or never written): remove <prefix><digits> and <prefix>br.
    local names
    names=$(ip netns list | awk '{print $1}' | grep -E "^${prefix}([0-9]+|br)$" || true)
    local ns count=0
    for ns in $names; do ip netns del "$ns" && count=$((count + 1)); done
    echo "netns_cluster: removed $count namespace(s) of prefix '$prefix'"
  else
    echo "netns_cluster: nothing recorded in $STATE_DIR; nothing to remove"
  fi
}

cmd=${1:-}
[[ -n $cmd ]] || { usage >&2; exit 2; }
shift
case $cmd in
  up) cmd_up "$@" ;;
  run) cmd_run "$@" ;;
  exec) cmd_exec "$@" ;;
  status) cmd_status "$@" ;;
  down) cmd_down "$@" ;;
  -h|--help|help) usage ;;
  *) usage_error "unknown command '$cmd'" ;;
esac
