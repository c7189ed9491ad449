"""Adaptive fine-grained SBIR by meta-learning (Bhunia, Sain, Shah, Gupta, Chowdhury, Xiang, Song,
"Adaptive Fine-Grained Sketch-Based Image Retrieval", ECCV 2022).

A fine-grained model (a sketch retrieves the very photo it was drawn from) adapts to a new category
or a new person's drawing style from k sketch-photo pairs, with one gradient step on a small head.

* **Feature extractor F**: one network for sketches and photos (Siamese, ``model.shared: true``),
  any registered backbone, then :class:`~sbirkit.models.heads.SpatialAttention` and a global pool
  (``model.attention: true``). ``train.init_from: RUN`` (with ``train.init_modules: encoder``) starts it from a trained run (e.g. a
  ``triplet_sn`` run), as the paper builds on its supervised baseline.
* **Meta-learning head M**: the encoder's linear embedding head with L2 normalisation (64-d in the
  presets). Only M adapts in the inner loop (ANIL-like): ``W' = W - alpha * grad_W L_T^mu(support)``,
  ``inner_steps`` times (default 1); ``alpha`` fixed or learned (Meta-SGD: one scalar or one per
  parameter). The meta-gradient is second order through the head step only (the step is on a
  linear layer, so this is cheap); ``first_order: true`` drops it. Implemented functionally
  (:class:`~.learner.FunctionalLearner`: ``torch.func.functional_call`` + ``torch.autograd.grad``).
* **Meta-learned margin**: :class:`MarginNet` predicts the task's triplet margin mu in (0, 1) from
  the support set (mean sketch and mean photo features). The poster's inner loss is the triplet
  loss ``L_T = 1/N sum max{0, mu + beta+ - beta-}``; a plain hinge gives mu a zero meta-gradient
  almost everywhere, so the inner loss is the smooth hinge ``softplus(tau (mu + beta+ - beta-)) / tau``
  and the outer (query) loss keeps a fixed margin ``outer_margin`` (mu is then learned only through
  what it does to the adapted head). beta = squared Euclidean distance of unit embeddings.
* **Outer-loop regularisers on F's features** (each with a weight ``w_*`` and listed in
  ``regularizers`` to be on; the forms in :mod:`sbirkit.losses.regularizers`, docs/adaptive_fg.md):

  - ``d``: L_D, the poster's sketch-vs-photo discriminator D, trained on detached features, with F
    trained towards D's confusion (a bounded loss whose push vanishes once D cannot tell);
  - ``c``: L_C, cross-entropy of a classifier over the meta-train categories: a cosine classifier
    on normalised features with a learned scale (``c_mode: cosine``) or the poster's linear one;
  - ``s``: L_S = 1/2 (1 - cos(G(F(I)), S_w)), a decoder regressing the class-name vector S_w
    (:func:`sbirkit.semantics.class_vectors`, ``semantic`` source);
  - ``ud``: L_ud = max{0, beta'+ - beta'- + mu'}, an intra-category triplet in F's (normalised)
    space, for single-category tasks such as shoes.

  Their weights rise from 0 over ``reg_ramp_steps``; ``reg_gate`` drops them on tasks whose outer
  loss is already at most that value (where they would act unopposed). ``c`` and ``s`` need two
  meta-train categories or more and are skipped (recorded in :attr:`AdaptiveFG.active_regularizers`)
  with one. Collapse monitors (:mod:`sbirkit.methods.adaptive_fg.monitors`) are added to every
  validation record.
* **Tasks** (:meth:`AdaptiveFG.train_source`): the engine's episode source over the meta-train
  groups only: ``group_by: class`` (a task = one category) or ``user`` (one user's sketches,
  ``Sample.user_id``; with ``within_class`` one user's sketches of one category); each task has
  ``k_support`` + ``k_query`` disjoint (sketch, own photo) pairs.
  The inner loop's negatives for a support sketch are the other support photos (the paper's "another
  photo of the same category"; a 1-shot task borrows one more photo of the task): not the query
  photos, which an inner step would otherwise push the task's sketches away from. The outer loss
  ranks each query sketch against every photo of the task. ``val_groups`` and
  ``test_groups`` are held out of training: model selection adapts on tasks of ``val_groups``
  (:meth:`AdaptiveFG.validation_protocol`, :class:`~sbirkit.engine.adaptation.AdaptationProtocol`),
  ``sbirkit eval --adapt K`` on tasks of ``test_groups``.

Baselines live in the same method (``mode``, ``inner``, ``margin``, ``regularizers``; presets and
overrides in docs/adaptive_fg.md and ``BASELINES`` in benchmarks/adaptive_baselines.py): ``mode: supervised`` trains the same
network with the fixed-margin triplet loss on the same tasks and no inner loop (the "baseline";
with regularisers, "baseline + regularisers"), evaluated without adaptation or by fine-tuning at
test time (:meth:`AdaptiveFG.adapt` ``strategy="finetune_head"`` / ``"finetune_all"``);
``inner: all`` is MAML over every parameter (``first_order`` option); ``margin: fixed`` with no
regularisers is ANIL.

Using a trained model: :meth:`AdaptiveFG.adapt` ``(support batch) -> adapted encoder`` (no
optimiser state, no graph kept), ``sbirkit adapt RUN --support DIR -k 5 --out RUN_ADAPTED``
(:func:`sbirkit.engine.adapt_run.adapt_run`) and ``sbirkit eval RUN --adapt K --tasks class|user``.

The package: :mod:`.options` (``method.*`` and their checks), :mod:`.groups` (meta-train, validation
and test groups), :mod:`.learner` (:class:`FunctionalLearner`), :mod:`.margin` (:class:`MarginNet`),
:mod:`.encoder` (:class:`AdaptedEncoder`), :mod:`.step` (the training step), :mod:`.test_time`
(:meth:`AdaptiveFG.adapt`), :mod:`.monitors` (collapse monitors), :mod:`.method` (:class:`AdaptiveFG`);
the triplet loss, its smooth hinge and the distance are :mod:`sbirkit.losses.triplet`'s.
"""

from __future__ import annotations

from ...losses.triplet import fine_grained_triplet_loss as triplet_loss
from ...losses.triplet import smooth_hinge
from .encoder import AdaptedEncoder
from .learner import FunctionalLearner
from .margin import MarginNet
from .method import AdaptiveFG

__all__ = ["AdaptiveFG", "AdaptedEncoder", "FunctionalLearner", "MarginNet", "smooth_hinge", "triplet_loss"]
