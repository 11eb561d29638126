#!/bin/busybox sh
# PID 1 of the vmtest guest: build a Docker-shaped topology without Docker (a bridge with
# veth ports into "container" namespaces, an "external" namespace, nft DNAT/masquerade like
# Docker's), run dockflow on it, and print what it saw between markers for the host to judge.
/bin/busybox --install -s /bin
. /dockflow.sh
export PATH=/usr/sbin:/usr/bin:/bin
# busybox sh runs its own applets before anything on PATH: name the real tools by path.
IP=/usr/sbin/ip
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mkdir -p /run/netns /tmp
for m in $(cat /modules/order); do insmod /modules/$m || echo "VMTEST insmod $m failed"; done
echo "VMTEST kernel $(uname -r)"

$IP link add br0 type bridge
$IP addr add 10.0.0.1/24 dev br0
$IP link set br0 up
# Three "containers": a third port is what makes a flooded frame visible as a flood.
for ns in ctr ctr2 ctr3; do $IP netns add $ns; done
$IP link add vctr type veth peer name eth0 netns ctr
$IP link add vctr2 type veth peer name eth0 netns ctr2
$IP link add vctr3 type veth peer name eth0 netns ctr3
n=2
for ns in ctr ctr2 ctr3; do
  port=v$ns
  $IP link set $port master br0 up
  $IP -n $ns addr add 10.0.0.$n/24 dev eth0
  $IP -n $ns link set eth0 up
  $IP -n $ns link set lo up
  $IP -n $ns route add default via 10.0.0.1
  n=$((n+1))
done
outside_namespace
sysctl -w net.bridge.bridge-nf-call-iptables=1 >/dev/null
nft -f /rules.nft || echo "VMTEST nft rules failed"

$IP netns exec ctr /dockflow-lab serve radius --port 1812 > /tmp/radius.log 2>&1 &
# With a filter expression that keeps the exchanges: the verdict lookups load on this kernel too.
start_dockflow --netns ctr 'udp or arp or icmp or icmp6'
echo "VMTEST client-external $($IP netns exec ext /dockflow-lab client radius 10.199.0.1:1812 2>&1)"
echo "VMTEST client-bridged $($IP netns exec ctr2 /dockflow-lab client radius 10.0.0.2:1812 2>&1)"
# The bridge forgets every MAC; ctr2 still knows ctr's, so its next frame is flooded.
$IP link set br0 type bridge fdb_flush
echo "VMTEST client-flooded $($IP netns exec ctr2 /dockflow-lab client radius 10.0.0.2:1812 2>&1)"
finish_dockflow
