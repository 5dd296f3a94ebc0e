"""`--report-to wandb`: a Weights & Biases run in OUT/wandb/ (or WANDB_DIR), in the project
WANDB_PROJECT (else "lmforge"), named after --out. Offline — nothing leaves the machine; `wandb
sync OUT/wandb/offline-run-*` uploads it later — unless the user chose: WANDB_MODE set, or a
wandb login (WANDB_API_KEY, or the key `wandb login` keeps in ~/.netrc). Settings are the run's
config, train and eval rows its history, samples and warnings HTML texts at their steps. A resumed
run continues the same run id (kept in OUT/tracking.json)."""

from __future__ import annotations

import html
import netrc
import os
from typing import Any
from urllib.parse import urlparse

from .base import Tracker, save_id, saved_id

WANDB_DIR = "wandb"                      # what wandb makes in the `dir` it is given


def logged_in() -> bool:
    """Whether wandb has a key to sync with: WANDB_API_KEY, or a ~/.netrc entry for its host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbTracker(Tracker):
    name = "wandb"

    def start(self, run_name: str, settings: dict[str, Any], step: int) -> None:
        run_id = saved_id(self.out, self.name) if step else None
        mode = None if os.environ.get("WANDB_MODE") or logged_in() else "offline"
        self.run = self.library.init(project=os.environ.get("WANDB_PROJECT") or "lmforge", name=run_name,
                                     dir=None if os.environ.get("WANDB_DIR") else str(self.out), config=settings,
                                     id=run_id, resume="allow" if run_id else None, mode=mode)
        save_id(self.out, self.name, self.run.id)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def text(self, name: str, step: int, text: str) -> None:
        # an HTML page per text, in the run's directory (a wandb.Table would be staged as an artifact
        # outside OUT, in wandb's data directory, until a sync uploads it)
        self.run.log({name: self.library.Html(f"<pre>{html.escape(text)}</pre>", inject=False)}, step=step)

    def close(self) -> None:
        self.run.finish()
