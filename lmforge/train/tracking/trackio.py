"""`--report-to trackio`: a trackio run in trackio's local store (TRACKIO_DIR, default
~/.cache/huggingface/trackio; TRACKIO_SPACE_ID / TRACKIO_SERVER_URL send it elsewhere, as trackio
does), in the project TRACKIO_PROJECT (else "lmforge"), named after --out; `trackio show
--project lmforge` opens the dashboard. Settings are the run's config, train and eval rows its
metrics, samples and warnings Markdown texts. A resumed run continues the run of that name."""

from __future__ import annotations

import os
from typing import Any

from .base import Tracker


class TrackioTracker(Tracker):
    name = "trackio"

    def start(self, run_name: str, settings: dict[str, Any], step: int) -> None:
        self.run = self.library.init(project=os.environ.get("TRACKIO_PROJECT") or "lmforge", name=run_name,
                                     config=settings, resume="allow" if step else "never", embed=False)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def text(self, name: str, step: int, text: str) -> None:
        self.run.log({name: self.library.Markdown(f"```\n{text}\n```" if name == "samples" else text)}, step=step)

    def close(self) -> None:
        self.library.finish()        # the current run (ours since `init`), forgotten too: not finished again at exit
