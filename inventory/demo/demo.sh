#!/usr/bin/env bash
# `make demo`: a simulated kubeadm cluster (kubesim), the real playbook against it, the recap.
#
# Usage: inventory/demo/demo.sh <kubesim binary> <ansible-playbook> [keep]
# Runs from the repository root. Everything it writes goes to .demo/ (removed at the start).
set -euo pipefail

kubesim=$1
playbook=$2
keep=${3:-}
demo=.demo
rm -rf "$demo"
mkdir -p "$demo"

"$kubesim" --scenario inventory/demo/cluster.yaml --kubeconfig "$demo/kubeconfig" \
  --write-manifests "$demo/manifests" >"$demo/kubesim.log" 2>&1 &
sim=$!
stop() {
  if [ -z "$keep" ]; then
    kill "$sim" 2>/dev/null || true
    wait "$sim" 2>/dev/null || true
  fi
}
trap stop EXIT

# kubesim prints its URL once the cluster is up and Calico is rolled out.
for _ in $(seq 1 600); do
  if grep -q '^kubesim: ready' "$demo/kubesim.log" 2>/dev/null; then break; fi
  if ! kill -0 "$sim" 2>/dev/null; then
    echo "kubesim stopped:" >&2
    cat "$demo/kubesim.log" >&2
    exit 1
  fi
  sleep 0.2
done
grep -q '^kubesim: ready' "$demo/kubesim.log" || { echo "kubesim did not become ready" >&2; cat "$demo/kubesim.log" >&2; exit 1; }

echo "== The simulated cluster (kubectl --kubeconfig $demo/kubeconfig get nodes,ds -A)"
if command -v kubectl >/dev/null; then
  kubectl --kubeconfig "$demo/kubeconfig" get nodes
  kubectl --kubeconfig "$demo/kubeconfig" -n kube-system get ds calico-node -o wide
fi

echo
echo "== ansible-playbook -i inventory/demo/hosts playbooks/upgrade.yml --tags calico"
ANSIBLE_CONFIG=$PWD/ansible.cfg "$playbook" -i inventory/demo/hosts playbooks/upgrade.yml --tags calico \
  -e k8s_calico_kubeconfig="$PWD/$demo/kubeconfig" \
  -e k8s_calico_manifest_dir="$PWD/$demo/manifests" \
  -e k8s_calico_backup_dir="$PWD/$demo/backups" \
  -e k8s_calico_nettest_timeout=120

echo
echo "== After the upgrade"
if command -v kubectl >/dev/null; then
  kubectl --kubeconfig "$demo/kubeconfig" -n kube-system get ds calico-node -o wide
fi
backup=$(ls -d "$demo"/backups/*/ 2>/dev/null | head -1)
echo "Backup: ${backup:-none}"
echo
echo "Against a real cluster: copy inventory/hosts and inventory/group_vars/all.yml, then"
echo "  ansible-playbook -i inventory/hosts playbooks/upgrade.yml --tags calico"
if [ -n "$keep" ]; then
  echo "kubesim keeps running (pid $sim): kubectl --kubeconfig $demo/kubeconfig get pods -A; kill $sim to stop it."
fi
