"""SVM edit directions: extreme selection, training on synthetic data with a known normal, W+ per-row
directions, conditioning, and the direction file format with its validation."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from stylenerf_edit.directions.conditioning import condition, project_out
from stylenerf_edit.directions.direction import (Direction, DirectionError, load_direction, load_directions,
                                                 save_direction)
from stylenerf_edit.directions.scoring import evaluate_direction
from stylenerf_edit.directions.select import select_extremes
from stylenerf_edit.directions.svm import train_direction
from stylenerf_edit.generator.checkpoint import load_with_info
from stylenerf_edit.invert.latent import GeneratorRef

D = 64


@pytest.fixture(scope="module")
def info():
    return load_with_info("bundled:heads")[1]


def _gaussian(seed: int, n: int = 1000, dim: int = D, shift: float = 0.0):
    """Codes [n, dim] around a non-zero mean, spread 2.0 along a known unit normal and 0.2 across it; the
    score is the coordinate along the normal plus a little noise. Returns (codes, scores, normal)."""
    rng = np.random.default_rng(seed)
    normal = rng.standard_normal(dim)
    normal /= np.linalg.norm(normal)
    t = rng.normal(0.0, 2.0, n)
    codes = 0.5 + 0.2 * rng.standard_normal((n, dim)) + np.outer(t + shift, normal)
    scores = t + 0.05 * rng.standard_normal(n)
    return codes, scores, normal


@pytest.fixture(scope="module")
def trained():
    codes, scores, normal = _gaussian(0)
    return train_direction(codes, scores, "smile", seed=0, C="auto"), codes, scores, normal


# --- selection ------------------------------------------------------------------------------------------

SCORES = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 0.0])


def test_select_by_ratio():
    sel = select_extremes(SCORES, ratio=0.2)
    assert sel.positive.tolist() == [2, 6]            # 9, 8
    assert sel.negative.tolist() == [9, 1]            # 0, 1
    assert sel.remaining.tolist() == [0, 3, 4, 5, 7, 8]
    assert sel.threshold == 4.5                       # halfway between 8's group floor 8 and 1's ceiling 1


def test_select_by_count_overrides_ratio():
    sel = select_extremes(SCORES, ratio=0.1, count=3)
    assert sel.positive.tolist() == [2, 6, 4]
    assert sel.negative.tolist() == [9, 1, 5]
    assert sel.remaining.tolist() == [0, 3, 7, 8]


def test_select_ignores_nan():
    scores = SCORES.copy()
    scores[[2, 3]] = [np.nan, np.inf]                 # drop the top score and a middle one: 8 finite left
    sel = select_extremes(scores, ratio=0.25)         # floor(0.25 * 8) = 2 per side
    assert sel.positive.tolist() == [6, 4]
    assert sel.negative.tolist() == [9, 1]
    assert sel.remaining.tolist() == [0, 5, 7, 8]
    assert not {2, 3} & set(np.concatenate([sel.positive, sel.negative, sel.remaining]).tolist())


@pytest.mark.parametrize("kwargs, scores, match", [
    ({"count": 6}, SCORES, "overlap"),
    ({"count": 2}, np.ones(10), "overlap in score"),
    ({"ratio": 0.2}, np.array([1.0, 2.0, np.nan, np.nan]), "too few"),
    ({"ratio": 0.7}, SCORES, "ratio must be"),
    ({"ratio": None}, SCORES, "either ratio"),
    ({"count": 0}, SCORES, "count must be"),
])
def test_select_errors(kwargs, scores, match):
    with pytest.raises(DirectionError, match=match) as e:
        select_extremes(scores, **kwargs)
    assert "\n" not in str(e.value)


# --- training in W ----------------------------------------------------------------------------------------

def test_recovers_known_normal(trained):
    d, codes, scores, normal = trained
    assert d.space == "w" and d.method == "linear-svc" and d.rows is None
    assert d.vector.dtype == np.float32 and d.vector.shape == (D,)
    assert abs(np.linalg.norm(d.vector) - 1) < 1e-6
    assert float(d.vector @ normal) > 0.98            # and positive: toward higher scores
    assert d.val_accuracy > 0.95 and d.remaining_accuracy > 0.9
    assert d.correlation > 0.95
    assert d.score_per_unit == pytest.approx(1.0, abs=0.1)   # score = coordinate along the normal
    assert (d.n_samples, d.n_positive, d.n_negative) == (1000, 200, 200)
    assert d.settings["C"] in [row[0] for row in d.settings["auto_C"]]
    flipped = train_direction(codes, -scores, "frown", seed=0, C="auto")
    assert float(flipped.vector @ normal) < -0.98


def test_auto_c_beats_a_weakly_regularised_svm():
    """On extremes of noisy scores in 64-d, C=1 (InterFaceGAN's) fits noise; "auto" cross-validates it away."""
    codes, scores, normal = _gaussian(4, n=600)
    scores = scores + np.random.default_rng(4).normal(0.0, 1.0, len(scores))
    fixed = train_direction(codes, scores, "a", seed=0, C=1.0)
    auto = train_direction(codes, scores, "a", seed=0, C="auto")
    assert fixed.settings == {"ratio": 0.2, "count": None, "split": 0.7, "C": 1.0}
    assert auto.settings["C"] < 1.0
    assert float(auto.vector @ normal) > float(fixed.vector @ normal) + 0.05
    assert auto.correlation > fixed.correlation


def test_offset_follows_a_shift_of_the_data():
    codes, scores, normal = _gaussian(1)
    shift = 3.0
    base = train_direction(codes, scores, "a", seed=0)
    moved = train_direction(codes + shift * normal, scores, "a", seed=0)
    np.testing.assert_allclose(moved.vector, base.vector, atol=1e-5)
    assert moved.offset == pytest.approx(base.offset - shift * float(base.vector @ normal), abs=1e-4)
    for d in (base, moved):                           # the plane stays between the classes, not at the origin
        assert abs(float(d.distance(d.center[None])[0])) < 0.1
    np.testing.assert_allclose(moved.distance(codes + shift * normal), base.distance(codes), atol=1e-3)


def test_offset_is_the_fewest_errors_widest_gap_cut():
    from stylenerf_edit.directions.svm import _best_cut

    assert _best_cut(np.array([5.0, 0.0, 6.0, 1.0, 2.0]), np.array([1, 0, 1, 0, 0])) == 3.5
    # one error at best, after 1.0 (gap 1.5) or after 3.0 (gap 1.0): the wider gap wins
    assert _best_cut(np.array([0.0, 1.0, 2.5, 3.0, 4.0, 10.0]), np.array([0, 0, 1, 0, 1, 1])) == 1.75


def test_seeded():
    codes, scores, _ = _gaussian(2, n=400)
    for C in (1.0, "auto"):
        a, b = (train_direction(codes, scores, "a", seed=5, C=C) for _ in range(2))
        np.testing.assert_array_equal(a.vector, b.vector)
        assert (a.offset, a.val_accuracy, a.settings) == (b.offset, b.val_accuracy, b.settings)
    assert not np.array_equal(train_direction(codes, scores, "a", seed=6).vector, a.vector)


def test_distance_and_unit_step(trained):
    d, codes, _, _ = trained
    ws = np.repeat(codes[:5, None], 9, axis=1)        # sampled latents: every row equal
    np.testing.assert_allclose(d.distance(ws), d.distance(codes[:5]), atol=1e-6)
    delta = d.as_ws_delta(9)
    assert delta.shape == (9, D) and delta.dtype == np.float32
    np.testing.assert_allclose(d.distance(ws + 2.5 * delta), d.distance(ws) + 2.5, atol=1e-5)
    partial = d.as_ws_delta(9, rows=[0, 3])
    assert np.abs(partial[[1, 2, 4, 5, 6, 7, 8]]).max() == 0 and np.array_equal(partial[3], d.vector)
    with pytest.raises(DirectionError, match="do not fit"):
        d.as_ws_delta(9, rows=[9])
    mixed = np.random.default_rng(0).standard_normal((3, 9, D))
    on_rows = replace(d, rows=[1, 2])
    np.testing.assert_allclose(on_rows.distance(mixed), d.distance(mixed[:, 1:3].mean(1)), atol=1e-9)
    np.testing.assert_allclose(on_rows.distance(mixed + on_rows.as_ws_delta(9)), on_rows.distance(mixed) + 1,
                               atol=1e-5)


def test_training_errors():
    codes, scores, _ = _gaussian(3, n=100)
    with pytest.raises(DirectionError, match="one score per code"):
        train_direction(codes, scores[:-1], "a")
    with pytest.raises(DirectionError, match="method must be"):
        train_direction(codes, scores, "a", method="svm")
    with pytest.raises(DirectionError, match="too few"):
        train_direction(codes, scores, "a", count=1)
    with pytest.raises(DirectionError, match="C must be"):
        train_direction(codes, scores, "a", C=0.0)
    with pytest.raises(DirectionError, match="3 training samples per side"):
        train_direction(codes, scores, "a", count=3, C="auto")
    bad = codes.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DirectionError, match="NaN"):
        train_direction(bad, scores, "a")


