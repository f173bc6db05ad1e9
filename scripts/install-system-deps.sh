#!/usr/bin/env bash
# Installs the system tools gpufleet's tests and local cluster use, non-interactively.
# Idempotent: does nothing when everything is already there.
set -euo pipefail

packages=(
  python3.11 python3.11-venv   # the venv interpreter must be readable by the cluster's login user
  openssh-server openssh-client # real sshd per local host; sshd -t on rendered configs
  nftables                      # nft -c / nft -f on rendered firewalls
  iproute2                      # ip netns, veth, bridge
  docker-compose                # docker-compose config -q; deploys each local host's rendered compose file
  docker.io                     # a Docker daemon per local host runs the rendered training image
  debootstrap                   # the offline CPU stand-in base image (Debian from the apt mirror)
  nmap                          # the outsider's port scan in the firewall tests
  chromium chromium-driver      # a headless browser opens JupyterLab through `gpufleet jupyter`
  util-linux procps psmisc      # unshare, nsenter, pkill
  pdsh                          # the fan-out benchmark's baseline
  make
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${missing[*]}; install them as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
