"""Every qualitative claim the chapters make, asserted against the recorded results of the built book."""

from pathlib import Path

import pytest

from retrieval_lib.infra import numerics, results
from retrieval_lib.models.unified import UnifiedConfig
from retrieval_lib.training.pretraining import ENCODER_CONFIG
from retrieval_lib.training.recipes import UNIFIED_TRAIN_CONFIG

pytestmark = pytest.mark.book

#: The built book's results file (what the ``built_book`` fixture loads).
RESULTS = Path(__file__).resolve().parents[1] / "book" / "_build" / "results.json"


@pytest.fixture(scope="module")
def r(built_book):
    preset = results.metadata(RESULTS).get("preset")
    assert preset == "book", (
        f"{RESULTS} holds results of preset {preset!r}, not 'book': the claims are about the book's world; "
        "rebuild the book (unset RETRIEVAL_LIB_PRESET and RETRIEVAL_LIB_REUSE_BUILD) before checking them")
    return built_book


# --- preface: the same numbers on every machine ----------------------------------------------------


def assert_study_agrees(r, key):
    """The committed study ran the code on disk, and this build repeats its seed-0 row.

    Exactly where the study was made on this kind of CPU; within the study's seed-to-seed range on
    another, where MKL's vendor-specific code paths change every training step's last digits
    (``record_agreement``, ``docs/decisions.md``).
    """
    assert r[f"{key}.current"] == 1, f"{key}: the library code changed since the study ran; rerun it"
    if r[f"{key}.made_here"] == 1:
        assert r[f"{key}.reproduced"] == 1, f"{key}: made on this kind of CPU, but not reproduced exactly"
    else:
        assert r[f"{key}.consistent"] == 1, f"{key}: made on another CPU, and further from it than seeds are"
    assert r[f"{key}.agrees"] == 1

def test_the_book_ran_on_the_pinned_code_paths_wherever_they_exist(r):
    # "On any x86-64 processor with AVX2 ... the book's figures then come out identical": the build's
    # kernels ran pinned exactly when this machine can pin them (the tests' own process shows it)
    assert r["build.pinned"] == int(numerics.pinned())


# --- chapter 1: the world has the properties it promises ------------------------------------------

def test_tail_queries_share_fewer_words_with_what_buyers_want(r):
    assert r["marketplace.word_overlap.tail"] < r["marketplace.word_overlap.torso"] < r["marketplace.word_overlap.head"]


def test_few_head_queries_and_a_long_tail(r):
    assert r["marketplace.head_queries"] * 10 < r["marketplace.tail_queries"]


def test_co_purchases_share_hidden_aesthetics_far_more_than_random(r):
    assert r["marketplace.same_aesthetic.co_purchased"] > 2 * r["marketplace.same_aesthetic.random"]


def test_sellers_tag_the_aesthetic_more_than_they_title_it_and_mostly_not_at_all(r):
    assert r["world.aesthetic_named_rate.title"] < r["world.aesthetic_named_rate.tags"]
    assert r["world.aesthetic_named_rate.either"] < 0.5  # "most listings never name it"
    assert 0.25 < r["world.aesthetic_named_rate.tags"] < 0.45  # chapter 6: "about a third" are tagged


def test_vague_listings_are_engaged_with_but_less_often(r):
    assert 0.05 < r["world.vague_listing_share"] < 0.2
    assert 0 < r["world.vague_click_rate"] < r["world.descriptive_click_rate"]
    # "the lexical search rarely ranks them": far fewer impressions than their share of the catalogue
    assert r["world.vague_impression_share"] < 0.5 * r["world.vague_listing_share"]


def test_the_archive_is_longer_than_the_training_window(r):
    assert r["world.pretrain_purchases"] > r["transformer.pretrain_train_window_pairs"]
    assert r["world.pretrain_purchases"] < r["world.archive_clicks"]
    assert r["world.pretrain_purchases"] == r["transformer.pretrain_archive_pairs"]  # chapter 5 reads them all


def test_position_bias(r):
    assert r["marketplace.click_rate.first_position"] > 2 * r["marketplace.click_rate.last_position"]


def test_quality_raises_purchases(r):
    assert r["marketplace.purchase_rate.top_rated"] > r["marketplace.purchase_rate.low_rated"]


def test_purchases_are_closer_to_home_than_impressions(r):
    assert r["marketplace.domestic_share.purchases"] > r["marketplace.domestic_share.impressions"]
    assert r["marketplace.distance_p98.purchases"] < r["marketplace.distance_p98.impressions"]


def test_some_wanted_listings_are_cold(r):
    assert 0 < r["marketplace.cold_start_label_share"] < 1


# --- chapter 2: the semantic gap -------------------------------------------------------------------

def test_the_gap_is_real(r):
    assert r["bm25.recall@100.tail"] <= 0.6 * r["bm25.recall@100.head"]
    assert r["bm25.recall@1000.tail"] < r["bm25.recall@1000.head"]


def test_every_chapter_quotes_the_same_bm25(r):
    # Chapters 4 and 6 evaluate BM25 again next to their own models; it must be the same BM25.
    for seg in ("all", "head", "torso", "tail"):
        if f"term.bm25_recall@100.{seg}" in r:
            assert r[f"term.bm25_recall@100.{seg}"] == r[f"bm25.recall@100.{seg}"], seg
    assert r["unified.bm25.recall@100.tail"] == r["bm25.recall@100.tail"]


SEGMENTS = ("all", "head", "torso", "tail")
#: Every model's recall@100 key prefix; the oracle must be above each in every segment it reports.
MODELS = ("bm25", "popularity", "term", "graph", "transformer.scratch", "transformer.pretrained", "unified",
          "ablation.no_graph", "ablation.no_term", "ablation.no_transformer", "ablation.no_history",
          "ablation.no_location")


def test_the_oracle_is_above_every_model_in_every_segment(r):
    checked = 0
    for model in MODELS:
        for seg in SEGMENTS:
            key = f"{model}.recall@100.{seg}"
            if key in r:
                assert r[f"oracle.recall@100.{seg}"] > r[key], key
                checked += 1
    assert checked >= 30
    assert 0 < r["bm25.oracle_share.recall@100.all"] < r["unified.oracle_share.recall@100.all"] < 1


def test_bm25_beats_popularity(r):
    assert r["bm25.recall@100.all"] > 2 * r["popularity.recall@100.all"]


def test_head_queries_match_far_more_listings_than_we_keep(r):
    assert r["bm25.head_matches.median"] > 100


def test_buyers_of_the_same_head_query_want_different_listings(r):
    assert 1 < r["bm25.head_top_query.distinct_labels"] <= r["bm25.head_top_query.sessions"]


def test_logged_labels_flatter_bm25(r):
    assert r["bm25.logged.recall@100.all"] > r["bm25.recall@100.all"]
    assert r["bm25.logged.recall@100.tail"] > r["bm25.recall@100.tail"]


def test_history_reveals_the_taste_head_queries_leave_unsaid(r):
    assert r["bm25.head_history_taste.sessions"] >= 100
    assert r["bm25.head_history_taste.match"] > 2 * r["bm25.head_history_taste.chance"]


#: The ceiling ladder's rungs, from the least the oracle knows to the most (chapter 2).
LADDER = ("query_no_location", "query", "history_text", "history_posterior", "taste", "intent")


def test_the_ceiling_ladder_climbs_in_every_segment(r):
    for seg in SEGMENTS:
        rungs = [r[f"oracle.ladder.{rung}.recall@100.{seg}"] for rung in LADDER]
        assert rungs[0] < rungs[1], seg  # "without knowing where the buyer lives it falls"
        assert all(low <= high for low, high in zip(rungs[1:], rungs[2:], strict=False)), (seg, rungs)
        assert r[f"oracle.ladder.intent.recall@100.{seg}"] == r[f"oracle.recall@100.{seg}"], seg  # the oracle
    # "the true tastes and the whole intent stay above" the perfect history reader on head queries
    head = [r[f"oracle.ladder.{rung}.recall@100.head"] for rung in ("history_posterior", "taste", "intent")]
    assert head[0] < head[1] < head[2]


def test_a_perfect_history_reader_gains_most_on_head_queries_mostly_from_the_text(r):
    def gain(rung, seg):
        return r[f"oracle.ladder.{rung}.recall@100.{seg}"] - r[f"oracle.ladder.query.recall@100.{seg}"]

    for seg in ("head", "tail"):
        assert r[f"oracle.ladder.history_gain.{seg}"] == pytest.approx(gain("history_posterior", seg))
        assert r[f"oracle.ladder.text_gain.{seg}"] == pytest.approx(gain("history_text", seg))
    # "more than twice its gain on tail queries"
    assert r["oracle.ladder.history_gain.head"] > 2 * r["oracle.ladder.history_gain.tail"]
    # "most of that gain is in what the clicked listings' titles and tags say"
    assert r["oracle.ladder.text_gain.head"] > 0.5 * r["oracle.ladder.history_gain.head"]


# --- chapter 3: graph embeddings -------------------------------------------------------------------

def test_query_degrees_are_heavy_tailed(r):
    assert r["graph.query_degree.max"] > 20 * r["graph.query_degree.median"]


def test_graph_knows_the_hidden_aesthetic_better_than_text(r):
    assert r["graph.neighbor_precision@10"] > r["text.neighbor_precision@10"]
    assert r["graph.neighbor_precision@10"] > r["graph.aesthetic_chance"]


