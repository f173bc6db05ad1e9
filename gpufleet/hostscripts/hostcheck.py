"""Preflight checks that need to act on the host (standard library only, shipped as ``python -c``).

``gpufleet.probe`` reports what a host HAS; this tries what a run will DO:
write to each NAS share, reach host 0's rendezvous port, run a matmul on
cuda:0. Two modes, each printing one JSON line:

- ``listen PORT SECONDS COUNT``: bind the rendezvous port on all addresses
  (as torch's c10d store does) and accept COUNT connections (at most SECONDS)
  in a detached child, so the other hosts have something to reach;
- ``check JSON``: the checks, configured by a JSON object
  ``{"nas": [{"mount": "/data", "read_only": true}], "gpus": 0,
  "rdzv": {"address": "10.0.0.11", "port": 29400} | null}``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

CONNECT_TIMEOUT_S = 3.0
_CUDA_CHECK = (
    "import json, torch\n"
    "out = {'device_count': torch.cuda.device_count() if torch.cuda.is_available() else 0}\n"
    "if out['device_count']:\n"
    "    a = torch.randn(256, 256, device='cuda:0')\n"
    "    out['matmul'] = float((a @ a).sum().item()) == float((a @ a).sum().item())\n"
    "print(json.dumps(out))\n"
)


def listen(port: int, seconds: float, expected: int) -> dict[str, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("", port))
        sock.listen(16)
    except OSError as error:
        return {"bound": False, "error": str(error)}
    child = os.fork()
    if child == 0:  # the child serves; the parent reports and returns
        os.setsid()
        # Let go of the SSH channel: the command ends when the parent exits.
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        sock.settimeout(0.2)
        deadline = time.monotonic() + seconds
        # Gone as soon as every host has connected: a run started next needs the port.
        while expected > 0 and time.monotonic() < deadline:
            try:
                conn, _ = sock.accept()
                conn.close()
                expected -= 1
            except OSError:
                continue
        os._exit(0)
    sock.close()
    return {"bound": True, "pid": child}


def check_nas(shares: list[dict[str, Any]]) -> dict[str, Any]:
    results = {}
    for share in shares:
        mount = share["mount"]
        result: dict[str, Any] = {"exists": os.path.isdir(mount)}
        if result["exists"]:
            try:
                os.listdir(mount)
                result["readable"] = True
            except OSError as error:
                result["readable"] = False
                result["error"] = str(error)
            if not share.get("read_only"):
                probe = os.path.join(mount, f".gpufleet-preflight-{socket.gethostname()}-{os.getpid()}")
                try:
                    with open(probe, "w") as handle:
                        handle.write("ok\n")
                    os.remove(probe)
                    result["writable"] = True
                except OSError as error:
                    result["writable"] = False
                    result["error"] = str(error)
        results[mount] = result
    return results


def check_rdzv(address: str, port: int) -> dict[str, Any]:
    started = time.monotonic()
    try:
        with socket.create_connection((address, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        kind = "timed out" if isinstance(error, (socket.timeout, TimeoutError)) else str(error)
        return {"ok": False, "error": kind}
    return {"ok": True, "ms": round((time.monotonic() - started) * 1000, 1)}


def check_cuda() -> dict[str, Any]:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CUDA_CHECK], capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return {"error": str(error)}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["torch failed"])[-1]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def check(config: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"nas": check_nas(config.get("nas", []))}
    rdzv = config.get("rdzv")
    if rdzv:
        out["rdzv"] = check_rdzv(rdzv["address"], int(rdzv["port"]))
    if int(config.get("gpus", 0)) > 0:
        out["cuda"] = check_cuda()
    return out


def main(args: list[str]) -> int:
    if args[0] == "listen":
        result = listen(int(args[1]), float(args[2]), int(args[3]))
    else:
        result = check(json.loads(args[1]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
