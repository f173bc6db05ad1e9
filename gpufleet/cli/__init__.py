"""The ``gpufleet`` command. One module per group of subcommands."""
