"""nnU-Net v2 runner internals, model cards and checksums."""
