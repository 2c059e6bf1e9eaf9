#!/usr/bin/env bash
# Install kubelite on this machine and start a single-node cluster on the embedded SQLite datastore.
#   ./install.sh              install, then start `kubelite server` in the background
#   ./install.sh --no-start   install only (what CI does before running the tests)
set -euo pipefail
cd "$(dirname "$0")"
start=1
[ "${1:-}" = "--no-start" ] && start=0

if [ "$(id -u)" != 0 ]; then
  echo "install.sh must run as root (it installs packages and runs containers later): sudo ./install.sh" >&2
  exit 1
fi

# What the node agent and the tests run: the OCI runtime, packet filter, a local registry, busybox for test images,
# and containerd with the CNI plugins (the optional CRI runtime, `--container-runtime-endpoint`).
packages="runc nftables iproute2 openssl docker-registry busybox-static etcd-server kmod containerd
          containernetworking-plugins"
missing=$(for p in $packages; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "installing Debian packages:" $missing
  apt-get update -qq
  # No package may start its service while installing (policy-rc.d, which deb-systemd-invoke honours): the tests
  # start registries and containerd of their own, and a user picks a CRI runtime with a flag.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    own_policy=1
    trap 'rm -f "$policy"' EXIT
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  if [ "$own_policy" = 1 ]; then
    rm -f "$policy"
    trap - EXIT
  fi
  # Nor start at boot: only the services of packages installed just now are disabled, never a user's own.
  for service in docker-registry containerd; do
    case " $(echo $missing) " in
      *" $service "*) command -v systemctl >/dev/null && systemctl disable --now "$service" 2>/dev/null || true ;;
    esac
  done
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; assert sys.version_info >= (3, 11), "kubelite needs Python 3.11 or newer"'
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  echo "installing python3-venv"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
ln -sf "$PWD/.venv/bin/kubelite" /usr/local/bin/kubelite
echo "installed: $(kubelite --version)"

if [ "$start" = 1 ]; then
  mkdir -p /var/log
  nohup "$PWD/.venv/bin/kubelite" server >/var/log/kubelite.log 2>&1 &
  echo "starting kubelite server (pid $!, log /var/log/kubelite.log)"
  for _ in $(seq 1 60); do
    if [ -f /etc/kubelite/kubelite.yaml ] && \
       kubectl --kubeconfig /etc/kubelite/kubelite.yaml wait --for=condition=Ready nodes --all --timeout=1s \
         >/dev/null 2>&1; then
      echo "cluster ready: export KUBECONFIG=/etc/kubelite/kubelite.yaml; kubectl get nodes"
      exit 0
    fi
    sleep 1
  done
  echo "kubelite did not become ready in 60 s; see /var/log/kubelite.log" >&2
  exit 1
fi
