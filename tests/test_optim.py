"""The hand-written Adam against torch.optim.Adam: the same bits on the CPU, step-size schedule
and parameters without a gradient included."""

import pytest
import torch

from replica.blocks.optim import Adam


def quadratic_problem(seed: int, dtype):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(3, 5, 4), (3, 1, 4), (7,)]
    params = [torch.randn(s, generator=gen, dtype=dtype, requires_grad=True) for s in shapes]
    targets = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    return params, targets


def loss_of(params, targets, step):
    # a parameter skips every third step's gradient, as an unused layer would
    used = [p for i, p in enumerate(params) if not (i == 2 and step % 3 == 0)]
    pairs = zip(used, targets, strict=False)
    return sum(((p - t) ** 4).sum() + (p * t).sin().sum() for p, t in pairs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adam_matches_torch_optim_adam_bit_for_bit(dtype):
    ours, targets = quadratic_problem(0, dtype)
    theirs = [p.detach().clone().requires_grad_(True) for p in ours]
    opt_ours = Adam(ours, lr=0.05)
    opt_theirs = torch.optim.Adam(theirs, lr=0.05)
    for step in range(40):
        lr = 0.05 * (1 - step / 40)  # a decaying schedule, set between steps
        opt_ours.lr = lr
        for group in opt_theirs.param_groups:
            group["lr"] = lr
        for params, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            loss_of(params, targets, step).backward()
            opt.step()
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(ours[0], quadratic_problem(0, dtype)[0][0])  # it did move


def test_adam_with_betas_and_eps_matches_torch():
    ours, targets = quadratic_problem(1, torch.float64)
    theirs = [p.detach().clone().requires_grad_(True) for p in ours]
    opt_ours = Adam(ours, lr=1e-2, betas=(0.5, 0.9), eps=1e-6)
    opt_theirs = torch.optim.Adam(theirs, lr=1e-2, betas=(0.5, 0.9), eps=1e-6)
    for step in range(15):
        for params, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            loss_of(params, targets, step).backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_the_module_imports_no_torch():
    import ast
    from pathlib import Path

    import replica.blocks.optim as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(name and name.split(".")[0] == "torch" for name in imported)


def test_a_step_size_per_model_equals_separate_adams():
    """lr of shape (M, 1, 1) on a batch of M models: each model follows its own scalar Adam."""
    batched, targets = quadratic_problem(2, torch.float64)
    rates = torch.tensor([1e-3, 1e-2, 1e-1], dtype=torch.float64).view(3, 1, 1)
    singles = [batched[0][m].detach().clone().requires_grad_(True) for m in range(3)]
    opt = Adam(batched[:1], lr=rates)
    opts = [Adam([w], lr=float(r)) for w, r in zip(singles, rates.flatten(), strict=True)]
    for _ in range(25):
        opt.zero_grad()
        ((batched[0] - targets[0]) ** 4).sum().backward()
        opt.step()
        for w, o, m in zip(singles, opts, range(3), strict=True):
            o.zero_grad()
            ((w - targets[0][m]) ** 4).sum().backward()
            o.step()
    for m in range(3):
        assert torch.allclose(batched[0][m], singles[m], rtol=1e-12, atol=1e-14)