def test_text_knows_the_product_type_better_than_the_graph(r):
    assert r["text.type_precision@10"] > r["graph.type_precision@10"]


def test_graph_covers_head_queries_not_tail_queries(r):
    assert 0 < r["graph.coverage"] < 1
    assert r["graph.query_coverage.head"] > r["graph.query_coverage.tail"]
    assert r["graph.recall@100.head"] > r["graph.recall@100.tail"]


def test_node2vec_cost_grows_with_the_graph(r):
    assert r["graph.cost.full_seconds"] > r["graph.cost.quarter_seconds"]


# --- chapter 4: term embeddings --------------------------------------------------------------------

def test_trigrams_survive_misspellings(r):
    assert r["term.misspelling.trigram_share"] > r["term.misspelling.unigram_share"]


def test_more_buckets_fewer_collisions(r):
    assert r["term.collision_rate.1048576"] < r["term.collision_rate.used"] < r["term.collision_rate.4096"]
    assert r["term.collision_rate.4096"] > 0.9  # "almost all"


def test_term_model_beats_bm25_overall_and_on_the_tail(r):
    assert r["term.recall@100.tail"] > r["bm25.recall@100.tail"]
    assert r["term.recall@100.tail"] > r["term.bm25_recall@100.tail"]
    assert r["term.recall@100.all"] > r["term.bm25_recall@100.all"]
    assert r["term.tail_wins"] > r["term.tail_losses"]
    assert r["term.minus_bm25.recall@100.tail.ci_low"] > 0  # the interval, not just the point estimate
    assert r["term.minus_bm25.recall@100.all.ci_low"] > 0


def test_the_graph_covers_wanted_listings_better_than_the_catalogue(r):
    assert r["graph.coverage"] > r["graph.listing_share"]


def test_without_the_buyer_term_and_bm25_are_alike_on_head_queries(r):
    assert abs(r["term.recall@100.head"] - r["term.bm25_recall@100.head"]) < 0.05


def test_product_structure_dominates_the_graph_map(r):
    assert r["graph.type_precision@10"] > 3 * r["graph.neighbor_precision@10"]


# --- chapter 5: transformers and doc2query pre-training ---------------------------------------------

def test_doc2query_writes_words_the_seller_never_wrote(r):
    assert r["transformer.with_new_word.sampled"] > 0.2
    assert r["transformer.new_word_share.greedy"] < r["transformer.new_word_share.sampled"]


def test_pretrained_attention_is_more_concentrated_than_untrained_attention(r):
    # Any encoder puts somewhat more than the uniform share on its favourite token; the chapter
    # compares the pre-trained encoder with the same encoder at its random initialisation.
    untrained = r["transformer.attention.untrained_favourite_share"]
    assert r["transformer.attention.favourite_share"] > 1.1 * untrained
    assert untrained < 1.2 * r["transformer.attention.uniform_share"]  # "barely more than spreading evenly"


def test_pretraining_stopped_on_the_validation_loss_not_on_the_budget(r):
    assert r["transformer.pretrain_stopped_early"] == 1
    assert 1 < r["transformer.pretrain_best_epoch"] < r["transformer.pretrain_epochs_run"]


def test_pretraining_on_the_archive_helps_tail_queries(r):
    key = "multiboot.pretraining.recall@100"
    # issue 25: over at least five paired seeds, the build reproducing the study's seed-0 row
    assert r["multiboot.pretraining.n_seeds"] >= 5
    assert_study_agrees(r, "transformer.seed_study")
    # "lifts tail-query recall@100 by ... (95 per cent interval ... to ...), and every seed agrees";
    # "Overall the gain is ... (interval ...)": both above 0, over seeds and buyers
    assert r[f"{key}.tail.ci_low"] > 0 and r[f"{key}.all.ci_low"] > 0
    assert r["transformer.seeds.tail_gain_min"] > 0
    # "on head queries the interval ... holds 0"
    assert r[f"{key}.head.ci_low"] < 0 < r[f"{key}.head.ci_high"]
    # "by a small margin"; "about three times as many purchases" in the archive
    assert r[f"{key}.tail.mean"] < 0.05
    assert 2.5 < r["transformer.pretrain_archive_pairs"] / r["transformer.pretrain_train_window_pairs"] < 3.5


def test_the_pretrained_encoder_study_is_current_reproduced_and_has_five_seeds(r):
    # issue 28: intervals over seeds and buyers; the build reproduces the study's seed-0 row, every arm
    assert r["multiboot.pretrained_encoder.n_seeds"] >= 5
    assert_study_agrees(r, "pretrained_encoder.seed_study")
    assert r["pretrained_encoder.seed_study.same_gap_slice"] == 1


def test_the_off_the_shelf_encoder_is_big_and_its_query_side_too_slow(r):
    # "N parameters, M times our whole doc2query model"; "too slow for a query side"; weights in MiB
    assert r["pretrained_encoder.params_over_doc2query"] > 10
    assert 80 < r["pretrained_encoder.model_mb"] < 100
    assert r["pretrained_encoder.query_over_light_time_ratio"] > 10
    assert r["pretrained_encoder.encode_seconds"] > r["transformer.catalogue_encode_seconds"]
    # "384 numbers per listing instead of 64 ... six times larger"
    assert r["pretrained_encoder.dim"] == 6 * ENCODER_CONFIG.dim


def test_zero_shot_minilm_leads_bm25_through_the_tail_and_trails_the_trained_models(r):
    z = "zero_shot.{}.recall@100.{}"
    # "ahead of BM25 (buyers-only interval above 0) and behind the doc2query transformer and the unified
    # model" (their intervals over seeds: the next tests); the term model is a reference figure only
    assert r[z.format("bm25", "all")] < r[z.format("minilm", "all")]
    for model in ("transformer", "unified"):
        assert r[z.format("minilm", "all")] < r[z.format(model, "all")], model
    # "Its lead over BM25 is on tail queries (interval over buyers above 0); on head ... cannot tell from 0"
    key = "zero_shot.minilm_minus_bm25.recall@100"
    assert r[f"{key}.tail.ci_low"] > 0
    assert r[f"{key}.head.ci_low"] < 0 < r[f"{key}.head.ci_high"]
    assert r[f"{key}.all.diff"] > 0 and r[f"{key}.all.ci_low"] > 0


def test_general_english_bridges_only_a_sliver_of_the_semantic_gap(r):
    z = "zero_shot.{}.recall@100.no_shared_word"
    # "There BM25 finds nothing by construction"; "MiniLM finds ...: a sliver"; the trained models far more
    assert r[z.format("bm25")] == 0
    assert 0 < r[z.format("minilm")] < 0.5 * min(r[z.format(m)] for m in ("transformer", "unified"))
    assert r["pretrained_encoder.recall@100.no_shared_word"] == r[z.format("minilm")]
    assert 0.05 < r["gap.no_shared_word.share"] < 0.5


def test_minilm_trails_the_marketplace_models_over_seeds_most_where_the_gap_is(r):
    key = "multiboot.pretrained_encoder.{}.recall@100.{}"
    # "Every interval lies well below 0"
    for comparison in ("minilm_minus_transformer", "minilm_minus_unified"):
        for group in ("all", "no_shared_word"):
            assert r[key.format(comparison, group) + ".ci_high"] < 0, (comparison, group)
    assert r[key.format("minilm_minus_transformer", "tail") + ".ci_high"] < 0
    # "it falls furthest behind exactly where the gap is"
    for comparison in ("minilm_minus_transformer", "minilm_minus_unified"):
        assert r[key.format(comparison, "no_shared_word") + ".mean"] < r[key.format(comparison, "all") + ".mean"]
    assert r[key.format("minilm_minus_transformer", "tail") + ".mean"] < r[key.format("minilm_minus_transformer",
                                                                                       "all") + ".mean"]


def test_a_minilm_block_does_worse_than_the_doc2query_block_on_every_segment(r):
    # "As a frozen block, MiniLM does worse than our doc2query encoder, on every segment"; "every
    # interval lies below 0"; chapter 6's transformer ablation is "worth about two points", and
    # "MiniLM's block recovers only a small part of that" (less than half)
    for seg in ("all", "head", "tail"):
        key = f"unified_with_pretrained.minus_unified.recall@100.{seg}"
        assert r[f"{key}.mean"] == r[f"multiboot.pretrained_encoder.block_minus_unified.recall@100.{seg}.mean"]
        assert r[f"{key}.ci_high"] < 0, seg
    worth = r["multiboot.transformer.recall@100.all.mean"]
    assert 0.015 < worth < 0.025
    recovered = worth + r["unified_with_pretrained.minus_unified.recall@100.all.mean"]
    assert 0 < recovered < worth / 2


def test_minilm_knows_common_synonyms_but_the_marketplace_models_know_the_buyers_words(r):
    s = "synonyms.{}.{}.{}"
    # "far above chance"
    for form in ("buyer", "seller"):
        assert r[s.format("minilm", "product_type", form)] > 5 * r[s.format("minilm", "product_type", "chance")]
    # colours: "many colour names" missed, though above chance
    assert r[s.format("minilm", "colour", "chance")] < r[s.format("minilm", "colour", "seller")] < 0.5
    # the two trained encoders place (nearly) every buyer word right, MiniLM far fewer
    for model in ("transformer", "term"):
        assert r[s.format(model, "product_type", "buyer")] > 0.9
        assert r[s.format(model, "product_type", "buyer")] > r[s.format("minilm", "product_type", "buyer")] + 0.2


