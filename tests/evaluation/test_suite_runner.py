"""Attacker suites: their specification (attacks.suites), the scoring
rules, runs on a CNN trained on real Fashion-MNIST, and resume after an
interruption (evaluation.suite_runner)."""

import dataclasses
import json

import numpy as np
import pytest

from attacks.suites import SUITES, Attacker, get_suite
from evaluation.suite_runner import run_suite, summarize, to_markdown


@pytest.fixture(scope="module")
def cnn(fmnist_cnn):
    from tests.conftest import load_cnn

    return load_cnn(fmnist_cnn)


def _batches(x, y, size):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


def test_caad_targeted_follows_xie_et_al():
    suite = get_suite("caad_targeted")
    assert suite.eps == pytest.approx(16 / 255)
    assert [a.config["steps"] for a in suite.attackers] == [10, 100, 1000]
    for a in suite.attackers:
        assert a.target == "random" and a.config["targeted"]
        assert a.config["rand_init"]
        assert a.config["step_size"] == pytest.approx(
            max(1 / 255, 16 / 255 / a.config["steps"]))
    assert get_suite("caad_targeted", steps=[3, 7]).attackers[1].label == (
        "pgd-7_targeted")


def test_suite_specs_and_errors():
    assert set(SUITES) == {"caad_targeted", "caad_blackbox",
                           "autoattack_like", "seed_lectures"}
    aa = get_suite("autoattack_like", eps=0.1)
    names = [a.config["name"] for a in aa.attackers]
    assert names == ["apgd_ce"] + ["apgd_dlr"] * 9 + ["square"]
    assert [a.rank for a in aa.attackers[1:10]] == list(range(1, 10))
    bb = get_suite("caad_blackbox", surrogates=2)
    assert bb.eps == pytest.approx(32 / 255) and bb.scoring == (
        "all_or_nothing")
    assert all(a.transfer for a in bb.attackers)
    with pytest.raises(ValueError, match="at least one surrogate"):
        get_suite("caad_blackbox")
    with pytest.raises(ValueError, match=r"suite must be one of \("):
        get_suite("caad")
    with pytest.raises(ValueError, match="eps must be > 0; got -0.1"):
        get_suite("seed_lectures", eps=-0.1)
    with pytest.raises(ValueError, match="steps must be integers >= 1"):
        get_suite("caad_targeted", steps=[0])
    with pytest.raises(ValueError, match="takes one steps value"):
        get_suite("autoattack_like", steps=[1, 2])
    with pytest.raises(ValueError, match=r"takes the options \[.queries., .targets.\]"):
        get_suite("autoattack_like", restarts=3)


def test_all_or_nothing_counts_an_image_only_if_every_attacker_fails():
    suite = dataclasses.replace(
        get_suite("autoattack_like", targets=1), attackers=(
            Attacker("a", {"name": "fgsm"}), Attacker("b", {"name": "fgsm"}),
            Attacker("m", {"name": "cw_l2"}, min_norm=True)))
    z = [0.0] * 5
    records = [{"batch": 0, "n": 5, "clean": [1, 1, 1, 1, 0], "attackers": {
        "a": {"correct": [1, 1, 0, 1, 0], "target_hit": None, "l2": z,
              "linf": z},
        "b": {"correct": [1, 0, 1, 1, 1], "target_hit": None, "l2": z,
              "linf": z},
        "m": {"correct": [0, 0, 0, 0, 0], "target_hit": None, "l2": z,
              "linf": z}}}]
    out = summarize(suite, records)
    # a: images 0, 1, 3 -> 3/5; b: 0, 2, 3 (image 4 was wrong clean) -> 3/5
    assert out["attackers"]["a"]["accuracy"] == pytest.approx(0.6)
    assert out["attackers"]["b"]["accuracy"] == pytest.approx(0.6)
    # both: images 0 and 3; the min-norm attacker is left out
    assert out["all_or_nothing_acc"] == pytest.approx(0.4)
    assert out["min_attacker_acc"] == pytest.approx(0.6)
    assert out["attackers"]["m"]["success_rate"] == pytest.approx(1.0)
    assert "All-or-nothing accuracy" in to_markdown(out)


