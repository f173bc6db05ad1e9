#!/bin/sh
# Rendered by gpufleet from the cluster spec 'chatbot-ib'.
# Container entrypoint: sshd in the foreground; JupyterLab on 127.0.0.1 only. Do not edit: change the stack file and render again.
set -eu

# Config files arrive in /etc/gpufleet/mounted (bind-mounted or uploaded, owned by
# whoever copied them, with that umask's modes); sshd refuses keys and
# authorized_keys that others can read or write, so each is installed where
# sshd_config names it, owned by root, with its fixed mode.
install_config() {  # role, path, mode
    if [ ! -f "/etc/gpufleet/mounted/$1" ]; then
        echo "gpufleet: no $1 in /etc/gpufleet/mounted: put it next to docker-compose.yml (see the README)" >&2
        exit 1
    fi
    install -D -o root -g root -m "$3" "/etc/gpufleet/mounted/$1" "$2"
}
install_config sshd_config /etc/gpufleet/ssh/sshd_config 0644
install_config authorized_keys /etc/gpufleet/ssh/authorized_keys 0644
install_config ssh_host_ed25519_key /etc/gpufleet/ssh/ssh_host_ed25519_key 0600

# A plain `ssh host CMD` reads no profile: hand every session the image's PATH
# and the host's NCCL environment (sshd SetEnv; the first SetEnv read wins).
quoted() { printf '"%s=%s"' "$1" "$(printenv "$1" | sed 's/[\\"]/\\&/g')"; }
session_env="$(quoted PATH)"
if [ -n "${LD_LIBRARY_PATH:-}" ]; then
    session_env="$session_env $(quoted LD_LIBRARY_PATH)"
fi
for name in $(env | grep -E '^(NCCL_|GLOO_|UCX_|FI_|RDMAV_|CUDA_|NVIDIA_|TORCH_)[A-Za-z0-9_]*=' | cut -d= -f1 | sort); do
    session_env="$session_env $(quoted "$name")"
done

# The cluster's host names, from the mounted peers file, in a marked block of /etc/hosts
# (written in place: Docker bind-mounts /etc/hosts); again whenever the file changes, so a
# host added to the cluster resolves here without restarting the container.
sync_peers() {
    [ -r /etc/gpufleet/peers/hosts ] || return 0
    {
        sed '/^# gpufleet peers begin$/,/^# gpufleet peers end$/d' /etc/hosts
        echo '# gpufleet peers begin'
        cat /etc/gpufleet/peers/hosts
        echo '# gpufleet peers end'
    } > /run/gpufleet-hosts
    cmp -s /run/gpufleet-hosts /etc/hosts || cat /run/gpufleet-hosts > /etc/hosts
}
sync_peers
( while sleep 5; do sync_peers || true; done ) &

if [ -n "${GPUFLEET_JUPYTER_PORT:-}" ]; then
    # Loopback only, never in the firewall: gpufleet jupyter HOST opens the tunnel,
    # or  ssh -p 2222 -L 8888:127.0.0.1:$GPUFLEET_JUPYTER_PORT trainer@HOST
    runuser -u trainer -- env HOME=/home/trainer jupyter lab --no-browser --ip=127.0.0.1 \
        --port="$GPUFLEET_JUPYTER_PORT" --ServerApp.root_dir=/workspace \
        --ServerApp.allow_remote_access=False &
fi
exec /usr/sbin/sshd -D -e -f /etc/gpufleet/ssh/sshd_config -o "SetEnv=$session_env"
