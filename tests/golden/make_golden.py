"""Regenerate tests/golden/trajectory.json: the first generations of every strategy at seed 0.

Run only when a change of trajectory is intended, and say why in the commit message:
    python tests/golden/make_golden.py
"""

import json
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from test_strategies import STRATEGIES, golden_run

if __name__ == "__main__":
    out = {name: golden_run(name) for name in STRATEGIES}
    path = pathlib.Path(__file__).with_name("trajectory.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path} (torch {torch.__version__})")