def test_the_light_query_tower_is_cheaper_than_the_transformer(r):
    assert r["transformer.query_heavy_over_light_time_ratio"] > 1.5


def test_the_transformer_retriever_is_a_real_retriever(r):
    for name in ("scratch", "pretrained"):
        assert r[f"transformer.{name}.recall@100.tail"] > r["bm25.recall@100.tail"]


# --- chapter 6: the unified model -------------------------------------------------------------------

def test_unified_beats_every_earlier_retriever(r):
    for other in ("bm25.recall@100.all", "popularity.recall@100.all", "term.recall@100.all",
                  "transformer.scratch.recall@100.all", "transformer.pretrained.recall@100.all"):
        assert r["unified.recall@100.all"] > r[other], other


def test_unified_lifts_the_tail_well_above_bm25(r):
    assert r["unified.recall@100.tail"] >= 1.3 * r["bm25.recall@100.tail"]
    for seg in ("all", "head", "tail"):
        # over the full model's seeds and the test buyers (BM25 has no training seed)
        assert r[f"multiboot.full_minus_bm25.recall@100.{seg}.ci_low"] > 0, seg


def test_unified_improves_on_bm25_most_on_tail_queries(r):
    lift = {seg: r[f"unified.recall@100.{seg}"] / r[f"bm25.recall@100.{seg}"] for seg in ("head", "tail")}
    assert lift["tail"] > lift["head"]


def test_almost_all_unified_parameters_are_hashed_term_rows(r):
    config = UnifiedConfig()
    assert config.n_buckets * config.term_dim > 0.9 * r["unified.params"]


ABLATIONS = ("graph", "term", "transformer", "history", "location")
ABLATION_KEY = "multiboot.{}.recall@100.{}"


def test_the_ablation_study_is_current_reproduced_and_has_five_seeds(r):
    assert r["multiboot.ablations.n_seeds"] >= 5
    assert_study_agrees(r, "ablation.seed_study")


def test_location_terms_and_transformer_cost_overall_history_only_head_graph_nothing(r):
    # "Over the seeds, the models without location, without terms and without the transformer fall
    # below the full model overall, the model without the history falls below it on head queries only
    # and only just, and the model without the graph is level with it."
    for name in ("location", "term", "transformer"):
        assert r[ABLATION_KEY.format(name, "all") + ".ci_low"] > 0, name
    assert 0 < r[ABLATION_KEY.format("history", "head") + ".ci_low"] < 0.002
    for name, segments in (("history", ("all", "tail")), ("graph", ("all", "head", "tail"))):
        for seg in segments:
            key = ABLATION_KEY.format(name, seg)
            assert r[f"{key}.ci_low"] < 0 < r[f"{key}.ci_high"], (name, seg)


def test_location_costs_the_most_on_every_segment_and_most_on_head(r):
    # "No location costs the most on every segment, and most on head queries" (means over the seeds)
    for seg in ("all", "head", "tail"):
        worst = max(ABLATIONS, key=lambda name: r[ABLATION_KEY.format(name, seg) + ".mean"])
        assert worst == "location", seg
        assert r[ABLATION_KEY.format("location", seg) + ".ci_low"] > 0, seg
    cost = {seg: r[ABLATION_KEY.format("location", seg) + ".mean"] for seg in ("all", "head", "tail")}
    assert cost["head"] > max(cost["all"], cost["tail"])


def test_terms_cost_the_tail_and_overall_not_the_head(r):
    # "No term costs tail queries (..., interval ...) and not head queries, where the interval ...
    # holds 0; overall the cost is ... (interval ...)"
    assert r[ABLATION_KEY.format("term", "tail") + ".ci_low"] > 0
    assert r[ABLATION_KEY.format("term", "all") + ".ci_low"] > 0
    key = ABLATION_KEY.format("term", "head")
    assert r[f"{key}.ci_low"] < 0 < r[f"{key}.ci_high"]


def test_the_transformer_costs_every_segment_and_most_the_tail(r):
    # "No transformer costs recall on every segment, most on tail queries ... every interval lies above 0"
    for seg in ("all", "head", "tail"):
        assert r[ABLATION_KEY.format("transformer", seg) + ".ci_low"] > 0, seg
    tail, head, every = (ABLATION_KEY.format("transformer", seg) + ".mean" for seg in ("tail", "head", "all"))
    assert r[tail] > max(r[head], r[every])


def test_one_run_would_have_found_the_graph_ahead_where_the_seeds_find_nothing(r):
    # "this build's own run (seed 0) is one of them: its buyers-only interval for the graph's overall
    # gain, ... lies above 0"; over the seeds "both intervals hold 0"
    assert r["seeds.graph.seed0_buyers_only.all.ci_low"] > 0
    assert r[ABLATION_KEY.format("graph", "all") + ".ci_low"] < 0 < r[ABLATION_KEY.format("graph", "all") + ".ci_high"]
    assert r["unified.seeds.graph_gap_min"] < 0 < r["unified.seeds.graph_gap_max"]


def test_the_graph_gains_nothing_over_the_seeds_and_the_history_only_just_on_head_queries(r):
    for gap in ("head_gap", "graph_gap"):
        # "the gaps between models move by more than a point"
        assert r[f"unified.seeds.{gap}_max"] - r[f"unified.seeds.{gap}_min"] > 0.01, gap
        # "Each gap is above 0 at some seeds and below it at others, by up to about a point or more
        # either way"
        assert r[f"unified.seeds.{gap}_max"] > 0.008, gap
        assert r[f"unified.seeds.{gap}_min"] < -0.008, gap
    for name in ("history", "graph"):
        assert r[f"multiboot.{name}.n_seeds"] >= 10, name  # at least ten seeds each (issue 25)
    # "the graph's gap averages out near 0", and its interval holds 0 (the share of replicates at or
    # below 0 is neither small nor large)
    graph = "multiboot.graph.recall@100.all"
    assert abs(r[f"{graph}.mean"]) < 0.005
    assert r[f"{graph}.ci_low"] < 0 < r[f"{graph}.ci_high"]
    assert 0.025 < r[f"{graph}.share_at_most_zero"] < 0.975
    # "the history's averages about half a point, and only x% of its replicates are at or below 0";
    # "just clear of 0": the interval's lower end lies above 0 by less than a fifth of a point
    history = "multiboot.history.recall@100.head"
    assert 0.003 < r[f"{history}.mean"] < 0.008
    assert 0 < r[f"{history}.ci_low"] < 0.002
    assert r[f"{history}.share_at_most_zero"] < 0.025
    assert r["unified.seeds.recall@100.head"] > r["ablation.no_history.seeds.recall@100.head"]
    # overall and on tail queries "the intervals hold 0"
    for seg in ("all", "tail"):
        key = f"multiboot.history.recall@100.{seg}"
        assert r[f"{key}.ci_low"] < 0 < r[f"{key}.ci_high"], seg


def test_one_seeds_buyers_only_interval_is_too_narrow_for_a_comparison_of_training_procedures(r):
    # "At n of the seeds the history's one-seed interval misses the mean over the seeds altogether, and
    # at m it excludes 0: a one-run study would have reported a gain, or a loss, with confidence"
    assert r["seeds.history.buyers_only_misses_mean"] >= 1
    assert r["seeds.history.buyers_only_excludes_zero"] >= 1
    assert r["seeds.graph.buyers_only_misses_mean"] >= 1
    # "two runs of the same procedure differ by more than a point now and then"
    assert r["seeds.unified.n_seeds"] >= 10
    assert 0.003 < r["seeds.unified.recall@100.all.sd"] < 0.01
    assert r["unified.seeds.all_spread"] > 0.01
    # "the two arms of a comparison do not move together"
    assert r["seeds.history.arm_correlation"] < 0.3
    assert r["seeds.graph.arm_correlation"] < 0.3  # "and of the full and the no-graph model's ... only"
    # the seed counts quoted come from the measured spread of the per-seed differences
    for name in ("history", "graph"):
        assert r[f"seeds.{name}.sd_diff"] > 0.005, name
        assert 2 < r[f"seeds.{name}.seeds_for_one_point"] < r[f"seeds.{name}.seeds_for_half_point"], name


