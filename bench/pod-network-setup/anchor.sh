#!/usr/bin/env bash
# The anchor: the same per-pod steps with iproute2 commands, as a shell CNI
# plugin would do them. Runs inside the private namespaces `run` creates.
set -euo pipefail
N=$1
TAG=$2
ip link set lo up
echo 1 > /proc/sys/net/ipv4/ip_forward
ip route add unreachable 10.96.0.0/12
cleanup() {
  for i in $(seq 0 $((N - 1))); do ip netns del "$TAG-$i" 2>/dev/null || true; done
}
trap cleanup EXIT
start=$(date +%s%N)
for i in $(seq 0 $((N - 1))); do
  ns=$TAG-$i
  ip4=10.244.$((2 + i / 250)).$((2 + i % 250))
  veth=an$i
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip addr add 10.244.0.1/32 dev "$veth"
  ip link set "$veth" up
  ip route add "$ip4/32" dev "$veth" scope link
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$ip4/32" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add 10.244.0.1/32 dev eth0 scope link
  ip -n "$ns" route add default via 10.244.0.1 dev eth0
done
end=$(date +%s%N)
echo "setup_ms_per_pod=$(python3 -c "print('%.3f' % (($end - $start) / 1e6 / $N))")"
