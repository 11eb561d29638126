# Sourced by each guest's /init: its outside client's namespace; dockflow started in the
# background and, at the end, stopped, with what it printed between the markers the host reads.

# engine_guest_setup: what a Docker engine needs of the guest (file systems, cgroups, a
# tmpfs for its data, since runc cannot work on the initramfs itself), the modules loaded.
engine_guest_setup() {
  mount -t proc proc /proc
  mount -t sysfs sys /sys
  mount -t devtmpfs dev /dev
  mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
  mount -t cgroup2 cgroup2 /sys/fs/cgroup
  mount -t tracefs tracefs /sys/kernel/tracing
  mount -t bpf bpf /sys/fs/bpf
  mkdir -p /var/lib/docker /run /tmp && mount -t tmpfs tmpfs /var/lib/docker && mount -t tmpfs tmpfs /run
  mkdir -p /run/netns
  for m in $(cat /modules/order); do insmod /modules/$m || echo "VMTEST insmod $m failed"; done
  echo "VMTEST kernel $(uname -r)"
  /usr/sbin/ip link set lo up
}

# outside_namespace: a client's namespace "ext" (10.199.0.2), routed through the guest's
# dfext0 (10.199.0.1), with forwarding on.
outside_namespace() {
  ip=/usr/sbin/ip
  $ip netns add ext
  $ip link add dfext0 type veth peer name dfext1 netns ext
  $ip addr add 10.199.0.1/24 dev dfext0
  $ip link set dfext0 up
  $ip -n ext addr add 10.199.0.2/24 dev dfext1
  $ip -n ext link set dfext1 up
  $ip -n ext link set lo up
  $ip -n ext route add default via 10.199.0.1
  sysctl -w net.ipv4.ip_forward=1 >/dev/null
}

# start_dockflow ARGS...: runs /dockflow --json ARGS and waits until it streams.
start_dockflow() {
  /dockflow --json "$@" > /tmp/out.json 2> /tmp/err.txt &
  DF=$!
  i=0
  while ! grep -q streaming /tmp/err.txt && kill -0 $DF 2>/dev/null && [ $i -lt 120 ]; do
    sleep 1; i=$((i+1))
  done
  echo "VMTEST dockflow ready after ${i}s"
}

# finish_dockflow: stops it (SIGINT, as a user would), prints its output, powers off.
finish_dockflow() {
  sleep 2
  kill -INT $DF
  wait $DF
  echo "VMTEST dockflow exit $?"
  echo VMTEST-BEGIN-STDERR
  cat /tmp/err.txt
  echo VMTEST-END-STDERR
  echo VMTEST-BEGIN-JSON
  cat /tmp/out.json
  echo VMTEST-END-JSON
  echo VMTEST-DONE
  poweroff -f
}
