"""Many runs: designs x arms x seeds, Dask, the statistics and the analysis plans, prediction churn,
figures, the pre-training study, and the helpers the notebooks call. Uses every part below it."""
