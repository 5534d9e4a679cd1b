"""The negative curriculum: weights per source at warm-up end, mid-ramp and the end of training."""

import pytest

from retrieval_lib.training.curriculum import NegativeCurriculum


def test_weights_at_warm_up_end_mid_ramp_and_end():
    schedule = NegativeCurriculum(warmup_steps=100, ramp_steps=200)
    assert schedule(0, 1000) == {"uniform": 1.0, "mined": 0.0, "inbatch": 1.0}
    assert schedule(99, 1000) == {"uniform": 1.0, "mined": 0.0, "inbatch": 1.0}  # last warm-up step
    assert schedule(100, 1000) == {"uniform": 1.0, "mined": 0.0, "inbatch": 1.0}  # ramp starts at 0
    assert schedule(200, 1000) == pytest.approx({"uniform": 0.5, "mined": 0.5, "inbatch": 1.0})  # mid-ramp
    assert schedule(250, 1000) == pytest.approx({"uniform": 0.25, "mined": 0.75, "inbatch": 1.0})
    assert schedule(300, 1000) == {"uniform": 0.0, "mined": 1.0, "inbatch": 1.0}  # ramp over
    assert schedule(999, 1000) == {"uniform": 0.0, "mined": 1.0, "inbatch": 1.0}  # end


def test_weights_are_linear_and_complementary_on_the_ramp():
    schedule = NegativeCurriculum(warmup_steps=10, ramp_steps=40, easy=("easy",), hard=("a", "b"), steady=())
    for step in range(10, 51):
        w = schedule(step, 100)
        assert w["a"] == w["b"] == pytest.approx((step - 10) / 40)
        assert w["easy"] + w["a"] == pytest.approx(1.0)


def test_an_easy_floor_keeps_some_uniform_negatives():
    schedule = NegativeCurriculum(0, 10, easy_floor=0.2)
    assert schedule(5, 10)["uniform"] == pytest.approx(0.6)
    assert schedule(50, 100)["uniform"] == pytest.approx(0.2)


@pytest.mark.parametrize("bad", [
    {"warmup_steps": -1, "ramp_steps": 10}, {"warmup_steps": 0, "ramp_steps": 0},
    {"warmup_steps": 1.5, "ramp_steps": 10}, {"warmup_steps": 0, "ramp_steps": 10, "easy_floor": 1.5},
    {"warmup_steps": 0, "ramp_steps": 10, "hard": ()},
    {"warmup_steps": 0, "ramp_steps": 10, "easy": ("mined",)},
])
def test_invalid_curricula_are_refused(bad):
    with pytest.raises(ValueError, match="NegativeCurriculum"):
        NegativeCurriculum(**bad)


def test_the_books_four_recipes():
    from retrieval_lib.training.curriculum import MINED_WINDOW, negative_recipes
    from retrieval_lib.training.mining import MinedNegatives
    from retrieval_lib.training.negatives import InBatchNegatives, UniformNegatives

    recipes = negative_recipes(72)
    assert list(recipes) == ["inbatch", "uniform", "hard_from_start", "curriculum"]
    inbatch, schedule = recipes["inbatch"]
    assert inbatch == InBatchNegatives("request") and schedule is None  # chapter 6's training, reused
    assert set(recipes["uniform"][0]) == {"inbatch", "uniform"}
    assert isinstance(recipes["uniform"][0]["uniform"], UniformNegatives)
    mined = recipes["hard_from_start"][0]["mined"]
    assert isinstance(mined, MinedNegatives) and mined.window == MINED_WINDOW and mined.refresh_every == 72
    sources, curriculum = recipes["curriculum"]
    assert set(sources) == {"inbatch", "uniform", "mined"}
    assert set(curriculum(0, 1000)) == set(sources)  # the schedule names every source
    custom = negative_recipes(10, window=(1, 51), warmup_epochs=0.5, ramp_epochs=1.5, easy_floor=0.5)
    assert custom["curriculum"][1] == NegativeCurriculum(5, 15, easy_floor=0.5)
    assert recipes["curriculum"][0]["mined"] is not recipes["hard_from_start"][0]["mined"]  # own index each
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="steps_per_epoch"):
            negative_recipes(bad)
