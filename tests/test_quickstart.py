"""`lmforge quickstart` end to end on a short budget: the verb a newcomer runs first learns."""

from __future__ import annotations

import json
import re

from lmforge.cli import main


def test_quickstart_learns_on_a_short_budget(tmp_path, capsys):
    # 60 of its 1,500 steps: the full run ends at perplexity ~19; an untrained model is at ~1,000
    # (the BPE vocabulary); the defaults reach ~166 here (a bound of 250 leaves room for thread counts)
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--data", str(tmp_path / "data"), "--max-steps", "60",
                 "--eval-interval", "60", "--warmup-steps", "10", "--no-progress"]) == 0
    ppl = float(re.search(r"validation perplexity: ([\d.]+)", capsys.readouterr().out).group(1))
    assert ppl < 250
    config = json.loads((out / "config.json").read_text())
    assert (config["dropout"], config["attention_dropout"]) == (0.2, 0.0)   # regularised, on the fast attention path