def test_random_and_top_wrong_targets():
    """Random targets: seeded per (seed, batch), never the label; top_wrong
    rank r: the r-th largest logit among the wrong classes."""
    from evaluation.suite_runner import _labels

    y = np.array([0, 1, 2, 3, 1], np.int32)
    logits = np.array([[9, 1, 5, 3], [8, 9, 7, 0], [1, 2, 9, 3],
                       [4, 4, 1, 9], [0, 0, 0, 5]], np.float32)
    for rank, expected in [(1, [2, 0, 3, 0, 3]), (2, [3, 2, 1, 1, 0])]:
        labels, target = _labels(Attacker("t", {}, target="top_wrong",
                                          rank=rank), y, logits, 4, 0, 0)
        np.testing.assert_array_equal(np.asarray(target), expected)
        assert labels is target
    random = Attacker("r", {}, target="random")
    draws = [np.asarray(_labels(random, np.repeat(y, 20), None, 4, s, b)[1])
             for s, b in [(0, 0), (0, 0), (0, 1), (1, 0)]]
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], draws[2])
    assert not np.array_equal(draws[0], draws[3])
    for d in draws:
        assert d.dtype == np.int32 and np.all(d != np.repeat(y, 20))
        assert set(d) <= {0, 1, 2, 3}
    assert _labels(Attacker("l", {}), y, logits, 4, 0, 0) == (y, None)


def test_caad_targeted_on_a_trained_cnn(cnn, fmnist_test):
    x, y = fmnist_test[0][:200], fmnist_test[1][:200]
    suite = get_suite("caad_targeted", eps=0.1, steps=[1, 10])
    out = run_suite(cnn, _batches(x, y, 100), suite, num_classes=10,
                    progress=False)
    one, ten = (out["attackers"][f"pgd-{n}_targeted"] for n in (1, 10))
    print("caad_targeted eps 0.1:", out["clean_acc"], one, ten)
    # A targeted attack optimises the target's score: more iterations hit
    # the target more often (accuracy need not fall monotonically: one big
    # step of eps mislabels more images, towards any class).
    assert max(one["accuracy"], ten["accuracy"]) < out["clean_acc"]
    assert ten["target_success_rate"] > one["target_success_rate"] > 0
    assert ten["max_linf"] <= 0.1 + 1e-6
    again = run_suite(cnn, _batches(x, y, 100), suite, num_classes=10,
                      progress=False)
    assert again == out  # seeded targets and starts


def test_autoattack_like_worst_case(cnn, fmnist_test):
    x, y = fmnist_test[0][:100], fmnist_test[1][:100]
    suite = get_suite("autoattack_like", eps=0.05, steps=10, targets=2,
                      queries=100)
    out = run_suite(cnn, _batches(x, y, 50), suite, num_classes=10,
                    progress=False)
    accs = {k: v["accuracy"] for k, v in out["attackers"].items()}
    print("autoattack_like eps 0.05:", out["clean_acc"], accs,
          out["all_or_nothing_acc"])
    assert out["all_or_nothing_acc"] <= min(accs.values())
    assert out["min_attacker_acc"] == min(accs.values())
    assert all(v["max_linf"] <= 0.05 + 1e-6
               for v in out["attackers"].values())