# --- W+ per-row -----------------------------------------------------------------------------------------

def _per_row(seed: int, n: int = 800, rows: int = 4, dim: int = 32, informative: int = 2):
    rng = np.random.default_rng(seed)
    normal = rng.standard_normal(dim)
    normal /= np.linalg.norm(normal)
    codes = 0.3 * rng.standard_normal((n, rows, dim))
    t = rng.normal(0.0, 2.0, n)
    codes[:, informative] += np.outer(t, normal)
    return codes, t + 0.05 * rng.standard_normal(n), normal


def test_per_row_direction_concentrates_on_the_informative_row():
    codes, scores, normal = _per_row(0)
    d = train_direction(codes, scores, "jaw", seed=0, C="auto")
    assert d.space == "w+" and d.method == "sgd" and d.rows == [0, 1, 2, 3] and d.vector.shape == (4, 32)
    row_norms = np.linalg.norm(d.vector, axis=1)
    assert row_norms[2] > 0.95 and np.delete(row_norms, 2).max() < 0.2
    assert float(d.vector[2] @ normal) > 0.95 and d.val_accuracy > 0.95
    delta = d.as_ws_delta(4)
    np.testing.assert_allclose(d.distance(codes[:3] + delta), d.distance(codes[:3]) + 1, atol=1e-5)
    forced = train_direction(codes, scores, "jaw", seed=0, method="linear-svc", C="auto")
    assert forced.method == "linear-svc" and float((forced.vector * d.vector).sum()) > 0.95


