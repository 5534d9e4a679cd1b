"""The paper's negative curriculum: uniform negatives first, hard negatives phased in linearly.

Etsy's loss over negatives is a weighted sum of one loss per mining strategy, and the weights move
during training: "We warmup training with only uniform negatives and linearly decay loss weight from
uniform negatives and increase weight for hard negatives" *[paper]*. Hard negatives from an untrained
model are noise (its top ranks are arbitrary), and from a half-trained one they are often listings the
buyer would have bought; easy negatives first let the model learn the coarse layout of the catalogue.
:class:`NegativeCurriculum` is a schedule the trainer (:func:`~retrieval_lib.training.trainer.fit_two_tower`)
reads at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

from retrieval_lib.training.mining import MinedNegatives
from retrieval_lib.training.negatives import InBatchNegatives, NegativeSource, UniformNegatives
from retrieval_lib.training.trainer import Schedule


@dataclass(frozen=True)
class NegativeCurriculum:
    """Weights per negative source at each optimiser step: warm-up, linear ramp, then hard negatives.

    * steps ``[0, warmup_steps)``: ``easy`` sources weigh 1 and ``hard`` sources 0;
    * the next ``ramp_steps`` steps: the easy weight falls linearly to ``easy_floor`` and the hard
      weight rises linearly to 1;
    * afterwards: easy ``easy_floor``, hard 1.

    ``steady`` sources (e.g. the in-batch negatives every model of the book uses) weigh 1 throughout.
    Our warm-up keeps them beside the uniform negatives *[ours]*: in-batch negatives are themselves
    random draws, of listings weighted by how often they are engaged with.
    """

    warmup_steps: int
    ramp_steps: int
    easy: tuple[str, ...] = ("uniform",)
    hard: tuple[str, ...] = ("mined",)
    steady: tuple[str, ...] = ("inbatch",)
    easy_floor: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.warmup_steps, int) and self.warmup_steps >= 0):
            raise ValueError(f"NegativeCurriculum.warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        if not (isinstance(self.ramp_steps, int) and self.ramp_steps >= 1):
            raise ValueError(f"NegativeCurriculum.ramp_steps must be an integer >= 1, got {self.ramp_steps!r}")
        if not (isinstance(self.easy_floor, int | float) and 0.0 <= self.easy_floor <= 1.0):
            raise ValueError(f"NegativeCurriculum.easy_floor must be in [0, 1], got {self.easy_floor!r}")
        names = [*self.easy, *self.hard, *self.steady]
        if not self.hard or len(set(names)) != len(names):
            raise ValueError(f"NegativeCurriculum needs hard sources and each source in one group, got easy="
                             f"{self.easy}, hard={self.hard}, steady={self.steady}")

    def progress(self, step: int) -> float:
        """How far the ramp has gone at ``step``: 0 during warm-up, 1 once it is over."""
        return min(max((step - self.warmup_steps) / self.ramp_steps, 0.0), 1.0)

    def __call__(self, step: int, total_steps: int) -> dict[str, float]:
        """``{source name: weight}`` at ``step`` (``total_steps`` is unused: the ramp is set in steps)."""
        t = self.progress(step)
        easy = 1.0 - t * (1.0 - self.easy_floor)
        return {**{name: easy for name in self.easy}, **{name: t for name in self.hard},
                **{name: 1.0 for name in self.steady}}


#: Negative sources (one, or several by name) and the schedule that weights them (``None``: all 1).
Recipe = tuple[NegativeSource | dict[str, NegativeSource], Schedule | None]

#: The book's mined-negative settings, chosen on the validation window's logged purchases by the one-standard-error
#: rule (``benchmarks/negative_choices.py``, docs/decisions.md):
#: rank window, negatives per request, and the curriculum's warm-up and ramp in epochs.
MINED_WINDOW: tuple[int, int] = (1, 51)
N_MINED = 2
N_UNIFORM = 256
WARMUP_EPOCHS = 2.0
RAMP_EPOCHS = 3.0
EASY_FLOOR = 0.0


def negative_recipes(steps_per_epoch: int, window: tuple[int, int] = MINED_WINDOW, n_mined: int = N_MINED,
                     n_uniform: int = N_UNIFORM, warmup_epochs: float = WARMUP_EPOCHS,
                     ramp_epochs: float = RAMP_EPOCHS, easy_floor: float = EASY_FLOOR) -> dict[str, Recipe]:
    """Chapter 7's four ways to pick negatives, as ``{name: (negative sources, schedule)}``.

    * ``inbatch``: the other requests' listings only (chapter 6's model);
    * ``uniform``: plus a pool of ``n_uniform`` uniform negatives per batch, weight 1 throughout;
    * ``hard_from_start``: plus ``n_mined`` mined hard negatives from ``window``, weight 1 from step 0;
    * ``curriculum``: in-batch throughout, uniform negatives during the warm-up, then the paper's linear
      swap from uniform to mined negatives over ``ramp_epochs`` (the uniform weight ends at ``easy_floor``).

    The index is refreshed once per epoch. Warm-up and ramp are given in epochs and converted with
    ``steps_per_epoch`` (see :func:`~retrieval_lib.training.trainer.steps_per_epoch`).
    """
    if not (isinstance(steps_per_epoch, int) and steps_per_epoch > 0):
        raise ValueError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}")
    inbatch = InBatchNegatives("request")

    def mined() -> MinedNegatives:
        return MinedNegatives(window, n_mined, refresh_every=steps_per_epoch)

    schedule = NegativeCurriculum(round(warmup_epochs * steps_per_epoch), max(round(ramp_epochs * steps_per_epoch), 1),
                                  easy_floor=easy_floor)
    return {
        "inbatch": (inbatch, None),  # exactly chapter 6's training, so its cached model is reused
        "uniform": ({"inbatch": inbatch, "uniform": UniformNegatives(n_uniform)}, None),
        "hard_from_start": ({"inbatch": inbatch, "mined": mined()}, None),
        "curriculum": ({"inbatch": inbatch, "uniform": UniformNegatives(n_uniform), "mined": mined()}, schedule),
    }