def test_the_moving_average_is_adopted_by_the_rule_and_its_spread_is_under_half_a_point(r):
    # "The rule adopts the moving average, and the book trains with it from here on"
    assert r["seeds.noise_study.current"] == 1 and r["seeds.noise_study.n_seeds"] >= 10
    assert r["seeds.remedy.ema.adopted"] == 1
    assert r["seeds.remedy.constant.adopted"] == 0 and r["seeds.remedy.cosine.adopted"] == 0
    assert r["seeds.remedy.recipe_is_adopted"] == 1 and r["seeds.remedy.seed_study_agrees"] == 1
    # "better at n of the seeds (mean ... against ..., with one standard error of a mean difference of
    # ...); the cosine decay's mean ... lies further below it than that"
    assert r["seeds.remedy.valid_wins"] > r["seeds.noise_study.n_seeds"] / 2
    se = r["seeds.remedy.choice_se"]
    assert r["seeds.remedy.ema.valid_mean"] > r["seeds.remedy.constant.valid_mean"] + se
    assert r["seeds.remedy.ema.valid_mean"] > r["seeds.remedy.cosine.valid_mean"] + se
    # "an SD of ... for the average, ... for the constant rate and ..., the lowest, for the cosine decay.
    # The rule this section first used ... would now adopt the cosine decay"
    assert r["seeds.remedy.cosine.valid_sd"] < min(r["seeds.remedy.ema.valid_sd"],
                                                    r["seeds.remedy.constant.valid_sd"])
    assert r["seeds.remedy.cosine.least_noisy"] == 1 and r["seeds.remedy.ema.least_noisy"] == 0
    # "its best epoch comes later"
    assert r["seeds.remedy.ema.best_epoch"] > r["seeds.remedy.constant.best_epoch"]
    # "Overall recall@100 rises by ... above 0"
    gain = "multiboot.remedy.ema_minus_constant.recall@100.all"
    assert r[f"{gain}.mean"] > 0 and r[f"{gain}.ci_low"] > 0
    # issue 25's goal: "the seed standard deviation falls ..., below the half point we aimed for"
    assert r["seeds.unified.recall@100.all.sd_after"] <= 0.005
    assert r["seeds.unified.recall@100.all.sd_after"] < r["seeds.unified.recall@100.all.sd_before"]
    assert r["seeds.unified.recall@100.all.sd_after"] == r["seeds.unified.recall@100.all.sd"]
    # "though not by a margin ten seeds can establish"; "each spreads by about half a point"
    assert r["seeds.remedy.sd_equal_p"] > 0.05
    assert r["seeds.sd_factor_low"] < 1 < r["seeds.sd_factor_high"]
    for variant in ("constant", "ema", "cosine"):
        assert 0.003 < r[f"seeds.remedy.{variant}.test_sd"] < 0.007, variant


def test_the_seed_study_ran_the_code_on_disk_and_this_build_reproduces_it(r):
    # "the build checks that the code is unchanged and that its own seed-0 runs above reproduce the
    # study's seed-0 row exactly"
    assert_study_agrees(r, "unified.seed_study")
    assert_study_agrees(r, "personalization.seed_study")
    if r["personalization.seed_study.made_here"] == 1:
        assert r["personalization.seed_study.same_weight"] == 1
    assert r["unified.seeds.n"] >= 10  # issue 25: at least ten paired seeds for the history and the graph


def test_in_batch_negatives_almost_never_ask_about_taste_but_the_page_does(r):
    # "Only x% of in-batch negatives have the engaged listing's product type; on the page ... y% do"
    assert r["unified.contrast.in_batch_same_type"] < 0.1
    assert r["unified.contrast.page_same_type"] > 0.5
    # "The history encoder alone ... moves head queries by x, about a tenth of what the block adds"
    ratio = r["personalization.encoder_gain.recall@100.head"] / r["personalization.gain.recall@100.head"]
    assert 0.05 < ratio < 0.15


def test_the_click_model_finds_the_worlds_aesthetics_from_the_logs_alone(r):
    # "x% of its twelve largest weights belong to the world's aesthetics" (chance: a few per cent)
    assert r["taste.top12_aesthetic_share"] >= 0.75
    assert r["taste.fit_seconds"] < 30


def test_the_taste_weight_is_chosen_on_logged_validation_engagements(r):
    # "larger weights let taste crowd out the query": the chosen weight beats no block on the logs
    assert r["taste.weight"] > 0
    assert r["taste.logged_recall@100.chosen"] > r["taste.logged_recall@100.off"]


def test_the_taste_block_personalizes_head_queries_at_every_seed(r):
    gain = "personalization.gain.recall@100"
    # "the gain is above 0 at every seed, and each seed's own buyers-only interval shows it too: the
    # lowest of their lower bounds is ..."
    assert r["personalization.seed_gaps.head.min"] > 0
    assert r["personalization.seed_ci_low.head.min"] > 0
    # over seeds and buyers together (and the t-interval cross-check) the interval lies above 0
    multiboot = "multiboot.personalization.recall@100"
    assert r["multiboot.personalization.n_seeds"] >= 10
    assert r[f"{multiboot}.head.mean"] == pytest.approx(r[f"{gain}.head"])
    assert r[f"{multiboot}.head.ci_low"] > 0 and r[f"{gain}.head.t_low"] > 0
    for seg in ("all", "tail"):
        assert r[f"{multiboot}.{seg}.ci_low"] > 0, seg
    # "Seed 0's buyers-only interval ... misses the mean over the seeds, as it does at n of the seeds"
    low, high = (r[f"personalization.seed0_buyers_only.head.{end}"] for end in ("ci_low", "ci_high"))
    assert not low <= r[f"{gain}.head"] <= high
    assert r["personalization.buyers_only_misses_mean"] >= 1
    # "Torso and tail queries gain too ... so the tail does not pay for the head", and (the comparison
    # with the paper) "on average more than on tail queries"
    assert r[f"{gain}.head"] > r[f"{gain}.tail"] > 0
    # "on average the tail does not pay for the head (the multi-bootstrap interval on tail queries lies
    # above 0, though one seed's buyers-only interval there reaches down to x)"
    assert r["multiboot.personalization.recall@100.tail.ci_low"] > 0
    assert r["personalization.seed_ci_low.tail.min"] < 0
    # "The gain lands where there is history to read": long above short; with no earlier search it
    # "scatters around 0" (its mean is small next to the long-history gain)
    assert r[f"{gain}.history.long"] > r[f"{gain}.history.short"] + 0.01
    assert abs(r[f"{gain}.history.none"]) < r[f"{gain}.history.long"] / 2
    # "above every model of the book so far"
    for other in ("unified.recall@100.all", "ablation.no_history.recall@100.all",
                  "transformer.pretrained.recall@100.all", "transformer.scratch.recall@100.all",
                  "term.recall@100.all", "bm25.recall@100.all", "popularity.recall@100.all"):
        assert r["personalization.taste.recall@100.all"] > r[other], other


def test_the_taste_block_collects_a_fraction_of_the_history_headroom(r):
    # "collects only x% of what a perfect reader of the history could": issue 30's bar is a quarter
    # of the headroom; "On average the block now does, just, but the lower end of its interval
    # collects only y%: a quarter is within reach, not established"
    share = r["personalization.captured_share.head"]
    assert 0.25 <= share < 0.3
    assert r["personalization.captured_share.head.ci_low"] < 0.25
    headroom = r["personalization.headroom.recall@100.head"]
    assert r["personalization.captured_share.head.ci_low"] == pytest.approx(
        r["multiboot.personalization.recall@100.head.ci_low"] / headroom)
    # "The history encoder alone ... moves head queries by" less than the block does
    assert r["personalization.encoder_gain.recall@100.head"] < r["personalization.gain.recall@100.head"]


def test_the_taste_block_changes_a_head_querys_results_more_than_the_encoder(r):
    # "share x% of their listings, against y% when only the history encoder reads it"
    overlap = r["unified.history_overlap@100.head"]
    assert overlap < r["unified.history_overlap@100.head.encoder_only"] - 0.03
    assert r["unified.history_overlap@100.head.encoder_only"] > 0.95


def test_history_reveals_taste_and_the_product_vectors_now_see_it(r):
    assert r["unified.history_taste.match"] > 3 * r["unified.history_taste.chance"]
    assert r["probe.product.aesthetic_ratio"] >= 2  # issue 11's acceptance; the chapter quotes it
    assert r["probe.product.aesthetic_ratio"] == r["unified.probe.aesthetic.lift"]
    assert r["unified.probe.max_aesthetic_lift"] >= r["probe.product.aesthetic_ratio"]
    assert r["unified.probe.colour.lift"] > 1 and r["unified.probe.style.lift"] > 1


def test_location_brings_results_closer_but_only_a_little(r):
    assert r["unified.distance_p98"] < r["ablation.no_location.distance_p98"]
    assert 0 < r["unified.distance_p98_reduction"] < 0.2


def test_history_reorders_a_buyers_results_but_hardly_changes_them(r):
    # Same buyer, same query, same location, history on and off.
    assert r["unified.personal.users"] >= 10
    assert r["unified.personal.min_overlap@100"] < 1  # the history changes something ...
    assert 0.9 < r["unified.personal.mean_overlap@100"] < 1  # ... but few of the top 100 listings
    assert r["unified.personal.mean_cosine"] > 0.95


def test_unified_training_stops_on_validation_recall_not_on_the_budget(r):
    assert r["unified.stopped_early"] == 1
    assert r["unified.best_epoch"] < r["unified.epochs_run"] < UNIFIED_TRAIN_CONFIG.epochs


# --- chapter 7: hard negatives and their curriculum -----------------------------------------------

def test_random_negatives_are_easy_and_mined_ones_are_close_to_the_positive(r):
    easiest = max(r["negatives.score_median.uniform"], r["negatives.score_median.inbatch"])
    assert r["negatives.score_median.positive"] - easiest > 0.5  # "far below the positive"
    assert easiest + 0.3 < r["negatives.score_median.mined"] < r["negatives.score_median.positive"]


