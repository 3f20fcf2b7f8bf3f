#!/usr/bin/env bash
# A simulated two-node Ray cluster on this machine, for tests/test_ray_cluster.py: run as root inside
#   unshare --net --mount --pid --fork --mount-proc
# (loopback only; the cluster dies with this pid namespace). The head node sees the driver's files; the second
# node runs in a nested mount namespace with empty tmpfs mounts over DRIVER_DIR (data, cache, results) and
# $HOME/.cache, so tasks scheduled there cannot read them. Each task leaves a mark MARKS/<head|node2>-<pid>
# (MARKS lies outside DRIVER_DIR: both nodes see it); on node 2 it then waits 5 s, so that a run is caught while
# one of node 2's tasks is running.
#   two_nodes.sh DRIVER_DIR MARKS PORT SUITE SPLIT_SUITE
# Three runs of SUITE, then one of SPLIT_SUITE (a variant split into tasks), each with --executor ray --address
# (joining this cluster):
#   1. into DRIVER_DIR/interrupted: Ctrl-C (SIGINT) once its first record is written, then the same command
#      again, which computes what is missing;
#   2. into DRIVER_DIR/killed: node 2 killed (its pid namespace: every process in it) once one of its tasks runs;
#   3. SPLIT_SUITE into DRIVER_DIR/split, on a second node started again.
# Prints "nodes: 2", then "<run>: exit N" for each, "node 2 killed" and the nodes tasks ran on.
set -uo pipefail
driver_dir=$1 marks=$2 port=$3 suite=$4 split_suite=$5
export REPREVAL_TEST_TASK_MARKS=$marks RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1
# a lost node is noticed within seconds, not Ray's default half minute
export RAY_health_check_period_ms=500 RAY_health_check_failure_threshold=4 RAY_health_check_initial_delay_ms=0
bin=$(dirname "$(command -v repreval)")
ip link set lo up
REPREVAL_TEST_NODE=head "$bin/ray" start --head --node-ip-address 127.0.0.1 --port "$port" --num-cpus 1 \
  --include-dashboard false --disable-usage-stats --temp-dir /tmp/ray-head >/dev/null 2>&1 || exit 7
second_node() {  # started in the background; $node: unshare, whose death (--kill-child) kills the namespace
  unshare --mount --pid --fork --kill-child --mount-proc bash -c "
    mount -t tmpfs tmpfs '$driver_dir'
    mkdir -p \"\$HOME/.cache\" && mount -t tmpfs tmpfs \"\$HOME/.cache\"
    test ! -e '$suite' || exit 9  # node 2 must not see the driver's files
    export REPREVAL_TEST_NODE=node2 REPREVAL_TEST_TASK_DELAY=5
    exec '$bin/ray' start --address 127.0.0.1:$port --node-ip-address 127.0.0.1 --num-cpus 1 \
      --temp-dir /tmp/ray-node2 --disable-usage-stats --block
  " >/dev/null 2>&1 &
  node=$!
}
wait_for_nodes() {  # until the cluster has $1 live nodes (90 s at most)
  local alive=0
  for _ in $(seq 90); do
    alive=$("$bin/python" -c "import ray; ray.init(address='127.0.0.1:$port', log_to_driver=False); \
print(sum(n['Alive'] for n in ray.nodes()))" 2>/dev/null | tail -n1)
    [ "$alive" = "$1" ] && return 0
    sleep 1
  done
  return 1
}
second_node
wait_for_nodes 2 || { echo "the second node did not join"; exit 8; }
echo "nodes: 2"
run() { "$bin/repreval" run "$suite" --executor ray --address "127.0.0.1:$port" --out "$1"; }

set -m  # job control: a background job does not ignore SIGINT, as it would in a plain script
run "$driver_dir/interrupted" &
driver=$!
set +m
until compgen -G "$driver_dir/interrupted/records/*.json" >/dev/null || ! kill -0 $driver 2>/dev/null; do sleep 0.1; done
kill -INT -- -$driver  # as Ctrl-C does: SIGINT to the run's process group
wait $driver
echo "interrupted: exit $?"
ls "$driver_dir/interrupted/records" | wc -l | sed 's/^/records kept: /'
run "$driver_dir/interrupted"
echo "resumed: exit $?"

echo "tasks ran on: $(ls "$marks" | sed 's/-.*//' | sort -u | tr '\n' ' ')"
rm -f "$marks"/*
( until compgen -G "$marks/node2-*" >/dev/null; do sleep 0.1; done; kill -9 $node; echo "node 2 killed" ) &
run "$driver_dir/killed"
echo "killed: exit $?"
wait_for_nodes 1 && echo "nodes after the kill: 1"

second_node
wait_for_nodes 2 || { echo "the second node did not join again"; exit 8; }
rm -f "$marks"/*
"$bin/repreval" run "$split_suite" --executor ray --address "127.0.0.1:$port" --out "$driver_dir/split"
echo "split: exit $?"
echo "split tasks ran on: $(ls "$marks" | sed 's/-.*//' | sort -u | tr '\n' ' ')"
"$bin/ray" stop --force >/dev/null 2>&1
