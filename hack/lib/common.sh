# Shared by the scripts in hack/: where things live, and the addresses and
# ports of one local cluster. Sourced, never run.
#
# Several clusters can run side by side (the tests bring up a second one to
# check that `down` leaves nothing behind): APIWITNESS_CLUSTER_INDEX (0-9)
# picks a disjoint set of ports, subnets, interface and chain names.

APIWITNESS_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
APIWITNESS_CACHE=${APIWITNESS_CACHE:-$APIWITNESS_REPO/.cache}

cluster_index=${APIWITNESS_CLUSTER_INDEX:-0}
case "$cluster_index" in
  [0-9]) ;;
  *) echo "APIWITNESS_CLUSTER_INDEX must be a single digit, got '$cluster_index'" >&2; exit 2 ;;
esac

# The "node": a bridge on this machine, whose address is the apiserver's
# endpoint, as a node IP is on a real cluster. Pods hang off it by veth.
node_bridge="aw${cluster_index}br"
node_name="apiwitness-node-${cluster_index}"
node_subnet_prefix="10.250.${cluster_index}"
node_ip="${node_subnet_prefix}.1"
# Service ClusterIPs. Traffic to them never leaves the machine: the range is
# routed into the bridge, and each Service that is served has a DNAT rule.
service_cidr="10.96.$((cluster_index * 16)).0/20"
kubernetes_service_ip="10.96.$((cluster_index * 16)).1"
cluster_domain="cluster.local"

etcd_client_port=$((2379 + 100 * cluster_index))
etcd_peer_port=$((2380 + 100 * cluster_index))
apiserver_port=$((6443 + cluster_index))
controller_manager_port=$((10257 + cluster_index))

# Always the index's own: APIWITNESS_CLUSTER_DIR is what `cluster env` prints,
# never read. A shell that evaluated cluster 0's env once ran the tests,
# whose second cluster then took cluster 0's directory and stopped it.
state_dir="$APIWITNESS_CACHE/cluster/$cluster_index"
pki_dir="$state_dir/pki"
log_dir="$state_dir/logs"
run_dir="$state_dir/run"          # pid files
tmpfs_dir="$state_dir/tmpfs"      # etcd data and pod secrets: memory only
pods_dir="$tmpfs_dir/pods"
admin_kubeconfig="$state_dir/admin.kubeconfig"
nat_chain="AW${cluster_index}-SERVICES"
rule_comment="apiwitness-cluster-${cluster_index}"
netns_prefix="aw${cluster_index}-"

die() { echo "$(basename "$0"): $*" >&2; exit "${EXIT_CODE:-1}"; }

require_tools() {
  local missing=()
  for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
  if [ ${#missing[@]} -gt 0 ]; then
    EXIT_CODE=127 die "missing tool(s): ${missing[*]} (run hack/setup.sh, which installs everything the project needs)"
  fi
}

require_root() {
  [ "$(id -u)" = 0 ] || die "must run as root: it creates network interfaces, namespaces, mounts and iptables rules"
}

# The directory of the control-plane binaries: APIWITNESS_BIN_DIR, or the
# version-keyed cache that hack/tools/build.sh fills (building on a miss).
control_plane_bin_dir() {
  if [ -n "${APIWITNESS_BIN_DIR:-}" ]; then
    echo "$APIWITNESS_BIN_DIR"
  else
    "$APIWITNESS_REPO/hack/tools/build.sh"
  fi
}

kubectl_admin() { "$bin_dir/kubectl" --kubeconfig "$admin_kubeconfig" "$@"; }
