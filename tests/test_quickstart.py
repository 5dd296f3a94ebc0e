"""`lmforge quickstart` end to end on a short budget: the verb a newcomer runs first learns."""

from __future__ import annotations

import json
import re

from lmforge.cli import main


def test_quickstart_learns_on_a_short_budget(tmp_path, capsys):
    # 60 of its 800 steps: the full run ends at perplexity ~18; an untrained model is at ~1,000
    # (the BPE vocabulary); the defaults reach 134 here at 1 or 2 threads, where the gpt-mini of the
    # quickstart before reached ~166: a bound of 160
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--data", str(tmp_path / "data"), "--max-steps", "60",
                 "--eval-interval", "60", "--warmup-steps", "10", "--no-progress"]) == 0
    ppl = float(re.search(r"validation perplexity: ([\d.]+)", capsys.readouterr().out).group(1))
    assert ppl < 160
    config = json.loads((out / "config.json").read_text())
    assert (config["dropout"], config["attention_dropout"]) == (0.2, 0.0)   # regularised, on the fast attention path
