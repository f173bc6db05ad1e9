#!/bin/sh
# Rendered by gpufleet from the cluster spec 'chatbot-cloud'.
# Container entrypoint: sshd in the foreground; JupyterLab on 127.0.0.1 only. Do not edit: change the stack file and render again.
set -eu
if [ -n "${GPUFLEET_JUPYTER_PORT:-}" ]; then
    # Loopback only: reach it with  ssh -p 2222 -L 8888:127.0.0.1:$GPUFLEET_JUPYTER_PORT trainer@HOST
    runuser -u trainer -- jupyter lab --no-browser --ip=127.0.0.1 \
        --port="$GPUFLEET_JUPYTER_PORT" --ServerApp.allow_remote_access=False &
fi
exec /usr/sbin/sshd -D -e -f /etc/gpufleet/ssh/sshd_config
