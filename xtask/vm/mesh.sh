#!/bin/busybox sh
# PID 1 of the routing-mesh guest: Debian's Docker engine (20.10) in a one-node swarm, on a
# kernel with IPVS, one service publishing a UDP port in ingress mode (the routing mesh); a
# client in an "outside" namespace asks the host's port while dockflow follows the service.
# dockflow's JSON goes between markers for the host to judge.
/bin/busybox --install -s /bin
. /dockflow.sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
IP=/usr/sbin/ip
engine_guest_setup
# The node's own address (what the swarm advertises), and an outside client.
$IP link add dfnode0 type dummy
$IP addr add 10.231.77.1/24 dev dfnode0
$IP link set dfnode0 up
outside_namespace
containerd > /tmp/containerd.log 2>&1 &
# The root file system is the initramfs: runc cannot pivot_root out of it.
DOCKER_RAMDISK=true dockerd --storage-driver vfs > /tmp/dockerd.log 2>&1 &
i=0
while ! docker info >/dev/null 2>&1 && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done
echo "VMTEST engine up after ${i}s: $(docker version --format '{{.Server.Version}}' 2>&1)"
tar -C / -c dockflow-lab | docker import - dockflow-lab:vm > /dev/null || echo "VMTEST import failed"
docker swarm init --advertise-addr 10.231.77.1 > /dev/null || echo "VMTEST swarm init failed"
docker service create --detach --name kestrel --publish published=7300,target=7300,protocol=udp \
  dockflow-lab:vm /dockflow-lab serve udp-echo --port 7300 > /dev/null || echo "VMTEST service failed"
i=0
while [ -z "$(docker ps -q)" ] && [ $i -lt 90 ]; do sleep 1; i=$((i+1)); done
echo "VMTEST task up after ${i}s"
start_dockflow --service kestrel
# The mesh's rules and IPVS service may come a moment after the task: ask until answered.
i=0
until answer=$($IP netns exec ext /dockflow-lab client udp 10.199.0.1:7300 2>&1) || [ $i -ge 5 ]; do
  sleep 2; i=$((i+1))
done
echo "VMTEST client-mesh $answer"
finish_dockflow
