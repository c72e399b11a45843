"""Project-neutral helpers shared by render/, inbetween/ and benchmarks/ (errors, atomic files, devices)."""
