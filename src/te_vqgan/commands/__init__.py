"""Sub-commands of the `te-vqgan` console command (see `te_vqgan.cli`)."""
