"""IMDB reviews (bundled offline copy or the Hub), the deduplicated fixed split, GPT-2 BPE, token arrays
and their cache, length-bucketed batches. Uses only nanogpt.core."""