def test_blackbox_suite_crafts_on_surrogates_only(cnn, fmnist_test):
    """The target is never queried by the transfer attackers: replacing
    it by another model changes no adversarial example."""
    import keras

    x, y = fmnist_test[0][:100], fmnist_test[1][:100]
    surrogate = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Flatten(),
        keras.layers.Dense(10)])
    surrogate.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    surrogate.fit(x, y, epochs=30, verbose=0)
    suite = get_suite("caad_blackbox", eps=0.1, surrogates=1, steps=5)
    out = run_suite(cnn, _batches(x, y, 50), suite, num_classes=10,
                    surrogates=[surrogate], progress=False)
    accs = {k: v["accuracy"] for k, v in out["attackers"].items()}
    print("caad_blackbox eps 0.1:", out["clean_acc"], accs,
          out["all_or_nothing_acc"])
    assert out["all_or_nothing_acc"] <= min(accs.values())
    assert set(accs) == {"mi_fgsm_ensemble", "mi_fgsm_ensemble_targeted",
                         "ifgsm_s0", "ifgsm_targeted_s0", "illc_s0"}

    class Spy:
        calls = 0

        def __call__(self, x, training=False):
            Spy.calls += 1
            return cnn(x, training=training)

    run_suite(cnn, _batches(x, y, 50), suite, num_classes=10,
              surrogates=[surrogate], attack_model=Spy(), progress=False)
    assert Spy.calls == 0


def test_seed_lectures_reports_min_norm_attacks_apart(cnn,
                                                      fmnist_test):
    x, y = fmnist_test[0][:8], fmnist_test[1][:8]
    cheap = {"cw_l2": {"name": "cw_l2", "steps": 20,
                       "binary_search_steps": 2},
             "deepfool": {"name": "deepfool", "steps": 20},
             "one_pixel": {"name": "one_pixel", "popsize": 20, "steps": 3}}
    suite = get_suite("seed_lectures", eps=0.1)
    suite = dataclasses.replace(suite, attackers=tuple(
        dataclasses.replace(a, config=cheap.get(a.label, a.config))
        for a in suite.attackers))
    out = run_suite(cnn, _batches(x, y, 8), suite, num_classes=10,
                    progress=False)
    assert list(out["attackers"]) == ["fgsm", "bim-20", "illc", "pgd-20",
                                      "cw_l2", "deepfool", "one_pixel"]
    assert out["attackers"]["deepfool"]["min_norm"]
    assert out["attackers"]["deepfool"]["success_rate"] > 0.5
    assert out["attackers"]["pgd-20"]["max_linf"] <= 0.1 + 1e-6
    assert "all_or_nothing_acc" not in out


def test_a_killed_evaluation_resumes_where_it_stopped(
        cnn, fmnist_test, tmp_path):
    x, y = fmnist_test[0][:150], fmnist_test[1][:150]
    suite = get_suite("caad_targeted", eps=0.1, steps=[3])
    log = tmp_path / "suite.jsonl"
    ident = {"model": "cnn"}

    def killed_after(n):
        for i, batch in enumerate(_batches(x, y, 50)):
            if i == n:
                raise KeyboardInterrupt
            yield batch

    with pytest.raises(KeyboardInterrupt):
        run_suite(cnn, killed_after(2), suite, num_classes=10,
                  log_path=log, identity=ident, progress=False)
    assert len(log.read_text().splitlines()) == 1 + 2  # header + 2 batches
    calls = []

    def predict(v):
        calls.append(int(v.shape[0]))
        return cnn(v, training=False)

    resumed = run_suite(cnn, _batches(x, y, 50), suite,
                        num_classes=10, log_path=log, identity=ident,
                        predict=predict, progress=False)
    assert len(calls) == 2  # clean + adversarial of the last batch only
    fresh = run_suite(cnn, _batches(x, y, 50), suite, num_classes=10,
                      progress=False)
    assert resumed == fresh and resumed["n"] == 150
    with pytest.raises(ValueError, match="log of another evaluation"):
        run_suite(cnn, _batches(x, y, 50), suite, num_classes=10,
                  log_path=log, identity={"model": "other"}, progress=False)
    assert json.loads(log.read_text().splitlines()[0])["identity"] == ident
