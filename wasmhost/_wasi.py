"""WASI preview1, under both wasi_snapshot_preview1 and wasi_unstable."""
