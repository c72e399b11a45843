"""Small method-independent utilities shared by the trainers: selection, compute accounting, preemption."""
