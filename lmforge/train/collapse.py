"""Says when a run is learning nothing, instead of finishing quietly: the training loss sits at
the loss of a prediction that ignores the input (the label frequencies of a classifier — ln 2
for a balanced binary task — or the token frequencies of a language model), or it has not gone
down at all since the first log. Both are what too high a learning rate looks like (a fine-tune
at --lr 1e-3 whose loss sat at ln 2 = 0.693 from step 20 on), hence the suggested fix.
"""

from __future__ import annotations

from collections import deque

MIN_STEPS_TO_JUDGE = 100    # a healthy run starts above the constant prediction's loss: judge it only later
WINDOW = 5              # logged losses averaged
AT_CONSTANT = 0.97      # within 3% of the constant prediction's loss: collapsed
NOT_MOVED = 0.99        # still above 99% of the first logged loss: stuck


class LossWatch:
    """Fed each logged training loss; `update` returns a message the first time the run looks
    collapsed or stuck (None otherwise); `verdict()` says whether it still does at the end."""

    def __init__(self, constant_loss: float | None, check_from: int):
        self.constant, self.check_from = constant_loss, check_from
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self.first: tuple[int, float] | None = None
        self.reported = False
        self.state: str | None = None

    def _diagnose(self, step: int) -> str | None:
        if step < self.check_from or len(self.recent) < WINDOW or self.first is None:
            return None
        mean = sum(self.recent) / len(self.recent)
        if self.constant is not None and mean >= AT_CONSTANT * self.constant:
            return (f"the training loss is {mean:.4f}, no better than ignoring the input and predicting the "
                    f"training frequencies ({self.constant:.4f}): the run has collapsed and learns nothing. The "
                    f"likely fix is a lower learning rate (e.g. --lr divided by 3 to 10)")
        first_step, first = self.first
        if mean >= NOT_MOVED * first:
            return (f"the training loss has not gone down since step {first_step} ({first:.4f} then, {mean:.4f} "
                    f"now): the run learns nothing. The likely fix is a lower learning rate (e.g. --lr "
                    f"divided by 3 to 10), or check that the data holds something to learn")
        return None

    def update(self, step: int, loss: float) -> str | None:
        if self.first is None:
            self.first = (step, loss)
        self.recent.append(loss)
        self.state = self._diagnose(step)
        if self.state and not self.reported:
            self.reported = True
            return f"warning at step {step}: {self.state}"
        return None

    def verdict(self) -> str | None:
        """The diagnosis of the last logs (None: the run is learning)."""
        return self.state
