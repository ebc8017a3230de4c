#!/usr/bin/env bash
# Simulated hosts for the namespaced-hosts test (tests/hosts.rs) and
# benchmark (benches/hosts.sh): a bridge in this machine's own namespace and
# four network namespaces joined to it by veth pairs, each a host with an
# address of its own and nothing but its loopback and its link to the bridge.
#
#   courier-br   10.77.0.1/24   this machine: PostgreSQL, RabbitMQ
#   courier-web  10.77.0.10     the web node
#   courier-h1   10.77.0.11     executor hosts
#   courier-h2   10.77.0.12
#   courier-h3   10.77.0.13
#
# PostgreSQL and RabbitMQ are made to listen on the bridge address too, and
# to let the hosts in: PostgreSQL trusts 10.77.0.0/24 (a line appended to
# pg_hba.conf, then a restart if `listen_addresses` lacks the bridge, which
# is added with ALTER SYSTEM), RabbitMQ gets a listener on the bridge at run
# time and a user `courier` (its `guest` may log in from the loopback only).
# The hosts reach them over the bridge alone: there is no other route out of
# a namespace.
#
# What `up` changes on this machine it records, the first time it changes
# it, under $COURIER_NET_STATE (default /var/tmp/courier-net: it outlives a
# reboot, as pg_hba.conf and ALTER SYSTEM do): the pg_hba.conf it appended
# to, the `listen_addresses` that postgresql.auto.conf held before (or that
# it held none), the RabbitMQ user it added, the listener it started. `down`
# undoes exactly what is recorded, restarts PostgreSQL only if the address
# it listens on must change back, and forgets each record once undone: it
# may run any number of times, and does nothing to the services when `up`
# never ran.
#
#   tests/hosts/net.sh up            # idempotent; needs root
#   tests/hosts/net.sh cut h1        # partition host h1 (its link goes down)
#   tests/hosts/net.sh heal h1
#   tests/hosts/net.sh down          # remove the namespaces and the bridge, and
#                                    # restore PostgreSQL and RabbitMQ; idempotent
set -euo pipefail
# Pipes below end in `grep PATTERN >/dev/null`, never `grep -q`: grep -q
# exits at its first match, the writer then dies of SIGPIPE, and pipefail
# turns that into a failure (CI once added an address twice that way).

BR=courier-br
BR_IP=10.77.0.1
HOSTS=(web h1 h2 h3)
declare -A IP=([web]=10.77.0.10 [h1]=10.77.0.11 [h2]=10.77.0.12 [h3]=10.77.0.13)
# The line `up` appends to pg_hba.conf, marked so that `down` removes it and
# nothing else.
HBA_LINE="host all all 10.77.0.0/24 trust # tests/hosts/net.sh"
STATE=${COURIER_NET_STATE:-/var/tmp/courier-net}

ns() { echo "courier-$1"; }
veth() { echo "cv-$1"; }

pg() { psql -h 127.0.0.1 -U postgres -X -q -tA "$@"; }
pg_ready() { pg_isready -h 127.0.0.1 -p 5432 -q; }
pg_cluster() { ls /etc/postgresql | head -n 1; }
pg_wait() {
  for _ in $(seq 1 120); do
    pg_isready -h "$1" -p 5432 -q && return 0
    sleep 0.5
  done
  echo "PostgreSQL does not answer on $1" >&2
  return 1
}

# Records of what `up` changed: one file each, written once (the first `up`
# that changes a thing knows how it stood before; a second `up` must not
# overwrite that with its own doing).
record() {
  mkdir -p "$STATE"
  [ -e "$STATE/$1" ] || printf '%s' "$2" >"$STATE/$1"
}
recorded() { [ -e "$STATE/$1" ]; }
forget() { rm -f "$STATE/$1"; rmdir "$STATE" 2>/dev/null || true; }

up_net() {
  ip link show "$BR" >/dev/null 2>&1 || ip link add "$BR" type bridge
  ip addr show dev "$BR" | grep "inet $BR_IP/" >/dev/null || ip addr add "$BR_IP/24" dev "$BR"
  ip link set "$BR" up
  for h in "${HOSTS[@]}"; do
    local n v
    n=$(ns "$h"); v=$(veth "$h")
    ip netns list | grep -w "^$n" >/dev/null || ip netns add "$n"
    if ! ip link show "$v" >/dev/null 2>&1; then
      ip link add "$v" type veth peer name eth0 netns "$n"
    fi
    ip link set "$v" master "$BR"
    ip link set "$v" up
    ip -n "$n" link set lo up
    ip -n "$n" addr show dev eth0 | grep "inet ${IP[$h]}/" >/dev/null || ip -n "$n" addr add "${IP[$h]}/24" dev eth0
    ip -n "$n" link set eth0 up
  done
}

