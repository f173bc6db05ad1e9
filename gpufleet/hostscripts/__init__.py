"""Scripts that run on the cluster's hosts, shipped as ``python -c`` source.

Hosts do not have gpufleet installed, so each module here is a single file
that imports only the standard library (a test checks that): the launcher's
agent (start, supervise, status, stop), the preflight host checks and the
hardware probe.
"""
