"""Methods run outside this repository: export-triplets writes their inputs, score-predictions scores their outputs."""
