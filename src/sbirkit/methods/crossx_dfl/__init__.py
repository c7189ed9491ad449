"""Data-free SBIR: CrossX-DFL (Chaudhuri et al., CVPR 2023) and the paper's baselines (``crossx_dfl``).

One module a concern (``docs/data_free.md`` describes the method and its settings):

* :mod:`.method`: :class:`CrossXDFL`, the engine's hooks, teachers in ``setup``, the student step;
* :mod:`.variants`: one class per ``method.variant`` (its modules, optimisers, training pairs);
* :mod:`.options`: the ``method:`` options and their checks;
* :mod:`.teachers` (frozen classifiers, the discriminator) and :mod:`.label_space` (class maps,
  the shared targets);
* :mod:`.estimators` (generators), :mod:`.objective` (the estimators' objective),
  :mod:`.encoders` (proxies, the baselines' encoders), :mod:`.students` (``student_init``);
* :mod:`.diagnostics` (``synthesis/*``) and :mod:`.samples` (the grid of ``sbirkit dfl samples``).
"""

from .estimators import Estimator
from .method import CrossXDFL, overlap_classes
from .options import VARIANTS, Options

__all__ = ["VARIANTS", "CrossXDFL", "Estimator", "Options", "overlap_classes"]
