"""The team's environment: what the image installs, the lock that pins it, the manifest that proves it.

packages (what is declared) -> resolve (``gpufleet lock``, inside the base) ->
lockfile (``Pulumi.<stack>.lock``) -> render (the image's build context) ->
the image's manifest (/etc/gpufleet/environment.json) -> preflight and train
compare every host's live environment with it.
"""
