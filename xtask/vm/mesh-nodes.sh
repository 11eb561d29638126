#!/bin/busybox sh
# PID 1 of the two-node routing-mesh guest: two Debian Docker engines, each in a network
# namespace of its own (node-a, node-b) wired by a bridge, joined into one swarm; a service
# whose one task runs on node-b publishes a UDP port through the routing mesh; a client outside
# asks node-a's port. One dockflow per node records; `dockflow merge` joins them, and its JSON
# goes between markers for the host to judge.
/bin/busybox --install -s /bin
. /dockflow.sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
IP=/usr/sbin/ip
engine_guest_setup
# New namespaces (ingress_sbox among them) take their forwarding switch from this one's, as
# they do on a host where Docker turned it on.
sysctl -w net.ipv4.ip_forward=1 >/dev/null
$IP netns add wire
$IP -n wire link add br0 type bridge
$IP -n wire link set br0 up
n=11
for node in a b; do
  $IP netns add node-$node
  $IP link add w$node type veth peer name eth0 netns node-$node
  $IP link set w$node netns wire
  $IP -n wire link set w$node master br0 up
  $IP -n node-$node addr add 10.231.77.$n/24 dev eth0
  $IP -n node-$node link set eth0 up
  $IP -n node-$node link set lo up
  # nsenter, not `ip netns exec`: that remounts /sys, and the engine needs the cgroup mount.
  nsenter --net=/run/netns/node-$node containerd --root /var/lib/docker/c-$node \
    --state /run/c-$node --address /run/c-$node/containerd.sock > /tmp/containerd-$node.log 2>&1 &
  # The root file system is the initramfs: runc cannot pivot_root out of it.
  nsenter --net=/run/netns/node-$node env DOCKER_RAMDISK=true dockerd --storage-driver vfs \
    --data-root /var/lib/docker/$node --exec-root /run/d-$node --pidfile /run/d-$node.pid \
    -H unix:///run/d-$node.sock --containerd /run/c-$node/containerd.sock > /tmp/dockerd-$node.log 2>&1 &
  n=$((n+1))
done
# The outside client, wired to node-a.
$IP netns add ext
$IP link add dfext0 type veth peer name dfext1 netns ext
$IP link set dfext0 netns node-a
$IP -n node-a addr add 10.199.0.1/24 dev dfext0
$IP -n node-a link set dfext0 up
$IP -n ext addr add 10.199.0.2/24 dev dfext1
$IP -n ext link set dfext1 up
$IP -n ext link set lo up
$IP -n ext route add default via 10.199.0.1
da() { docker -H unix:///run/d-a.sock "$@"; }
db() { docker -H unix:///run/d-b.sock "$@"; }
i=0
while ! { da info >/dev/null 2>&1 && db info >/dev/null 2>&1; } && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done
echo "VMTEST engines up after ${i}s"
for d in da db; do tar -C / -c dockflow-lab | $d import - dockflow-lab:vm > /dev/null || echo "VMTEST import failed"; done
da swarm init --advertise-addr 10.231.77.11 > /dev/null || echo "VMTEST swarm init failed"
db swarm join --token "$(da swarm join-token -q worker)" 10.231.77.11:2377 > /dev/null || echo "VMTEST join failed"
da service create --detach --name heron --constraint "node.id==$(db info --format '{{.Swarm.NodeID}}')" \
  --publish published=7400,target=7400,protocol=udp \
  dockflow-lab:vm /dockflow-lab serve udp-echo --port 7400 > /dev/null 2>&1 || echo "VMTEST service failed"
i=0
while [ -z "$(db ps -q 2>/dev/null)" ] && [ $i -lt 90 ]; do sleep 1; i=$((i+1)); done
echo "VMTEST task on node-b after ${i}s"
for node in a b; do
  nsenter --net=/run/netns/node-$node env DOCKER_HOST=unix:///run/d-$node.sock \
    /dockflow --service heron --node node-$node --quiet --record /tmp/$node.dfl > /dev/null 2> /tmp/$node.err &
done
i=0
while ! { grep -q streaming /tmp/a.err && grep -q streaming /tmp/b.err; } && [ $i -lt 90 ]; do sleep 1; i=$((i+1)); done
echo "VMTEST dockflows ready after ${i}s"
# The mesh may be ready a moment after the task: ask until answered.
i=0
until answer=$($IP netns exec ext /dockflow-lab client udp 10.199.0.1:7400 2>&1) || [ $i -ge 8 ]; do
  sleep 2; i=$((i+1))
done
echo "VMTEST client-mesh-across-nodes $answer"
sleep 2
killall -INT dockflow
i=0
while pidof dockflow > /dev/null && [ $i -lt 30 ]; do sleep 1; i=$((i+1)); done
echo VMTEST-BEGIN-STDERR
cat /tmp/a.err
echo VMTEST-END-STDERR
echo VMTEST-BEGIN-JSON
/dockflow merge /tmp/a.dfl /tmp/b.dfl --json 2> /tmp/merge.err
echo VMTEST-END-JSON
echo "VMTEST merge: $(tr "\n" " " < /tmp/merge.err)"
echo VMTEST-DONE
poweroff -f
