"""Active learning with full finetuning: acquisition functions, the finetuning recipe,
the protocol's pure pieces, the loop, and sweeps of runs."""