def test_per_row_direction_on_chosen_rows():
    codes, scores, _ = _per_row(1)
    d = train_direction(codes, scores, "jaw", rows=[1, 2], seed=0)
    assert d.rows == [1, 2] and d.vector.shape == (2, 32) and d.center.shape == (2, 32)
    delta = d.as_ws_delta(4)
    assert np.abs(delta[[0, 3]]).max() == 0 and np.array_equal(delta[1:3], d.vector)
    assert np.array_equal(d.as_ws_delta(4, rows=[2])[2], d.vector[1])
    with pytest.raises(DirectionError, match="per-row"):
        d.as_ws_delta(4, rows=[0, 1])


# --- conditioning ---------------------------------------------------------------------------------------

def test_project_out_removes_the_whole_span():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 512))
    others = [a, a + 0.5 * b, a + b + 0.1 * rng.standard_normal(512), 2 * a]   # far from orthogonal, dependent
    v = project_out(rng.standard_normal(512) + 3 * a, others)
    assert abs(np.linalg.norm(v) - 1) < 1e-12
    assert max(abs(float(v @ (o / np.linalg.norm(o)))) for o in others) < 1e-6
    with pytest.raises(DirectionError, match="span"):
        project_out(2 * a - 3 * b, [a, b])


def test_condition(trained):
    d, codes, scores, normal = trained
    rng = np.random.default_rng(7)
    others = []
    for name in ("age", "glasses"):
        v = normal + rng.standard_normal(D)            # correlated with the smile normal
        others.append(replace(d, attribute=name, vector=v / np.linalg.norm(v), conditioned_on=[]))
    c = condition(d, others)
    assert abs(np.linalg.norm(c.vector) - 1) < 1e-6
    assert c.conditioned_on == ["age", "glasses"] and d.conditioned_on == []
    assert max(abs(float(c.vector @ o.vector)) for o in others) < 1e-5
    # both planes hold the foot of the class mid-point on the original plane
    foot = d.center - d.distance(d.center[None])[0] * d.vector
    assert abs(float(c.distance(foot[None])[0])) < 1e-4 and abs(float(d.distance(foot[None])[0])) < 1e-4
    assert math.isnan(c.val_accuracy) and math.isnan(c.correlation)
    cosine = float(c.vector.astype(np.float64) @ d.vector)
    assert c.score_per_unit == pytest.approx(d.score_per_unit * cosine, rel=1e-5)
    measured = evaluate_direction(c, codes, scores)
    assert measured.score_per_unit == pytest.approx(c.score_per_unit, rel=0.2) and measured.correlation > 0
    assert condition(c, others[:1]).conditioned_on == ["age", "glasses"]
    bare = condition(replace(d, center=None), others)          # no center: keep the origin's foot on the plane
    foot = -d.offset * d.vector.astype(np.float64)
    assert abs(float(bare.distance(foot[None])[0])) < 1e-4
    per_row = train_direction(*_per_row(2)[:2], "jaw", seed=0)
    with pytest.raises(DirectionError, match="train both alike"):
        condition(d, [per_row])


