"""The book's chosen training settings, kept apart from the code that trains with them.

A cached model's key holds its settings (the fields of its :class:`~retrieval_lib.training.loop.TrainConfig`)
and the source of the code that trained it, but not this module: choosing another setting here (chapter
6's remedy for seed noise, say) reuses every run already trained with that setting, instead of
retraining every model because a constant moved. The seed studies list this module among the code
they ran, so a changed recipe still marks them stale.
"""

from __future__ import annotations

from retrieval_lib.training.loop import TrainConfig

#: The unified model's training schedule (chapters 6-10): up to 15 epochs of batches of 512, stopped by
#: logged validation recall with patience 2, validating and keeping an exponential moving average of the
#: weights (decay 0.99, about 100 steps; chapter 6's remedy for seed noise, chosen on logged validation
#: recall by ``benchmarks/seed_noise.py``).
UNIFIED_TRAIN_CONFIG = TrainConfig(epochs=15, batch_size=512, lr=3e-3, patience=2, seed=0, ema_decay=0.99)
