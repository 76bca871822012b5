"""Train the benchmark's model zoo deterministically and write ``bench/zoo/``.

    python bench/zoo_train.py [--only NAME ...] [--out DIR]

Each member of :data:`zoo.MEMBERS` is trained on the CPU with its own seed, a data order
from a seeded generator, ``torch.use_deterministic_algorithms(True)`` and 2 threads, so the
same command on the same torch reproduces the same weights. Standard members minimise the
cross-entropy; ``fgsm-rs`` members train on FGSM points from a uniform random start in the
L∞ ball (step 1.25 ε; ε ramps up over the first epoch, against catastrophic overfitting);
``pgd-l2`` members on 5-step PGD points in the L2 ball (step 2.5 ε / 5). Every model's
clean test accuracy and its accuracy under a 20-step PGD at its training radius (L∞ 0.1 /
L2 1.0 for standard members: a sanity check, not a robustness claim) are recorded in
``manifest.json`` with the recipe and the sha256 of the weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo import MEMBERS, ZOO_DIR, Member

BATCH = 64


def _data(kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from mmargin_image.data import load_digits, load_mnist

    if kind == "mnist":
        train, test = load_mnist("train"), load_mnist("test")
    else:
        train, test = load_digits("train", seed=0), load_digits("test", seed=0)
    as_t = torch.from_numpy
    return as_t(train.x), as_t(train.y).long(), as_t(test.x), as_t(test.y).long()


def _l2(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *([1] * (v.dim() - 1)))


def perturb(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float, steps: int,
    gen: torch.Generator, step: float | None = None,
) -> torch.Tensor:  # fmt: skip
    """Adversarial points in the ``norm`` (``linf``/``l2``) ball of radius ``eps`` ∩ [0, 1]:
    a random start, then ``steps`` signed (L∞) or normalised (L2) gradient steps."""
    if eps <= 0:
        return x
    if norm == "linf":
        delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
        step = 1.25 * eps if step is None else step
    else:
        delta = torch.randn(x.shape, generator=gen)
        delta = delta / _l2(delta) * eps * torch.rand(len(x), generator=gen).view(-1, 1, 1, 1)
        step = 2.5 * eps / steps if step is None else step
    delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
    for _ in range(steps):
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            if norm == "linf":
                delta += step * grad.sign()
                delta.clamp_(-eps, eps)
            else:
                delta += step * grad / _l2(grad)
                delta *= (eps / _l2(delta)).clamp(max=1.0)
            delta.copy_((x + delta).clamp(0, 1) - x)
    return (x + delta).detach()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Clean accuracy in eval mode."""
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xb).argmax(1) for xb in x.split(1000)])
    return float((pred == y).float().mean())


def robust_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float
) -> float:
    """Accuracy under a 20-step PGD (step 2.5 ε / 20) from a random start, in eval mode."""
    model.eval()
    gen = torch.Generator().manual_seed(1234)
    adv = perturb(model, x, y, norm, eps, 20, gen, step=2.5 * eps / 20)
    return accuracy(model, adv, y)


