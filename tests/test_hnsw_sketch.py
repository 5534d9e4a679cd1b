import numpy as np
import pytest

from retrieval_lib.serving.hnsw_sketch import greedy_descent, layered_graph


@pytest.fixture(scope="module")
def points():
    return np.random.default_rng(0).random((300, 2))


def test_layers_are_nested_and_thin_out(points):
    g = layered_graph(points, m=5, seed=0)
    counts = [len(layer) for layer in g.links]
    assert counts[0] == 300 and all(a > b for a, b in zip(counts, counts[1:], strict=False))
    assert len(g.links) == g.level.max() + 1
    for layer, links in enumerate(g.links):
        on = set(np.flatnonzero(g.level >= layer).tolist())
        assert set(links) == on
        for p, neighbours in links.items():
            assert p not in neighbours and set(neighbours.tolist()) <= on
            assert len(neighbours) == min(5, len(on) - 1)


def test_links_go_to_the_nearest_points_of_the_layer():
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [7.0, 0.0]])
    g = layered_graph(pts, m=2, seed=0)
    assert g.links[0][0].tolist() == [1, 2]
    assert g.links[0][3].tolist() == [2, 1]


def test_levels_follow_hnswlibs_rule():
    # floor(-ln U / ln m): with m = 4 about 1/4 of the points reach layer 1, 1/16 layer 2
    g = layered_graph(np.random.default_rng(1).random((4000, 2)), m=4, seed=1)
    share = [(g.level >= layer).mean() for layer in (1, 2)]
    assert share[0] == pytest.approx(0.25, abs=0.03) and share[1] == pytest.approx(1 / 16, abs=0.015)


def test_same_seed_same_graph(points):
    a, b = layered_graph(points, m=5, seed=3), layered_graph(points, m=5, seed=3)
    np.testing.assert_array_equal(a.level, b.level)


def test_greedy_descent_goes_down_every_layer_and_never_moves_away(points):
    g = layered_graph(points, m=5, seed=0)
    target = np.array([0.85, 0.15])
    path = greedy_descent(g, target)
    layers = [layer for layer, _ in path]
    assert layers[0] == len(g.links) - 1 and layers[-1] == 0
    assert layers == sorted(layers, reverse=True)
    assert path[0][1] == g.entry
    dist = [np.linalg.norm(points[p] - target) for _, p in path]
    assert all(b <= a for a, b in zip(dist, dist[1:], strict=False))
    end = path[-1][1]  # a local optimum of layer 0: no neighbour is closer
    assert all(np.linalg.norm(points[n] - target) >= dist[-1] for n in g.links[0][end])
    assert dist[-1] < 0.1


def test_bad_input_is_a_clear_error(points):
    with pytest.raises(ValueError, match="two points"):
        layered_graph(points[:1])
    with pytest.raises(ValueError, match="m must"):
        layered_graph(points, m=1)
    with pytest.raises(ValueError, match="dimension"):
        greedy_descent(layered_graph(points), np.zeros(3))