def test_the_top_ranks_hold_more_false_negatives_than_the_window_that_starts_there(r):
    # "in the chosen window, x, which is y times less"; "Even so, the chosen window starts at rank 1"
    assert r["negatives.false_negative_rate.top"] > r["negatives.false_negative_rate.window"]
    assert r["negatives.false_negative_top_over_window"] > 1
    assert r["negatives.window_start"] == 1


def test_uniform_negatives_speed_the_first_epoch_up_and_hard_ones_from_step_0_do_not(r):
    # "The uniform pool speeds the first epoch up ... against ... the in-batch model"
    assert r["negatives.uniform.valid_epoch1"] > r["negatives.inbatch.valid_epoch1"]
    assert r["negatives.curriculum.valid_epoch1"] == r["negatives.uniform.valid_epoch1"]  # same warm-up
    # "Hard negatives from the first step give no such head start (..., nearer the in-batch model
    # than the uniform pool)"
    hard = r["negatives.hard_from_start.valid_epoch1"]
    assert hard < r["negatives.uniform.valid_epoch1"]
    assert abs(hard - r["negatives.inbatch.valid_epoch1"]) < r["negatives.uniform.valid_epoch1"] - hard


NEGATIVES_KEY = "multiboot.negatives.{}.recall@100.{}"


def test_the_negatives_study_is_current_reproduced_and_has_five_seeds(r):
    # issue 25: at least five paired seeds; the build's seed-0 runs reproduce the study's row
    assert r["multiboot.negatives.n_seeds"] >= 5
    assert_study_agrees(r, "negatives.seed_study")


def test_the_uniform_pool_and_the_curriculum_beat_in_batch_alone_and_hard_from_start_does_not(r):
    # "The uniform pool and the curriculum beat in-batch negatives alone; hard negatives from the first
    # step do not, over the seeds": multi-bootstrap intervals over seeds and buyers
    for name in ("uniform", "curriculum"):
        assert r[NEGATIVES_KEY.format(f"{name}_minus_inbatch", "all") + ".ci_low"] > 0, name
    hard = NEGATIVES_KEY.format("hard_from_start_minus_inbatch", "all")
    assert r[f"{hard}.ci_low"] < 0 < r[f"{hard}.ci_high"]
    # issue 12's acceptance, over seeds: "The curriculum's gain is on tail queries (...); on head
    # queries its interval holds 0"
    assert r[NEGATIVES_KEY.format("curriculum_minus_inbatch", "tail") + ".ci_low"] > 0
    head = NEGATIVES_KEY.format("curriculum_minus_inbatch", "head")
    assert r[f"{head}.ci_low"] < 0 < r[f"{head}.ci_high"]


def test_the_warm_up_pays_and_the_curriculum_ends_level_with_the_uniform_pool(r):
    # "The curriculum minus hard negatives from the first step is ... (interval ...)": above 0
    assert r[NEGATIVES_KEY.format("curriculum_minus_hard_from_start", "all") + ".ci_low"] > 0
    # "The curriculum minus the uniform pool alone ..., and the uniform pool minus hard negatives from
    # the first step ...: both intervals hold 0"
    for key in ("curriculum_minus_uniform", "uniform_minus_hard_from_start"):
        low, high = (r[NEGATIVES_KEY.format(key, "all") + end] for end in (".ci_low", ".ci_high"))
        assert low < 0 < high, key
    # "a t-interval over seeds would need about N paired seeds" for the lead over the pool (more than
    # the study has); the lead over hard negatives from the first step "needs about M, and the study
    # has them"
    n = r["multiboot.negatives.n_seeds"]
    assert r["negatives.seeds_needed.curriculum_minus_uniform"] > n
    assert r["negatives.seeds_needed.curriculum_minus_hard_from_start"] <= n


def test_mining_is_measured_and_costs_training_time(r):
    assert r["negatives.refreshes"] >= 1 and r["negatives.refresh_seconds"] > 0
    assert 0 < r["negatives.mining_time_ratio"] < 1
    assert r["negatives.train_seconds"] > r["negatives.inbatch_train_seconds"]


# --- chapter 8: the multi-part hinge loss and threshold pruning -----------------------------------

LOSSES = ("softmax", "pairwise", "hinge")


def test_the_softmax_model_of_chapter_8_is_chapter_7s_uniform_model(r):
    for seg in ("all", "head", "tail"):
        assert r[f"loss.softmax.recall@100.{seg}"] == r[f"negatives.uniform.recall@100.{seg}"]


def test_hinge_medians_are_ordered_purchase_cart_click_negative(r):
    # issue 13's acceptance
    m = {k: r[f"loss.hinge.score_median.{k}"] for k in ("purchase", "cart", "click", "negative")}
    assert m["purchase"] > m["cart"] > m["click"] > m["negative"]


def test_hinge_positives_all_sit_just_above_the_purchase_threshold(r):
    for kind in ("purchase", "cart", "click"):
        assert r["loss.hinge.e_purchase"] < r[f"loss.hinge.score_median.{kind}"] < r["loss.hinge.e_purchase"] + 0.05
    assert r["loss.hinge.score_median.negative"] < r["loss.hinge.e_neg"]


def test_both_losses_keep_the_positive_types_close(r):
    # "The softmax, which has no thresholds, keeps the three types as close ...: under both losses the
    # three positive medians lie within two hundredths of each other"; which type the softmax puts
    # highest is left open (it changes with the numerics)
    for loss in ("softmax", "hinge"):
        m = {k: r[f"loss.{loss}.score_median.{k}"] for k in ("purchase", "cart", "click", "negative")}
        positives = (m["purchase"], m["cart"], m["click"])
        assert max(positives) - min(positives) < 0.02, loss
        assert min(positives) > m["negative"], loss


LOSS_KEY = "multiboot.losses.{}.recall@100.{}"


def test_the_losses_study_is_current_reproduced_and_has_five_seeds(r):
    assert r["multiboot.losses.n_seeds"] >= 5
    assert_study_agrees(r, "loss.seed_study")


def test_the_hinge_costs_recall_on_every_segment(r):
    # issue 13 expected hinge recall not worse than softmax beyond the CI; in our world it is worse,
    # over seeds and buyers: "The hinge costs recall here, on every segment"; "behind at every seed"
    # on head queries
    for seg in ("all", "head", "tail"):
        assert r[LOSS_KEY.format("hinge_minus_softmax", seg) + ".ci_high"] < 0, seg
    assert r["loss.seeds.hinge_minus_softmax.head.max"] < 0


def test_the_pairwise_loss_falls_behind_by_far_less_than_the_hinge_and_on_every_segment(r):
    # "The pairwise margin loss falls behind the softmax too, by far less": less than half the hinge's
    # shortfall
    pairwise, hinge = (r[LOSS_KEY.format(f"{loss}_minus_softmax", "all") + ".mean"] for loss in ("pairwise", "hinge"))
    assert r[LOSS_KEY.format("pairwise_minus_softmax", "all") + ".ci_high"] < 0
    assert hinge < pairwise < 0 and abs(pairwise) < abs(hinge) / 2
    # "on tail queries ... as well as on head queries"
    for seg in ("tail", "head"):
        assert r[LOSS_KEY.format("pairwise_minus_softmax", seg) + ".ci_high"] < 0, seg
    # "The hinge minus the pairwise loss is ... (interval ...; the t-interval ... agrees)"
    both = LOSS_KEY.format("hinge_minus_pairwise", "all")
    assert r[f"{both}.ci_high"] < 0 and r[f"{both}.t_high"] < 0


def test_early_stopping_ends_the_hinge_soonest_and_its_longest_run_is_its_best(r):
    # "the softmax stopped after x epochs on average and the pairwise loss after y (it reached the
    # cap in n run)"; "The hinge stopped soonest. At all seeds but one it stopped after k epochs at
    # most"; "At seed s it ... trained for m epochs, and that run is the study's best hinge by far"
    cap, n = r["loss.seeds.cap"], r["multiboot.losses.n_seeds"]
    assert cap == UNIFIED_TRAIN_CONFIG.epochs == 15
    assert r["loss.seeds.softmax.at_cap"] == 0 and r["loss.seeds.pairwise.at_cap"] == 1
    assert r["loss.seeds.hinge.epochs.mean"] < r["loss.seeds.softmax.epochs.mean"] < r[
        "loss.seeds.pairwise.epochs.mean"]
    assert r["loss.seeds.hinge.others_epochs_max"] < r["loss.seeds.softmax.epochs.min"]
    assert r["loss.seeds.hinge.others_best_epoch_max"] < r["loss.seeds.hinge.others_epochs_max"] < cap
    assert r["loss.seeds.hinge.longest_epochs"] > 2 * r["loss.seeds.hinge.others_epochs_max"]
    # "by far": more than two points above the best of the others
    assert r["loss.seeds.hinge.longest_recall"] > r["loss.seeds.hinge.others_recall_max"] + 0.02
    assert n >= 5


