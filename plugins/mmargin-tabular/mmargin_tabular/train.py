"""Train the built-in fraud models deterministically and record what they are.

``python -m mmargin_tabular.train`` trains every model of :data:`models.FACTORIES` on the
synthetic training split and writes ``manifest.json``: test AUC, how many test frauds
each flags at the 0.3 threshold, and a fingerprint (SHA-256 of the test-set fraud
probabilities rounded to 6 decimals) with the library versions that produced it.
``--check`` retrains and compares with the committed manifest instead (exit status 1 on a
difference), which is how a new scikit-learn or torch release that trains a different
model gets noticed. Nothing is pickled: the models are rebuilt by this same code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mmargin_tabular.data import fraud_split
from mmargin_tabular.models import FACTORIES

MANIFEST = Path(__file__).with_name("manifest.json")
THRESHOLD = 0.3


def fraud_probability(name: str, model: Any, x: np.ndarray) -> np.ndarray:
    """P(fraud) of a built-in model on rows ``x`` (torch or scikit-learn)."""
    if name == "torch_mlp":
        import torch

        with torch.no_grad():
            return torch.softmax(model(torch.as_tensor(x, dtype=torch.float32)), 1)[:, 1].numpy()
    if name.startswith("pipeline_"):  # trained on the raw DataFrame
        from mmargin_tabular.frames import to_frame
        from mmargin_tabular.schema import load_schema

        return np.asarray(model.predict_proba(to_frame(load_schema("fraud"), x))[:, 1])
    return np.asarray(model.predict_proba(x.astype(np.float64))[:, 1])


def describe(name: str) -> dict[str, Any]:
    """Train (or reuse) one model and summarise it for the manifest."""
    from sklearn.metrics import roc_auc_score

    x, y = fraud_split("test")
    p = fraud_probability(name, FACTORIES[name](), x)
    return {
        "test_auc": round(float(roc_auc_score(y, p)), 6),
        "flagged_frauds": int(((p >= THRESHOLD) & (y == 1)).sum()),
        "flagged_legit": int(((p >= THRESHOLD) & (y == 0)).sum()),
        "fingerprint": hashlib.sha256(np.round(p.astype(np.float64), 6).tobytes()).hexdigest(),
    }


def versions() -> dict[str, str]:
    """The library versions a fingerprint depends on."""
    return {pkg: metadata.version(pkg) for pkg in ("scikit-learn", "torch", "numpy")}


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare against) the manifest."""
    parser = argparse.ArgumentParser(prog="python -m mmargin_tabular.train")
    parser.add_argument("--check", action="store_true", help="compare with manifest.json")
    args = parser.parse_args(argv)
    found: dict[str, Any] = {"versions": versions(),
                             "models": {name: describe(name) for name in FACTORIES}}  # fmt: skip
    if not args.check:
        MANIFEST.write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {MANIFEST}")
        return 0
    recorded = json.loads(MANIFEST.read_text(encoding="utf-8"))
    differ = [n for n in FACTORIES if recorded["models"].get(n) != found["models"][n]]
    for name in differ:
        print(f"{name}: recorded {recorded['models'].get(name)}, now {found['models'][name]}")
    if differ and recorded["versions"] != found["versions"]:
        print(f"versions differ: recorded {recorded['versions']}, now {found['versions']}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
