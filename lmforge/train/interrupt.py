"""Stopping a training run cleanly: Ctrl-C (SIGINT) or SIGTERM asks the loop to stop at the
next step boundary, where everything the next step depends on — weights, optimizer, step,
data generator, RNG, the step's logged rows — is consistent, so the checkpoint saved there
resumes exactly. A second signal stops at once, without saving (the last checkpoint stays).

    with StopRequest() as stop:
        while ...:
            one_whole_step()
            if stop.requested:
                save(); break
"""

from __future__ import annotations

import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    def __init__(self, announce: bool = True):
        self.requested = False
        self.announce = announce
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:                                   # the second signal: stop now, without saving
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            print(f"\n{signal.Signals(signum).name}: stopping after this step with a checkpoint (send it again to "
                  f"stop at once without saving)", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():   # signal handlers live in the main thread
            for sig in SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
