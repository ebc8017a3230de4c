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
# to let the hosts in: PostgreSQL trusts 10.77.0.0/24 (pg_hba.conf, then a
# restart if `listen_addresses` lacks the bridge), RabbitMQ gets a listener
# on the bridge at run time and a user `courier` (its `guest` may log in from
# the loopback only). The hosts reach them over the bridge alone: there is no
# other route out of a namespace.
#
#   tests/hosts/net.sh up            # idempotent; needs root
#   tests/hosts/net.sh cut h1        # partition host h1 (its link goes down)
#   tests/hosts/net.sh heal h1
#   tests/hosts/net.sh down          # remove the namespaces and the bridge
set -euo pipefail
# Pipes below end in `grep PATTERN >/dev/null`, never `grep -q`: grep -q
# exits at its first match, the writer then dies of SIGPIPE, and pipefail
# turns that into a failure (CI once added an address twice that way).

BR=courier-br
BR_IP=10.77.0.1
HOSTS=(web h1 h2 h3)
declare -A IP=([web]=10.77.0.10 [h1]=10.77.0.11 [h2]=10.77.0.12 [h3]=10.77.0.13)

ns() { echo "courier-$1"; }
veth() { echo "cv-$1"; }

pg_ready() { pg_isready -h 127.0.0.1 -p 5432 -q; }

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
  local hba listen cluster
  cluster=$(ls /etc/postgresql | head -n 1)
  hba=$(psql -h 127.0.0.1 -U postgres -tAc 'SHOW hba_file')
  if ! grep -q '^host all all 10.77.0.0/24 trust' "$hba"; then
    echo 'host all all 10.77.0.0/24 trust' >>"$hba"
    psql -h 127.0.0.1 -U postgres -tAc 'SELECT pg_reload_conf()' >/dev/null
  fi
  listen=$(psql -h 127.0.0.1 -U postgres -tAc 'SHOW listen_addresses')
  if [[ "$listen" != *"$BR_IP"* && "$listen" != "*" ]]; then
    psql -h 127.0.0.1 -U postgres -tAc "ALTER SYSTEM SET listen_addresses = '$listen,$BR_IP'" >/dev/null
  fi
  # A server started while the bridge was missing did not bind its address
  # (PostgreSQL starts anyway, with a warning): a restart binds it.
  if ! ss -ltn "sport = :5432" | grep "$BR_IP:5432" >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$cluster" main restart
  fi
  for _ in $(seq 1 60); do
    pg_isready -h "$BR_IP" -p 5432 -q && return 0
    sleep 0.5
  done
  echo "PostgreSQL does not answer on $BR_IP" >&2
  return 1
}

up_rabbitmq() {
  if ! rabbitmqctl -q list_users 2>/dev/null | grep '^courier' >/dev/null; then
    rabbitmqctl -q add_user courier courier >/dev/null 2>&1 || true
    rabbitmqctl -q set_permissions -p / courier '.*' '.*' '.*' >/dev/null
  fi
  # A listener on the bridge, started at run time so that the broker's
  # configuration (and its next start, with or without the bridge) is left
  # alone. A broker restarted since has lost it: `up` again brings it back.
  if ! ss -ltn "sport = :5672" | grep "$BR_IP:5672" >/dev/null; then
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

case "${1:-}" in
  up) up_net; up_postgres; up_rabbitmq ;;
  down) down_net ;;
  cut) ip link set "$(veth "$2")" down ;;
  heal) ip link set "$(veth "$2")" up ;;
  *) echo "usage: $0 up|down|cut HOST|heal HOST" >&2; exit 2 ;;
esac
