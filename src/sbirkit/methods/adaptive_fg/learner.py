"""The inner loop's learner: some parameters of a module as plain tensors that gradient steps replace
(MAML, ANIL, Meta-SGD), run with ``torch.func.functional_call``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call


class FunctionalLearner:
    """Some parameters of ``module`` as plain tensors that gradient steps replace (MAML, ANIL, Meta-SGD).

    ``learner(x)`` runs ``module`` with the current tensors (``torch.func.functional_call``; the
    module's other parameters and buffers are its own). :meth:`adapt` takes one step,
    ``theta <- theta - alpha * grad theta``; with ``create_graph`` the step stays differentiable, so
    an outer loss on the adapted learner reaches the initial parameters, ``alpha`` and anything the
    inner loss depended on (second order). :meth:`clone` starts a task from the same tensors.
    """

    def __init__(self, module: nn.Module, params: Mapping[str, torch.Tensor],
                 alphas: Mapping[str, torch.Tensor | float], create_graph: bool = True):
        self.module, self.params = module, dict(params)
        self.alphas, self.create_graph = dict(alphas), bool(create_graph)

    def clone(self) -> FunctionalLearner:
        return FunctionalLearner(self.module, self.params, self.alphas, self.create_graph)

    def __call__(self, *args: Any) -> torch.Tensor:
        return functional_call(self.module, self.params, args)

    def adapt(self, loss: torch.Tensor) -> FunctionalLearner:
        names = list(self.params)
        grads = torch.autograd.grad(loss, [self.params[n] for n in names], create_graph=self.create_graph,
                                    allow_unused=True)
        new = {}
        for name, g in zip(names, grads):
            p = self.params[name]
            if g is None:
                new[name] = p
                continue
            if not self.create_graph:
                g = g.detach()
            new[name] = p - self.alphas[name] * g
        self.params = new
        return self

    def detached(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.params.items()}

