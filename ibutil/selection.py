"""Validation selection: the best-val-loss tracker with patience, and the learning-rate grid of a sweep."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

from ibutil.errors import UserError

LR_RATIO = 3.0  # neighbouring learning rates of a sweep differ by this factor
# The selection rule's defaults, shared by every learned method's config so all are selected alike.
EVAL_EVERY = 250  # steps between validation evaluations (and one at the last step)
PATIENCE = 10  # evaluations in a row without a new best before stopping early (0: never)
MIN_DELTA = 0.0  # a new best must be lower than the old by more than this


@dataclass
class Selection:
    """The state of validation selection; the trainers checkpoint it so a resumed run selects the same step.

    An evaluation improves on the best when its loss is finite and below best_loss - min_delta; ties
    and non-finite losses keep the earlier step. After `patience` evaluations in a row without
    improvement, should_stop turns true (patience 0: never stop early).
    """

    patience: int = PATIENCE
    min_delta: float = MIN_DELTA
    best_loss: float = math.inf
    best_step: int | None = None  # None until the first finite evaluation
    evals_since_best: int = 0
    evaluations: int = 0

    def __post_init__(self):
        if not isinstance(self.patience, int) or isinstance(self.patience, bool) or self.patience < 0:
            raise UserError(f"patience must be an integer >= 0 (evaluations; 0 = never stop early), got {self.patience!r}")
        if not isinstance(self.min_delta, (int, float)) or isinstance(self.min_delta, bool) \
                or not math.isfinite(self.min_delta) or self.min_delta < 0:
            raise UserError(f"min_delta must be a finite number >= 0, got {self.min_delta!r}")

    def update(self, step: int, loss: float) -> bool:
        """Record the validation loss at `step`; True if it is the new best (then save that state)."""
        self.evaluations += 1
        if math.isfinite(loss) and loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_step, self.evals_since_best = float(loss), int(step), 0
            return True
        self.evals_since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.evals_since_best >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> Selection:
        return cls(**state)


def lr_grid(default_lr: float, trials: int, ratio: float = LR_RATIO) -> tuple[float, ...]:
    """`trials` learning rates on a log grid around a method's default, ascending, the default always included.

    The grid is default * ratio**k for k = -(trials // 2) .. trials - trials // 2 - 1, so every method
    gets the same relative grid: 1 trial -> (1,), 2 -> (1/3, 1), 3 -> (1/3, 1, 3), 4 -> (1/9, 1/3, 1, 3).
    """
    if not isinstance(default_lr, (int, float)) or isinstance(default_lr, bool) or not math.isfinite(default_lr) \
            or default_lr <= 0:
        raise UserError(f"the default lr must be a positive number, got {default_lr!r}")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise UserError(f"lr trials must be a positive integer, got {trials!r}")
    if not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio <= 1:
        raise UserError(f"the lr grid ratio must be a number > 1, got {ratio!r}")
    low = -(trials // 2)
    return tuple(float(default_lr) * float(ratio) ** k for k in range(low, low + trials))


def select_trial(val_losses: Sequence[float]) -> int:
    """Index of the trial with the lowest finite best-val loss; the first of equals (the lower lr on lr_grid's
    ascending order). UserError if no trial has a finite loss (every lr diverged)."""
    finite = [(loss, i) for i, loss in enumerate(val_losses) if loss is not None and math.isfinite(loss)]
    if not finite:
        raise UserError(f"no trial reached a finite validation loss ({list(val_losses)}); try smaller learning rates")
    return min(finite)[1]
