"""What users run: the main job (both modes, one report), a `git bisect run` step, the nightly
matrix and the benchmarks."""
