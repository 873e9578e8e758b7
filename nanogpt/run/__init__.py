"""One training run: TrainConfig and the named profiles, the loop, pre-training, backbones, checkpoints,
run folders, the results index (runs.csv) and the validation pass. Uses nanogpt.core and nanogpt.data.imdb."""