def test_the_hinge_prunes_more_than_pairwise_at_every_seed_but_rarely_more_than_softmax(r):
    # issue 13's acceptance, over the study's seeds: "The hinge removes more than the pairwise model at
    # n of the seeds, but more than the softmax at only k: the paper's reason for the loss shows here
    # only weakly"
    n = r["multiboot.losses.n_seeds"]
    mean = {loss: r[f"prune.seeds.{loss}.removed.all.mean"] for loss in LOSSES}
    assert mean["hinge"] > mean["pairwise"]
    assert r["prune.seeds.hinge_above_pairwise"] == n
    assert 0 < r["prune.seeds.hinge_above_softmax"] <= n / 2
    # "the seed-s run removes x%, against at most y% for the hinge runs that early stopping ended sooner"
    assert r["prune.seeds.hinge.longest_removed"] > r["prune.seeds.hinge.others_removed_max"] + 0.05
    # "The hinge's edge is on head queries ...; on tail queries the hinge removes less"
    assert r["prune.seeds.hinge.removed.head.mean"] > r["prune.seeds.softmax.removed.head.mean"]
    assert r["prune.seeds.hinge.removed.tail.mean"] < r["prune.seeds.softmax.removed.tail.mean"]


def test_hinge_labels_land_in_a_narrower_band_and_its_threshold_sits_higher(r):
    assert r["prune.hinge.label_score_iqr"] < min(r["prune.softmax.label_score_iqr"],
                                                  r["prune.pairwise.label_score_iqr"])
    assert r["prune.hinge.threshold_at_keep95"] > r["prune.softmax.threshold_at_keep95"]
    assert abs(r["prune.hinge.label_score_median"] - r["loss.hinge.e_purchase"]) < 0.05  # "near"
    assert r["prune.hinge.threshold_at_keep95"] > r["prune.hinge.list_end_median"]


def test_a_cut_relative_to_each_querys_best_score_rescues_neither_softmax_nor_pairwise(r):
    # "at every seed of the study, that relative cut removes within ... of what the global threshold
    # removes" (under two points), "for the softmax ... and for the pairwise model ...; both stay below
    # the hinge's global threshold"
    assert r["prune.seeds.relative_minus_global.max_abs"] < 0.02
    for loss in ("softmax", "pairwise"):
        assert r[f"prune.seeds.{loss}.removed_relative.mean"] < r["prune.seeds.hinge.removed.all.mean"], loss


def test_a_threshold_set_on_logged_purchases_keeps_fewer_labels_than_it_targets(r):
    # "Each model's validation threshold sits above the test window's 95-per-cent threshold ... keeps only"
    for loss in LOSSES:
        assert r[f"prune.{loss}.valid_threshold"] > r[f"prune.{loss}.threshold_at_keep95"], loss
        assert r[f"prune.{loss}.cut.labels_kept"] < 0.95, loss


def test_at_the_logged_choice_a_threshold_gains_little_over_a_top_n_list_of_the_same_mean_length(r):
    # "a threshold gains little over its top N ...: about a point at most, either way" (which is ahead,
    # level or behind changes from one trained model to the next, so the prose claims none)
    for loss in LOSSES:
        assert abs(r[f"prune.{loss}.cut.threshold_minus_top_n"]) < 0.015, loss
        assert abs(r[f"prune.{loss}.cut.mean_length"] - r[f"prune.{loss}.cut.top_n"]) <= 0.5, loss


def test_at_long_lists_every_threshold_beats_its_top_n(r):
    # "every threshold beats the top N of the same mean length" (no order among the losses: one
    # trained model each, see the prose)
    for loss in LOSSES:
        assert r[f"prune.{loss}.cut95.threshold_minus_top_n_ci_low"] > 0, loss
        assert r[f"prune.{loss}.cut95.mean_length"] > r[f"prune.{loss}.cut.mean_length"], loss  # "lower"


def test_the_recall_at_the_hinges_length_is_each_models_top_n_there(r):
    # the figures the chapter leaves open (one model per loss): the hinge's is its own top-N recall
    assert r["prune.hinge.recall_at_hinge_length"] == r["prune.hinge.cut.top_n_recall"]
    for loss in LOSSES:
        assert 0 < r[f"prune.{loss}.recall_at_hinge_length"] <= 1, loss

# --- chapter 9: ANN retrieval and ANN-based boosting ------------------------------------------------

def test_the_served_model_had_the_best_validation_recall_of_chapter_8(r):
    assert r["loss.choices.softmax_valid_recall"] > r["loss.choices.hinge_best_valid_recall"]


def test_the_chosen_hnsw_setting_returns_99_percent_of_the_exact_top_100(r):
    # issue 14's acceptance; chosen on the validation window, measured on the test window
    assert r["ann.target_recall"] == 0.99
    assert r["ann.hnsw.recall_vs_exact@100"] >= 0.99


def test_hnsw_saves_a_small_time_on_our_small_catalogue(r):
    # "a saving of ... ms per request, small": under half a millisecond (the ratio moves from run to run
    # and from CPU to CPU, 2.5 to 4 times, so the prose quotes it and claims no bound)
    ratio, saved = r["ann.exact_over_hnsw_time_ratio"], r["ann.hnsw.saved_ms"]
    assert ratio == pytest.approx(r["ann.exact.ms_per_query"] / r["ann.hnsw.ms_per_query"]) and ratio > 1
    assert saved == pytest.approx(r["ann.exact.ms_per_query"] - r["ann.hnsw.ms_per_query"]) and saved < 0.5


def test_re_ranking_buys_back_what_4_bit_codes_lose(r):
    assert r["ann.faiss_ivfpq.recall_no_rerank@100"] < 0.9  # "only"
    assert r["ann.faiss_ivfpq.recall_vs_exact@100"] >= 0.96  # within the paper's "at most about 4%"
    assert r["ann.faiss_ivfpq.recall_vs_exact@100"] - r["ann.faiss_ivfpq.recall_no_rerank@100"] > 0.1
    # a few bytes per listing, against a float vector; hnswlib's links add to the vector
    assert r["ann.faiss_ivfpq.bytes_per_vector"] < r["ann.float_bytes_per_vector"] / 4
    assert r["ann.hnsw.bytes_per_vector"] > r["ann.float_bytes_per_vector"]


def test_buyers_act_on_rating_reviews_and_shop_sales_hardly_on_freshness(r):
    for name in ("rating", "reviews", "shop_sales"):
        assert r[f"boosting.purchase_rate_ratio.{name}"] > 1.25, name
    assert r["boosting.purchase_rate_ratio.freshness"] < 1.15


def test_the_tuner_explores_large_weights_first_then_settles_on_small_ones(r):
    assert r["boosting.trials"] == 40
    assert r["boosting.early_trials.mean_w_sum"] > 2 * r["boosting.late_trials.mean_w_sum"]
    assert r["boosting.early_trials.mean_value"] < r["boosting.late_trials.mean_value"]
    assert r["boosting.valid_recall.tuned"] > r["boosting.valid_recall.none"]
    # "a gain of under a point, and the last ten trials score within a point of the best on average"
    assert r["boosting.valid_recall.tuned"] - r["boosting.valid_recall.none"] < 0.01
    assert r["boosting.valid_recall.tuned"] - r["boosting.late_trials.mean_value"] < 0.01
    # "Here it gives rating ... the largest weight, then shop sales ... and reviews ..., and freshness
    # almost none"
    # the weights themselves are one good point of a flat region: the prose quotes them, claims no order
    w = [r[f"boosting.w.{name}"] for name in ("rating", "reviews", "freshness", "shop_sales")]
    assert all(0 <= x <= r["boosting.w_max"] for x in w)


def test_the_tuners_largest_weight_goes_to_rating_or_reviews_and_changes_with_the_seed(r):
    # "the largest goes to rating at N of the seeds and to reviews at M, never to freshness, the
    # feature buyers hardly act on"
    largest = {name: r[f"boosting.seeds.largest_w.{name}"] for name in ("rating", "reviews", "freshness", "shop_sales")}
    assert largest["rating"] > 0 and largest["reviews"] > 0
    assert largest["rating"] + largest["reviews"] == r["multiboot.boosting.n_seeds"]
    ratio = {name: r[f"boosting.purchase_rate_ratio.{name}"] for name in largest}
    assert min(ratio, key=ratio.get) == "freshness"


BOOST_KEY = "multiboot.boosting.{}.recall@100.{}"


def test_additive_boosting_beats_no_boosting_over_the_seeds(r):
    # issue 14's acceptance, over at least five paired seeds (issue 25); the build reproduces seed 0
    assert r["multiboot.boosting.n_seeds"] >= 5
    assert_study_agrees(r, "boosting.seed_study")
    assert r[BOOST_KEY.format("additive_minus_none", "all") + ".ci_low"] > 0
    # "and it helps at every seed": the smallest per-seed gain, and this build's run, are above 0
    assert r["boosting.additive.recall@100.all"] > r["boosting.none.recall@100.all"]
    assert r["boosting.seeds.additive_gain_min"] > 0


def test_head_and_tail_queries_gain_alike(r):
    # "ours gain alike": each segment's interval lies above 0 and holds the other's mean
    head, tail = (BOOST_KEY.format("additive_minus_none", seg) for seg in ("head", "tail"))
    assert r[f"{head}.ci_low"] > 0 and r[f"{tail}.ci_low"] > 0
    assert r[f"{head}.ci_low"] < r[f"{tail}.mean"] < r[f"{head}.ci_high"]
    assert r[f"{tail}.ci_low"] < r[f"{head}.mean"] < r[f"{tail}.ci_high"]


