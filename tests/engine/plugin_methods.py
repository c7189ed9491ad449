"""Throwaway methods defined outside the package, one per training-source kind, for the engine's
plug-in tests (named in configs as ``plugin_methods:<Class>``). Each draws from torch's global RNG
in its step, so a resume that restored the RNG wrongly would end with other weights.
``PLUGIN_STEP_SLEEP`` (seconds) slows every step so a test can kill a run in the middle."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sbirkit.engine import OptimizerSpec
from sbirkit.methods import Method, SamplerSpec


def _pause() -> None:
    delay = float(os.environ.get("PLUGIN_STEP_SLEEP", "0") or 0)
    if delay:
        time.sleep(delay)


def info_nce(sketch: torch.Tensor, photo: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-modal InfoNCE: sketch i's positive is photo i."""
    logits = sketch @ photo.T / temperature
    return F.cross_entropy(logits, torch.arange(len(sketch), device=sketch.device))


class PairsPlugin(Method):
    """Pair batches; InfoNCE between the two sides, with a little noise from the global RNG."""

    name = "pairs_plugin"

    @dataclass
    class Options:
        temperature: float = 0.2

    def sampler_spec(self) -> SamplerSpec:
        return SamplerSpec(kind="pairs", mode="class")

    def training_step(self, batch, ctx=None):
        _pause()
        sketch = self.embed_side(batch, "sketch")
        photo = self.embed_side(batch, "photo")
        sketch = F.normalize(sketch + 0.01 * torch.randn_like(sketch), dim=1)
        return {"loss": info_nce(sketch, photo, self.options.temperature)}


class EpisodesPlugin(Method):
    """Two 2-shot category tasks a step; each task's query sketches rank the task's photos."""

    name = "episodes_plugin"

    @dataclass
    class Options:
        temperature: float = 0.2
        k_support: int = 2
        k_query: int = 2

    def train_source(self, ctx):
        return ctx.episodes("class", self.options.k_support, self.options.k_query, tasks_per_step=2)

    def training_step(self, batch, ctx=None):
        _pause()
        losses = []
        for task in batch["tasks"]:
            photos = torch.cat([self.embed_side(task["support"], "photo"), self.embed_side(task["query"], "photo")])
            sketches = self.embed_side(task["query"], "sketch")
            order = torch.randperm(len(photos))  # the global RNG, restored on resume
            logits = sketches @ photos[order].T / self.options.temperature
            own = torch.argsort(order)[len(task["support"]["photo"]):]  # where each query's photo went
            losses.append(F.cross_entropy(logits, own))
        return {"loss": torch.stack(losses).mean(), "tasks": torch.tensor(float(len(losses)))}


class GeneratedPlugin(Method):
    """No dataset: a generator makes images from seeded noise; a student encoder learns to match
    an image with a noisy copy (InfoNCE); the generator, with an optimiser of its own, makes the
    pairs harder. Alternating updates through ``ctx`` (manual optimisation)."""

    name = "generated_plugin"
    manual_optimization = True

    @dataclass
    class Options:
        noise_dim: int = 8
        image_size: int = 16
        temperature: float = 0.2

    def __init__(self, encoder, options=None):
        super().__init__(encoder, options)
        side = self.options.image_size
        self.generator = nn.Sequential(nn.Linear(self.options.noise_dim, 3 * side * side), nn.Sigmoid())

    def train_source(self, ctx):
        return ctx.generated()

    def configure_optimizers(self, train):
        return {"student": OptimizerSpec([p for p in self.encoder.parameters() if p.requires_grad]),
                "generator": OptimizerSpec(list(self.generator.parameters()), optimizer="adam", lr=1e-3,
                                           schedule="constant")}

    def _images(self, z: torch.Tensor) -> torch.Tensor:
        side = self.options.image_size
        return self.generator(z).view(len(z), 3, side, side)

    def _pair_loss(self, images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        sketch = self.encoder.encode_sketch((images + noise).clamp(0, 1))
        photo = self.encoder.encode_photo(images)
        return info_nce(sketch, photo, self.options.temperature)

    def training_step(self, batch, ctx):
        _pause()
        g = torch.Generator().manual_seed(int(batch["seed"]))
        z = torch.randn(int(batch["batch_size"]), self.options.noise_dim, generator=g).to(ctx.device)
        side = self.options.image_size
        noise = 0.1 * torch.randn(len(z), 3, side, side, generator=g).to(ctx.device)
        ctx.zero_grad("student")
        student = self._pair_loss(self._images(z).detach(), noise)
        ctx.backward(student, "student")
        ctx.step("student")
        ctx.zero_grad("generator")
        generator = -self._pair_loss(self._images(z), noise) + 0.01 * torch.rand(())  # global RNG, logged only
        ctx.backward(generator, "generator")
        ctx.step("generator")
        return {"loss_student": student.detach(), "loss_generator": generator.detach()}

    def validation_metrics(self, ctx):
        """Agreement on held-out noise: mean cosine of an image's two embeddings."""
        g = torch.Generator().manual_seed(12345)
        z = torch.randn(16, self.options.noise_dim, generator=g).to(ctx.device)
        side = self.options.image_size
        noise = 0.1 * torch.randn(16, 3, side, side, generator=g).to(ctx.device)
        was = self.training
        self.eval()
        with torch.no_grad():
            images = self._images(z)
            sketch = self.encoder.encode_sketch((images + noise).clamp(0, 1))
            photo = self.encoder.encode_photo(images)
        self.train(was)
        return {"generated/agreement": float((sketch * photo).sum(1).mean())}

    def validation_metric_names(self):
        return ["generated/agreement"]