# --- files ----------------------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path, trained, info):
    d, codes, _, _ = trained
    d = replace(d, generator=GeneratorRef.from_info(replace(info, config=replace(info.config, w_dim=D))),
                labeler="synthetic", rows=[0, 1, 2])
    path = save_direction(d, tmp_path / "sub" / "smile.npz")
    assert sorted(p.name for p in path.parent.iterdir()) == ["smile.npz"]     # no temp file left
    back = load_direction(path)
    for key in ("attribute", "space", "rows", "offset", "val_accuracy", "remaining_accuracy", "correlation",
                "score_per_unit", "n_samples", "n_positive", "n_negative", "conditioned_on", "generator",
                "labeler", "method", "seed", "settings", "tool_version"):
        assert getattr(back, key) == getattr(d, key), key
    np.testing.assert_array_equal(back.vector, d.vector)
    np.testing.assert_array_equal(back.center, d.center)
    np.testing.assert_allclose(back.distance(codes), d.distance(codes), atol=1e-9)

    conditioned = condition(d, [replace(d, attribute="age", vector=np.roll(d.vector, 1))])
    back = load_directions([save_direction(conditioned, tmp_path / "c.npz")])[0]
    assert math.isnan(back.val_accuracy) and back.conditioned_on == ["age"]
    assert back.score_per_unit == conditioned.score_per_unit

    codes_r, scores_r, _ = _per_row(3, rows=3)
    per_row = train_direction(codes_r, scores_r, "jaw", seed=0)
    back = load_direction(save_direction(per_row, tmp_path / "jaw.npz"))
    assert back.space == "w+" and back.rows == [0, 1, 2] and np.array_equal(back.vector, per_row.vector)


