"""The bottom of the package: atomic files and locks, device and precision, the GPT classifier and its
attention kernels, the two training criteria, the metrics. Imports nothing else of nanogpt."""
