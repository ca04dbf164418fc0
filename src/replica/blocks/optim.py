"""Adam for batched torch models, without torch.optim.

Constructing `torch.optim.Adam` imports torch's compiler stack (sympy, torch._dynamo, ...):
about 3 s of start-up per training job on a 2-core CPU machine, more than many claims' whole
training. `Adam` below is torch.optim.Adam's single-tensor update (the one torch uses for CPU
tensors) with the same operations in the same order, so on the CPU it gives the same bits
(tests/test_optim.py). The module imports no torch: it only calls methods of the tensors it
is given.
"""

from __future__ import annotations


class Adam:
    """Adam (Kingma & Ba) with torch.optim.Adam's defaults and arithmetic: no weight decay,
    no amsgrad. `lr` may be changed between steps (a schedule), like a param group's lr. It may
    also be a tensor that broadcasts against every parameter, e.g. one step size per model of a
    batched network (M, 1, ...): then the update is lr / (1 - beta1^t) * m / denom, the same
    number up to rounding."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.steps = [0] * len(self.params)  # per parameter, as torch counts them
        self.first = [p.detach().new_zeros(p.shape) for p in self.params]
        self.second = [p.detach().new_zeros(p.shape) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """One update of every parameter that has a gradient, in place (outside autograd)."""
        beta1, beta2 = self.betas
        moments = zip(self.params, self.first, self.second, strict=True)
        for i, (p, first, second) in enumerate(moments):
            if p.grad is None:  # skipped, its step count included
                continue
            self.steps[i] += 1
            # torch keeps the count as a float tensor and reads it back as a float
            step = float(self.steps[i])
            step_size = self.lr / (1 - beta1**step)
            correction2_sqrt = (1 - beta2**step) ** 0.5
            grad = p.grad
            first.lerp_(grad, 1 - beta1)
            second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (second.sqrt() / correction2_sqrt).add_(self.eps)
            if isinstance(step_size, float):
                p.detach().addcdiv_(first, denom, value=-step_size)
            else:  # per-model step sizes: no scalar `value` to fuse
                p.detach().sub_(step_size * first / denom)
