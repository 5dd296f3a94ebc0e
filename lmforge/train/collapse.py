"""Says when a run is learning nothing, instead of finishing quietly: the training loss sits at
the loss of a prediction that ignores the input (the label frequencies of a classifier — ln 2
for a balanced binary task — or the token frequencies of a language model), or it has not gone
down at all since the first log. Both are what too high a learning rate looks like (a fine-tune
at --lr 1e-3 whose loss sat at ln 2 = 0.693 from step 20 on), hence the suggested fix. Some
healthy runs sit there for a while first (a replaced-token-detection discriminator for its first
few hundred steps), so the warning says "so far", and a run that then leaves that level is told
so in a note, once.
"""

from __future__ import annotations

from collections import deque

MIN_STEPS_TO_JUDGE = 100    # a healthy run starts above the constant prediction's loss: judge it only later
WINDOW = 5              # logged losses averaged
AT_CONSTANT = 0.97      # within 3% of the constant prediction's loss: collapsed
NOT_MOVED = 0.99        # still above 99% of the first logged loss: stuck


class LossWatch:
    """Fed each logged training loss; `update` returns a warning the first time the run looks
    collapsed or stuck, a note the first time it then leaves that state (None otherwise);
    `verdict()` says whether it still looks so at the end."""

    def __init__(self, constant_loss: float | None, check_from: int):
        self.constant, self.check_from = constant_loss, check_from
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self.first: tuple[int, float] | None = None
        self.warned_at: int | None = None
        self.recovered = False
        self.state: str | None = None

    def _diagnose(self, step: int) -> str | None:
        if step < self.check_from or len(self.recent) < WINDOW or self.first is None:
            return None
        mean = sum(self.recent) / len(self.recent)
        if self.constant is not None and mean >= AT_CONSTANT * self.constant:
            return (f"the training loss is {mean:.4f}, no better than ignoring the input and predicting the "
                    f"training frequencies ({self.constant:.4f}): the run looks collapsed and has learned nothing so "
                    f"far. If it stays there, the likely fix is a lower learning rate (e.g. --lr divided by 3 to 10)")
        first_step, first = self.first
        if mean >= NOT_MOVED * first:
            return (f"the training loss has not gone down since step {first_step} ({first:.4f} then, {mean:.4f} "
                    f"now): the run has learned nothing so far. If it stays there, the likely fix is a lower learning "
                    f"rate (e.g. --lr divided by 3 to 10), or check that the data holds something to learn")
        return None

    def update(self, step: int, loss: float) -> str | None:
        if self.first is None:
            self.first = (step, loss)
        self.recent.append(loss)
        self.state = self._diagnose(step)
        if self.state and self.warned_at is None:
            self.warned_at = step
            return f"warning at step {step}: {self.state}"
        if self.warned_at is not None and not self.state and not self.recovered:
            self.recovered = True
            return (f"note at step {step}: the training loss ({sum(self.recent) / WINDOW:.4f}) has moved since the "
                    f"warning at step {self.warned_at}: the run is learning after all")
        return None

    def verdict(self) -> str | None:
        """The diagnosis of the last logs (None: the run is learning)."""
        return self.state