def train(member: Member, log: Any = print) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``member`` from scratch; returns the model (eval mode) and its record.
    Deterministic algorithms are switched on for the run and restored after it."""
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _train(member, log)
    finally:
        torch.use_deterministic_algorithms(was)


def _train(member: Member, log: Any) -> tuple[nn.Module, dict[str, Any]]:
    torch.manual_seed(member.seed)
    xtr, ytr, xte, yte = _data(member.data)
    model = member.build()
    gen = torch.Generator().manual_seed(member.seed)
    opt = torch.optim.Adam(model.parameters(), lr=member.lr)
    batch = 32 if member.data == "digits" else BATCH
    steps_per_epoch = -(-len(ytr) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=member.lr * 3, total_steps=member.epochs * steps_per_epoch
    )
    norm = {"fgsm-rs": "linf", "pgd-l2": "l2"}.get(member.training)
    started = time.perf_counter()
    done = 0
    for epoch in range(member.epochs):
        model.train()
        for idx in torch.randperm(len(ytr), generator=gen).split(batch):
            xb, yb = xtr[idx], ytr[idx]
            if norm is not None:  # ε grows linearly over the first epoch
                eps = member.eps * min(1.0, (done + 1) / steps_per_epoch)
                steps = 1 if member.training == "fgsm-rs" else 5
                xb = perturb(model, xb, yb, norm, eps, steps, gen)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            sched.step()
            done += 1
        if (epoch + 1) % max(1, member.epochs // 4) == 0:
            log(f"  {member.name} epoch {epoch + 1}/{member.epochs}: test acc "
                f"{accuracy(model, xte, yte):.4f}")  # fmt: skip
    model.eval()
    check_norm = norm or "linf"
    check_eps = member.eps if norm else (0.1 if member.data == "mnist" else 0.05)
    record: dict[str, Any] = {
        "role": member.role,
        "data": member.data,
        "architecture": member.architecture,
        "training": member.training,
        "eps": member.eps,
        "epochs": member.epochs,
        "seed": member.seed,
        "lr": member.lr,
        "parameters": sum(p.numel() for p in model.parameters()),
        "test_accuracy": round(accuracy(model, xte, yte), 4),
        "pgd_check": {
            "norm": check_norm,
            "eps": check_eps,
            "accuracy": round(
                robust_accuracy(model, xte[:1000], yte[:1000], check_norm, check_eps), 4
            ),
            "samples": 1000,
        },
        "train_seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
    }
    return model, record


def render_readme(manifest: dict[str, dict[str, Any]]) -> str:
    """``bench/zoo/README.md``: the two sets and every trained member, from the manifest."""
    lines = [
        "# The benchmark's model zoo",
        "",
        "Written by `python bench/zoo_train.py` (do not edit by hand; `manifest.json` holds "
        "the same facts). Architectures and recipes: `bench/zoo.py`; loaded by `zoo.load` "
        "with `torch.load(..., weights_only=True)`.",
        "",
        "- **Tuning set**: the models the engine's defaults may be developed on: the shipped "
        "`mnist_cnn` and `digits_mlp` (`mmargin_image/weights/`) and the `tune_*` models below.",
        "- **Evaluation set**: the `eval_*` models: no default was chosen by running the "
        "search on them; the benchmarks' headline figures are measured on them.",
        "",
        "| model | set | data | architecture | training | ε | epochs | seed | clean acc. "
        "| PGD-20 check | train s |",
        "|---|---|---|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for name, r in sorted(manifest.items(), key=lambda kv: (kv[1]["role"] != "tuning", kv[0])):
        check = r["pgd_check"]
        lines.append(
            f"| `{name}` | {r['role']} | {r['data']} | {r['architecture']} | {r['training']} "
            f"| {r['eps']:g} | {r['epochs']} | {r['seed']} | {r['test_accuracy']:.4f} "
            f"| {check['accuracy']:.3f} at {check['norm']} {check['eps']:g} "
            f"| {r['train_seconds']:.0f} |"
        )
    lines += [
        "",
        "PGD-20 check: accuracy on the first 1000 test images under 20 steps of PGD from a "
        "random start at the training radius (standard models: L∞ 0.1 on MNIST, 0.05 on "
        "digits), a sanity check that adversarial training took, not a robustness claim. "
        "`tune_cnn_fgsm_co` is the exception on purpose: its FGSM training broke down "
        "(catastrophic overfitting: clean accuracy kept, almost none under PGD), like "
        "`eval_cnn_fgsm`'s, so the search is tuned on such a model without touching the "
        "evaluation set.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(MEMBERS), default=list(MEMBERS))
    parser.add_argument("--out", type=Path, default=ZOO_DIR)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    for name in args.only:
        model, record = train(MEMBERS[name])
        weights = args.out / f"{name}.pt"
        torch.save(model.state_dict(), weights)
        record["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        record["command"] = f"python bench/zoo_train.py --only {name}"
        manifest[name] = record
        path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        (args.out / "README.md").write_text(render_readme(manifest))
        print(f"{name}: {json.dumps(record)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
