"""Adversarial training on the input embeddings: FGM (Miyato et al. 2017) and PGD (Madry et al. 2018).

Both perturb the *output* of the word-embedding layer, not its weight matrix: a forward hook on
`encoder.get_input_embeddings()` keeps the clean pass's embedding output (its gradient is the
attack direction) and adds the perturbation `delta` to it during the adversarial passes. So the
embedding weights are never written to (nothing to restore, nothing to forget to restore), and the
attack works the same for a full fine-tune, LoRA or IA3 (frozen embeddings).

How the loop calls it (core.engine.loop, the `after_backward` point of core.classify.train's hook), per micro-batch:
    loss = step(batch); loss.backward()                    # clean pass; the hook keeps emb output
    adversary.attack(lambda: step(batch))                  # adversarial pass(es), grads accumulate
The model is updated with clean + adversarial gradients (the usual FGM/PGD recipe).

- FGM: delta = epsilon * g / ||g||, g the gradient of the loss at the clean embeddings, the norm
  per example over all its tokens. One extra forward + backward: about 2x the cost of a step.
- PGD: `steps` ascent steps of size `alpha` on delta, each projected back onto the L2 ball of
  radius epsilon (per example); the inner steps take gradients w.r.t. the embeddings only
  (torch.autograd.grad, no parameter gradients), the last one back-propagates into the model.
  About (steps + 1)x the cost of a step.
Padding tokens get zero gradient (attention and pooling mask them), so they are never perturbed.
Leaves out: FreeLB/SMART-style variants, perturbing other layers.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def _per_example_unit(g: torch.Tensor) -> torch.Tensor:
    """g [B, T, H] scaled so each example's slice has L2 norm 1 (zero stays zero)."""
    norms = g.flatten(1).norm(dim=1).clamp(min=1e-12)
    return g / norms.view(-1, *([1] * (g.dim() - 1)))


def project_l2(delta: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Scale each example's delta down onto the L2 ball of radius epsilon (inside it: unchanged)."""
    norms = delta.flatten(1).norm(dim=1)
    scale = torch.clamp(epsilon / norms.clamp(min=1e-12), max=1.0)
    return delta * scale.view(-1, *([1] * (delta.dim() - 1)))


class EmbeddingAdversary:
    """Base for FGM/PGD: owns the forward hook on the input-embedding module."""

    def __init__(self, embeddings: nn.Module, epsilon: float):
        if epsilon <= 0:
            raise ValueError(f"adversarial epsilon must be > 0, got {epsilon}")
        self.epsilon = epsilon
        self.delta: torch.Tensor | None = None
        self.clean: torch.Tensor | None = None  # embedding output of the last training forward pass
        self._keep = True
        self._handle = embeddings.register_forward_hook(self._hook)
        self.backward: Callable[[torch.Tensor], None] = torch.Tensor.backward  # the engine sets its own

    def _hook(self, module, inputs, output):
        if not torch.is_grad_enabled():
            return None  # evaluation passes: untouched
        if self.delta is not None:
            output = output + self.delta
        if self._keep:
            if not output.requires_grad:  # frozen embeddings (LoRA/IA3): still need d loss / d emb
                output.requires_grad_(True)
            else:
                output.retain_grad()
            self.clean = output
        return output

    def remove(self) -> None:
        self._handle.remove()

    def _clean_gradient(self) -> torch.Tensor:
        if self.clean is None or self.clean.grad is None:
            raise RuntimeError("attack() needs a clean forward + backward pass first")
        return self.clean.grad.detach()

    def _adversarial_pass(self, loss_fn: Callable[[], torch.Tensor], delta: torch.Tensor) -> torch.Tensor:
        """Forward with `delta` added, backward into the parameters; returns the loss."""
        self.delta, self._keep = delta, False
        try:
            loss = loss_fn()
            self.backward(loss)
        finally:
            self.delta, self._keep, self.clean = None, True, None
        return loss.detach()


class FGM(EmbeddingAdversary):
    """One step of size epsilon along the normalised gradient."""

    def attack(self, loss_fn: Callable[[], torch.Tensor],
               inner_loss_fn: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        delta = self.epsilon * _per_example_unit(self._clean_gradient())
        return self._adversarial_pass(loss_fn, delta)


class PGD(EmbeddingAdversary):
    """`steps` projected gradient-ascent steps of size `alpha` inside the epsilon ball."""

    def __init__(self, embeddings: nn.Module, epsilon: float, alpha: float, steps: int):
        super().__init__(embeddings, epsilon)
        if steps < 1 or alpha <= 0:
            raise ValueError(f"PGD needs steps >= 1 and alpha > 0, got steps={steps}, alpha={alpha}")
        self.alpha, self.steps = alpha, steps

    def attack(self, loss_fn: Callable[[], torch.Tensor],
               inner_loss_fn: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """`inner_loss_fn`: the loss for the inner ascent steps, which need gradients w.r.t. the
        embeddings only (under DDP: the unwrapped model, so no gradient sync is left pending)."""
        g = self._clean_gradient()
        delta = project_l2(self.alpha * _per_example_unit(g), self.epsilon)
        for _ in range(self.steps - 1):  # inner ascent: gradients w.r.t. the embeddings only
            self.delta = delta
            try:
                loss = (inner_loss_fn or loss_fn)()
                (g,) = torch.autograd.grad(loss, self.clean)
            finally:
                self.delta, self.clean = None, None
            delta = project_l2(delta + self.alpha * _per_example_unit(g.detach()), self.epsilon)
        return self._adversarial_pass(loss_fn, delta)


def build_adversary(kind: str, encoder: nn.Module, *, epsilon: float, alpha: float, steps: int):
    """None for 'none'; else an FGM/PGD hooked on `encoder`'s input embeddings."""
    if kind == "none":
        return None
    embeddings = encoder.get_input_embeddings()
    if kind == "fgm":
        return FGM(embeddings, epsilon)
    if kind == "pgd":
        return PGD(embeddings, epsilon, alpha, steps)
    raise ValueError(f"unknown adversarial method '{kind}'; choose none, fgm or pgd")
