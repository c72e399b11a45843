"""Project-neutral helpers shared by render/, inbetween/ and benchmarks/: errors, atomic files, devices, CLI options, validation selection, compute accounting and preemption."""