up_postgres() {
  local hba listen before
  hba=$(pg -c 'SHOW hba_file')
  if ! grep -q '^host all all 10.77.0.0/24 trust' "$hba"; then
    # The hba file's path, and whether a newline had to end its last line
    # first (so that `down` gives back the file byte for byte).
    if [ -s "$hba" ] && [ -n "$(tail -c 1 "$hba")" ]; then
      record hba "$hba"$'\n'newline
      printf '\n' >>"$hba"
    else
      record hba "$hba"
    fi
    printf '%s\n' "$HBA_LINE" >>"$hba"
    pg -c 'SELECT pg_reload_conf()' >/dev/null
  fi
  listen=$(pg -c 'SHOW listen_addresses')
  if [[ "$listen" != *"$BR_IP"* && "$listen" != "*" ]]; then
    # What postgresql.auto.conf (ALTER SYSTEM's file) says now, if anything.
    before=$(pg -c "SELECT setting FROM pg_file_settings WHERE name = 'listen_addresses' AND sourcefile LIKE '%postgresql.auto.conf' ORDER BY seqno DESC LIMIT 1")
    if [ -n "$before" ]; then record listen_addresses "set $before"; else record listen_addresses unset; fi
    pg -c "ALTER SYSTEM SET listen_addresses = '$listen,$BR_IP'" >/dev/null
  fi
  # A server started while the bridge was missing did not bind its address
  # (PostgreSQL starts anyway, with a warning): a restart binds it.
  if ! ss -ltn "sport = :5432" | grep "$BR_IP:5432" >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(pg_cluster)" main restart
  fi
  pg_wait "$BR_IP"
}

up_rabbitmq() {
  if ! rabbitmqctl -q list_users 2>/dev/null | grep '^courier\b' >/dev/null; then
    record rabbitmq_user courier
    rabbitmqctl -q add_user courier courier >/dev/null 2>&1 || true
    rabbitmqctl -q set_permissions -p / courier '.*' '.*' '.*' >/dev/null
  fi
  # A listener on the bridge, started at run time so that the broker's
  # configuration (and its next start, with or without the bridge) is left
  # alone. A broker restarted since has lost it: `up` again brings it back.
  if ! ss -ltn "sport = :5672" | grep "$BR_IP:5672" >/dev/null; then
    record rabbitmq_listener "$BR_IP:5672"
    rabbitmqctl eval "rabbit_networking:start_tcp_listener({\"$BR_IP\", 5672}, 10)." >/dev/null
  fi
  ss -ltn "sport = :5672" | grep "$BR_IP:5672" >/dev/null
}

down_net() {
  for h in "${HOSTS[@]}"; do
    ip netns del "$(ns "$h")" 2>/dev/null || true
    ip link del "$(veth "$h")" 2>/dev/null || true
  done
  ip link del "$BR" 2>/dev/null || true
}

down_postgres() {
  local hba newline prev now want tmp
  if recorded hba; then
    hba=$(sed -n 1p "$STATE/hba")
    newline=$(sed -n 2p "$STATE/hba")
    if [ -f "$hba" ] && grep -qxF "$HBA_LINE" "$hba"; then
      tmp=$(mktemp)
      grep -vxF "$HBA_LINE" "$hba" >"$tmp" || true
      # The newline `up` put after a last line that had none.
      if [ "$newline" = newline ] && [ -s "$tmp" ] && [ -z "$(tail -c 1 "$tmp")" ]; then
        truncate -s -1 "$tmp"
      fi
      # Written back in place (not replaced), so the file keeps its owner
      # and mode.
      cat "$tmp" >"$hba"
      rm -f "$tmp"
      if pg_ready; then pg -c 'SELECT pg_reload_conf()' >/dev/null; fi
    fi
    forget hba
  fi
  if recorded listen_addresses; then
    if ! pg_ready; then
      echo "net.sh down: PostgreSQL does not answer on 127.0.0.1, so listen_addresses is not restored; run down again once it does" >&2
      return 1
    fi
    prev=$(cat "$STATE/listen_addresses")
    case "$prev" in
      unset) pg -c 'ALTER SYSTEM RESET listen_addresses' >/dev/null ;;
      set\ *) pg -c "ALTER SYSTEM SET listen_addresses = '${prev#set }'" >/dev/null ;;
    esac
    # The addresses the configuration files name now (pg_file_settings
    # reads them at each query; the last one set wins), against those the
    # running server listens on: they change at a restart only.
    want=$(pg -c "SELECT setting FROM pg_file_settings WHERE name = 'listen_addresses' ORDER BY seqno DESC LIMIT 1")
    now=$(pg -c 'SHOW listen_addresses')
    if [ "${want:-localhost}" != "$now" ]; then
      pg_ctlcluster --skip-systemctl-redirect "$(pg_cluster)" main restart
      pg_wait 127.0.0.1
    fi
    forget listen_addresses
  fi
}

down_rabbitmq() {
  if ss -ltn "sport = :5672" | grep "$BR_IP:5672" >/dev/null; then
    rabbitmqctl eval "rabbit_networking:stop_tcp_listener({\"$BR_IP\", 5672})." >/dev/null
  fi
  forget rabbitmq_listener
  if recorded rabbitmq_user; then
    if rabbitmqctl -q list_users 2>/dev/null | grep '^courier\b' >/dev/null; then
      rabbitmqctl -q delete_user courier >/dev/null
    fi
    forget rabbitmq_user
  fi
}

case "${1:-}" in
  up) up_net; up_postgres; up_rabbitmq ;;
  # The namespaces and the bridge go whatever else fails.
  down) trap down_net EXIT; down_rabbitmq; down_postgres ;;
  cut) ip link set "$(veth "$2")" down ;;
  heal) ip link set "$(veth "$2")" up ;;
  *) echo "usage: $0 up|down|cut HOST|heal HOST" >&2; exit 2 ;;
esac