def test_the_seeds_cannot_tell_the_additive_from_the_multiplicative_boost(r):
    # "The multiplicative re-ranking gains about as much (... interval ...)": above 0
    assert r[BOOST_KEY.format("multiplicative_minus_none", "all") + ".ci_low"] > 0
    # "additive minus multiplicative ... its intervals hold 0 on head queries and on tail queries too"
    for seg in ("all", "head", "tail"):
        key = BOOST_KEY.format("additive_minus_multiplicative", seg)
        assert r[f"{key}.ci_low"] < 0 < r[f"{key}.ci_high"], seg


def test_the_reduced_index_finds_the_boosted_top_100_and_the_raw_ip_index_does_not(r):
    # issue 14's acceptance: the setting is chosen for 0.99 on the validation requests; on the test
    # requests "within about a point of it and far above the raw ip space", at the tuned w and over
    # the tuner's whole w range
    assert r["ann.boosted.recall_vs_exact"] >= r["ann.target_recall"] - 0.01
    assert r["ann.boosted.recall_vs_exact_min"] >= r["ann.target_recall"] - 0.01
    assert r["ann.boosted_ip.recall_vs_exact_max"] < r["ann.boosted.recall_vs_exact_min"] - 0.1
    assert r["ann.boosted_ip.recall_vs_exact_min"] < 0.8  # "lost a large share of the top 100"
    # "worst with no boost at all, better as the weights grow"
    assert r["ann.boosted_ip.recall_vs_exact_w0"] == r["ann.boosted_ip.recall_vs_exact_min"]
    assert r["ann.boosted_ip.w_rank_correlation"] > 0.5
    assert 1.0 <= r["ann.hydrated_norm_min"] < r["ann.hydrated_norm_max"] < 3.0


# --- chapter 10: the whole system -----------------------------------------------------------------

SERVED = [(recipe, "softmax") for recipe in ("inbatch", "uniform", "hard_from_start", "curriculum")] + [
    ("uniform", "pairwise"), ("uniform", "hinge")]


def test_the_served_recipe_is_what_was_served_before_within_one_standard_error_of_the_most(r):
    # "chapter 7's curriculum passes the most ...; The first three lie within one standard error of each
    # other ..., so the book's rule keeps what was served"; "A global score threshold whose lists hold
    # 100 candidates on average passes fewer for every recipe ... so the system serves a fixed depth"
    assert r["served.choice.is_pipeline"] == 1 and r["served.budget"] == 100
    figures = {(recipe, loss, cut): r[f"served.{recipe}.{loss}.{cut}_recall"]
               for recipe, loss in SERVED for cut in ("top_n", "threshold")}
    best = max(figures, key=figures.get)
    assert best == ("curriculum", "softmax", "top_n")
    assert r["served.choice.best_logged_recall"] == figures[best]
    assert r["served.choice.logged_recall"] == figures["uniform", "softmax", "top_n"]
    se = r["served.choice.standard_error"]
    three = [("curriculum", "softmax", "top_n"), ("hard_from_start", "softmax", "top_n"),
             ("uniform", "softmax", "top_n")]
    assert max(figures[k] for k in three) - min(figures[k] for k in three) < se
    assert max(v for k, v in figures.items() if k not in three) < figures[best] - se
    for recipe, loss in SERVED:
        assert figures[recipe, loss, "threshold"] < figures[recipe, loss, "top_n"], (recipe, loss)


def test_the_pipeline_serves_chapter_9s_choices(r):
    """"the choices are chapter 9's": the same w and the same HNSW setting."""
    for name in ("rating", "reviews", "freshness", "shop_sales"):
        assert r[f"system.w.{name}"] == pytest.approx(r[f"boosting.w.{name}"], abs=1e-6)
    assert (r["system.index_m"], r["system.index_ef"]) == (r["ann.boosted.m"], r["ann.boosted.ef"])
    assert r["system.valid_recall_vs_exact"] >= 0.99


def test_the_boost_is_small_next_to_the_cosine_in_the_traced_request(r):
    assert 0 < r["trace.boost_max"] < r["trace.cosine_min"] / 4
    assert r["trace.boost_range"] > r["trace.cosine_range"] / 3  # "enough to reorder" close listings
    assert r["trace.candidates"] == 4 * 8
    # "What does re-ranking them change here? Nothing: of n test requests searched both ways, 0 got
    # another page", because "the chosen ef of x, above the y candidates" makes the graph search the same
    assert r["trace.rerank_checked"] >= 100 and r["trace.rerank_changed_pages"] == 0
    assert r["system.index_ef"] >= r["trace.candidates"]


def test_the_light_query_tower_reads_five_blocks_and_the_product_tower_five(r):
    # "the light query tower reads the hashed terms ..., the history encoder's summary ..., the
    # buyer's location and two frozen blocks of the query itself"; "the heavy product tower ... reads
    # terms, transformer, graph, numeric, location"
    assert r["trace.query_blocks"] == 5 and r["trace.product_blocks"] == 5
    assert r["trace.history_items"] > 0
    assert r["trace.first_cosine"] == pytest.approx(r["trace.page_first_cosine"], abs=1e-5)  # "the first row's"


def test_thin_requests_get_a_full_page(r):
    # anonymous (cold start), an empty query from a known buyer, out-of-vocabulary words
    assert r["service.thin_requests_answered"] == r["service.thin_requests"] == 3


def test_every_bad_request_got_a_4xx(r):
    assert r["service.bad_requests_4xx"] == r["service.bad_requests"] >= 5
    assert r["service.errors"] == 0


def test_the_open_loop_p99_is_under_50_ms_at_the_chapters_arrival_rate(r):
    # issue 26's acceptance (open loop, latency from the scheduled send), and "one request at a time,
    # under the paper's p99 of about 18 ms"
    assert r["service.open_loop.p99_ms"] < 50
    assert r["service.single.p99_ms"] < 18
    assert r["service.open_loop.p50_ms"] <= r["service.open_loop.p99_ms"]
    # "a quarter of the one-at-a-time throughput"; "now and then a request ... waits": queueing adds to the tail
    assert r["service.open_loop.rate_rps"] == pytest.approx(0.25 * r["service.single.qps"], rel=1e-9)
    assert r["service.open_loop.busy_time_ratio"] < 1
    assert r["service.open_loop.p99_ms"] > r["service.single.p99_ms"]


def test_the_open_loop_client_sent_on_schedule_at_the_chapters_rate(r):
    # latency counts from the scheduled send; at the chapter's rate the client itself kept to its schedule
    # (past the capacity it may fall behind too: the overloaded run shares the two cores)
    assert r["service.open_loop.max_send_lag_ms"] < 25


def test_answers_keep_pace_up_to_the_capacity_and_fall_behind_past_it(r):
    # at the chapter's rate the service keeps up, and Little's law with the arrival rate holds
    assert r["service.open_loop.little_time_ratio"] == pytest.approx(1, abs=0.05)
    assert r["service.open_loop.throughput_rps"] == pytest.approx(r["service.open_loop.arrival_rps"], rel=0.05)
    # past the capacity: answers no faster than the capacity, the law fails, latency grows with the queue
    assert r["service.open_loop.top.throughput_rps"] < 0.9 * r["service.open_loop.top.arrival_rps"]
    assert r["service.open_loop.top.little_time_ratio"] < 0.9
    assert r["service.open_loop.top.p99_ms"] > 10 * r["service.open_loop.p99_ms"]
    # "Worse, fewer answers come back per second than at the capacity ... the client itself falls behind"
    assert r["service.open_loop.top.throughput_rps"] < r["service.saturation_rps"]
    assert r["service.open_loop.top.max_send_lag_ms"] > r["service.open_loop.max_send_lag_ms"]


def test_the_query_tower_and_http_each_cost_more_than_the_index(r):
    # "the query tower ... costs more than the ANN search, and so does what is left, HTTP and the
    # client. On a catalogue this size the index is not the bottleneck."
    stages = {k: v for k, v in r.items() if k.startswith("service.stage.")}
    assert r["service.stage.query_tower_ms"] > r["service.stage.ann_ms"]
    assert r["service.stage.http_and_client_ms"] > r["service.stage.ann_ms"]
    assert max(stages, key=stages.get) != "service.stage.ann_ms"


def test_the_ranker_orders_logged_pages_better_than_the_policy_and_reads_the_unified_score_most(r):
    # "reaches an NDCG@10 of ... against ... for the order the logging policy showed them in"
    assert r["ranker.ndcg@10.valid"] > r["ranker.ndcg@10.logged_order"]
    assert 0 <= r["ranker.ndcg@10.logged_order"] and r["ranker.ndcg@10.valid"] <= 1
    assert r["ranker.pages.fit"] > r["ranker.pages.stop"] > 0
    # "The unified model's score carries the largest share ..., and BM25 ..."; trained where the score is
    # in-sample, "the same ranker gives it" a larger share (the prose's point: it trusts it more)
    assert r["ranker.importance.cosine_share"] > r["ranker.importance.bm25_share"] > 0
    assert r["ranker.importance.cosine_rank"] == 1
    assert r["ranker.train_window.importance.cosine_share"] > r["ranker.importance.cosine_share"]
    assert r["ranker.trees"] >= 1