def _write(path, meta_changes=None, arrays=None, trained_direction=None):
    """A direction file like save_direction's, with some meta keys or arrays replaced (None removes)."""
    save_direction(trained_direction, path)
    with np.load(path, allow_pickle=False) as z:
        entries = {k: z[k] for k in z.files}
    meta = json.loads(str(entries["meta"]))
    for k, v in (meta_changes or {}).items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    entries["meta"] = np.array(json.dumps(meta))
    for k, v in (arrays or {}).items():
        if v is None:
            entries.pop(k)
        else:
            entries[k] = v
    np.savez(path, **entries)
    return path


@pytest.mark.parametrize("meta_changes, arrays, match", [
    ({"format": "stylenerf-edit-latent"}, None, "not a stylenerf-edit direction"),
    ({"format_version": 2}, None, "newer than this tool"),
    ({"offset": None}, None, "lacks a valid"),
    ({"space": "z"}, None, "lacks a valid"),
    ({"rows": [1, 1]}, None, "lacks a valid"),
    ({"generator": {"name": "x"}}, None, "lacks a valid"),
    (None, {"meta": None}, "no 'meta'"),
    (None, {"meta": np.array("{not json")}, "not valid JSON"),
    (None, {"vector": np.full(D, np.nan, np.float32)}, "NaN"),
    (None, {"vector": np.ones(D, np.int32)}, "float array"),
    (None, {"vector": np.full((2, D), 0.125, np.float32)}, "cannot have a vector of shape"),
    (None, {"vector": np.full(D, 0.5, np.float32)}, "norm 4, not 1"),
    (None, {"center": np.zeros(D + 1, np.float32)}, "'center' has shape"),
    ({"space": "w+", "rows": [0, 1]}, None, "cannot have a vector of shape"),
])
def test_load_rejects(tmp_path, trained, meta_changes, arrays, match):
    path = _write(tmp_path / "bad.npz", meta_changes, arrays, trained[0])
    with pytest.raises(DirectionError, match=match) as e:
        load_direction(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_load_rejects_missing_and_foreign_files(tmp_path):
    cases = {tmp_path / "missing.npz": "no such direction file"}
    (tmp_path / "text.npz").write_text("hello")
    np.save(tmp_path / "array.npy", np.zeros(3))
    cases.update({tmp_path / "text.npz": "not a readable .npz", tmp_path / "array.npy": "not a readable .npz"})
    for path, match in cases.items():
        with pytest.raises(DirectionError, match=match) as e:
            load_direction(path)
        assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_generator_checks(tmp_path, info):
    rng = np.random.default_rng(0)
    v = rng.standard_normal(512)
    d = Direction(attribute="smile", vector=v / np.linalg.norm(v), space="w", rows=None, offset=0.5,
                  generator=GeneratorRef.from_info(info))
    path = save_direction(d, tmp_path / "smile.npz")
    assert load_direction(path, generator=info).generator == d.generator

    other = replace(info, name="other-model", weights_sha256="f" * 64)
    with pytest.raises(DirectionError, match="made for 'bundled:heads' .* not for 'other-model'") as e:
        load_direction(path, generator=other)
    assert "\n" not in str(e.value)
    narrow = replace(info, config=replace(info.config, w_dim=256))
    with pytest.raises(DirectionError, match="does not fit"):
        load_direction(path, generator=narrow)

    num_ws = info.config.num_ws
    unowned = replace(d, generator=None, rows=[num_ws])               # no record: shapes still checked
    with pytest.raises(DirectionError, match="does not fit"):
        load_direction(save_direction(unowned, tmp_path / "rows.npz"), generator=info)
    assert load_direction(save_direction(replace(unowned, rows=[0]), tmp_path / "ok.npz"), generator=info).rows == [0]
    with pytest.raises(DirectionError, match="its own generator record"):
        load_direction(save_direction(replace(d, rows=[num_ws]), tmp_path / "own.npz"))