def test_adding_the_unified_candidates_lifts_purchases_and_the_aa_test_covers_zero(r):
    # issue 15's and issue 26's acceptance: the same ranker in both arms, the interval above 0
    assert r["abtest.lift_ci_low"] > 0
    assert r["abtest.aa_ci_low"] < 0 < r["abtest.aa_ci_high"]
    assert r["abtest.treatment.purchase_rate"] > r["abtest.control.purchase_rate"]
    assert r["abtest.lift"] == pytest.approx(
        r["abtest.treatment.purchase_rate"] / r["abtest.control.purchase_rate"] - 1, rel=1e-9)
    # "Of the ranker's top 16 in the treatment, ... are listings that only the new source found"
    assert 0 < r["abtest.new_candidates_share"] < 1


def test_a_ranker_trained_where_the_unified_score_is_in_sample_gets_less_from_the_new_candidates(r):
    # two training procedures: "over ... held-out splits ... multi-bootstrap interval over splits and
    # buyers"; "gets less out of what the new source brings"
    assert r["abtest.ranker_window.n_seeds"] >= 3
    assert r["abtest.ranker_window.gain_gap.ci_low"] > 0
    assert (r["abtest.ranker_window.gain_gap.ci_low"] < r["abtest.ranker_window.gain_gap.mean"]
            < r["abtest.ranker_window.gain_gap.ci_high"])
    # its own lift, one fixed system with its buyers-only interval, as quoted
    assert (r["abtest.train_window_ranker.ci_low"] < r["abtest.train_window_ranker.lift"]
            < r["abtest.train_window_ranker.ci_high"])


def test_the_pages_order_was_worth_more_than_the_new_candidates(r):
    # "The page's order is worth more than the new candidates here": re-rank only against the lift
    assert r["abtest.rerank_only.ci_low"] > r["abtest.lift_ci_high"]
    assert r["abtest.rerank_only.lift"] == pytest.approx(
        r["abtest.control.purchase_rate"] / r["abtest.policy.purchase_rate"] - 1, rel=1e-9)
    # "that figure mixes new candidates with a new order, and for a fixed ranker the new candidates are
    # worth far less"
    assert r["abtest.fused.ci_low"] > r["abtest.lift_ci_high"]
    assert r["abtest.fused.lift"] == pytest.approx(
        r["abtest.fused.purchase_rate"] / r["abtest.policy.purchase_rate"] - 1, rel=1e-9)


def test_the_aa_intervals_are_calibrated_over_many_runs(r):
    # issue 26's acceptance, and "the buyer bootstrap is calibrated here"; the committed tests are
    # current and this build's own first two reproduce them
    assert r["abtest.aa_calibration.current"] == 1 and r["abtest.aa_calibration.reproduced"] == 1
    assert r["abtest.aa_runs"] >= 100
    assert 0.93 <= r["abtest.aa_coverage"] <= 0.97
    assert r["abtest.aa_coverage_se"] == pytest.approx((0.95 * 0.05 / r["abtest.aa_runs"]) ** 0.5)


def test_a_split_test_is_wider_than_the_paired_comparison_and_still_sees_the_lift(r):
    # "... times as wide as the paired one"; "A lift this size shows in a split test of our window"
    assert r["abtest.split_width_ratio"] > 1
    assert r["abtest.split.ci_low"] < r["abtest.split.lift"] < r["abtest.split.ci_high"]
    assert r["abtest.split.ci_low"] > 0


def test_the_lift_is_clear_on_head_and_tail_queries_and_not_established_on_torso(r):
    for seg in ("head", "tail"):
        assert r[f"abtest.lift.{seg}.ci_low"] > 0, seg
    assert r["abtest.lift.torso.ci_low"] < 0 < r["abtest.lift.torso.ci_high"]
    # "The ranker takes the new candidates on every segment ..., on tail queries, where lexical
    # retrieval misses most" (the tail's share is the largest)
    for seg in ("head", "torso"):
        assert 0 < r[f"abtest.new_candidates_share.{seg}"] < r["abtest.new_candidates_share.tail"], seg


def test_long_and_short_histories_both_gain_and_no_history_is_too_wide_to_read(r):
    short, long_ = "abtest.lift.history_short", "abtest.lift.history_long"
    assert r[f"{long_}.ci_low"] > 0 and r[f"{short}.ci_low"] > 0
    assert r[f"{short}.ci_low"] < r[f"{long_}.ci_high"] and r[f"{long_}.ci_low"] < r[f"{short}.ci_high"]
    none_width = r["abtest.lift.history_none.ci_high"] - r["abtest.lift.history_none.ci_low"]
    assert none_width > 3 * (r[f"{long_}.ci_high"] - r[f"{long_}.ci_low"])  # "too wide to read"
    assert r["abtest.history_none_share"] < 0.05  # "the few requests from buyers with no earlier search"


def test_common_random_numbers_narrow_the_interval_a_little(r):
    assert 1 < r["abtest.crn_width_ratio"] < 2  # "narrowed ... less than one might hope"
    assert r["abtest.sessions_changed_clicks_share"] > 0.2  # why: the treatment changes many pages


def test_a_lift_the_size_of_the_papers_needs_more_than_the_test_window(r):
    # "it would need ... times our whole test window"; "Our own lift needs ... of the window"
    assert r["abtest.sessions_needed_total_over_test"] > 1
    assert r["abtest.sessions_needed_total_over_test"] == pytest.approx(2 * r["abtest.sessions_needed_over_test"])
    assert r["abtest.sessions_needed_own_total_over_test"] < 1
    assert r["abtest.sessions_needed_own_total_over_test"] == pytest.approx(
        2 * r["abtest.sessions_needed_own_over_test"])


def test_the_simulated_lift_for_the_same_ranker_is_above_the_papers(r):
    # "an interval above the paper's figure"
    assert r["abtest.lift_ci_low"] > r["paper.purchase_lift"]


# --- chapter 10: the verdict on the paper's claims ------------------------------------------------

#: The chapters' own record of each verdict row's comparison (the verdict must quote the same figures).
VERDICT_SOURCES = {
    "pretraining": "multiboot.pretraining.recall@100.tail",
    "term": "multiboot.term.recall@100.tail",
    "transformer": "multiboot.transformer.recall@100.all",
    "location": "multiboot.location.recall@100.all",
    "graph": "multiboot.graph.recall@100.all",
    "history": "multiboot.history.recall@100.head",
    "negatives": "multiboot.negatives.curriculum_minus_inbatch.recall@100.all",
    "curriculum": "multiboot.negatives.curriculum_minus_hard_from_start.recall@100.all",
    "hinge": "multiboot.losses.hinge_minus_softmax.recall@100.all",
    "boosting": "multiboot.boosting.additive_minus_none.recall@100.all",
}


def _verdict_of(r, key):
    low, high = r[f"verdict.{key}.ci_low"], r[f"verdict.{key}.ci_high"]
    return 1 if low > 0 else -1 if high < 0 else 0


def test_every_verdict_follows_its_interval_and_the_counts_add_up(r):
    keys = {k.split(".")[1] for k in r if k.startswith("verdict.") and k.endswith(".ci_low")}
    assert keys == set(VERDICT_SOURCES) | {"personalization", "abtest"}
    for key in keys:
        assert r[f"verdict.{key}"] == _verdict_of(r, key), key
    assert r["verdict.claims"] == len(keys)
    assert r["verdict.holds"] + r["verdict.not_established"] + r["verdict.reversed"] == r["verdict.claims"]
    assert r["verdict.reversed"] == 1  # "... and one is reversed"


def test_the_verdict_quotes_the_chapters_own_multi_bootstrap_figures(r):
    for key, source in VERDICT_SOURCES.items():
        for figure in ("mean", "ci_low", "ci_high"):
            assert r[f"verdict.{key}.{figure}"] == pytest.approx(r[f"{source}.{figure}"], abs=1e-12), key
        assert r[f"verdict.{key}.n_seeds"] >= 5
    for figure in ("mean", "ci_low", "ci_high"):
        assert r[f"verdict.personalization.{figure}"] == pytest.approx(
            r[f"multiboot.personalization.recall@100.head.{figure}"], abs=1e-12)
    assert (r["verdict.abtest.mean"], r["verdict.abtest.ci_low"]) == (r["abtest.lift"], r["abtest.lift_ci_low"])
    assert r["verdict.graph.n_seeds"] >= 10 and r["verdict.history.n_seeds"] >= 10


def test_most_of_the_papers_claims_hold_here(r):
    # "What holds is most of what the paper builds"
    for key in ("pretraining", "term", "transformer", "location", "history", "negatives", "curriculum",
                "boosting", "abtest"):
        assert r[f"verdict.{key}"] == 1, key
    # the history encoder's "if only just": its interval's lower end is within a fifth of a point of 0
    assert 0 < r["verdict.history.ci_low"] < 0.002


def test_only_the_graph_is_not_established(r):
    assert r["verdict.graph"] == 0 and r["verdict.not_established"] == 1
    # "at one seed, chapter 6's buyers-only intervals confirmed a graph gain that ... seeds do not show"
    assert r["seeds.graph.seed0_buyers_only.all.ci_low"] > 0


def test_personalization_holds_with_the_taste_block_and_the_hinge_is_reversed(r):
    assert r["verdict.personalization"] == 1 and r["verdict.personalization.ci_low"] > 0
    # "about ten times what the history encoder gains"
    assert 7 < r["verdict.personalization.mean"] / r["verdict.history.mean"] < 13
    assert r["verdict.hinge"] == -1 and r["verdict.hinge.ci_high"] < 0
