from qsearch.search.results import TrialRecord, best_trial, dominates, pareto_front

OBJECTIVES = ["accuracy", "weight_memory"]
DIRECTIONS = ["maximize", "minimize"]


def _trial(number, accuracy, memory, state="COMPLETE", feasible=True):
    return TrialRecord(
        number=number,
        state=state,
        params={},
        values={"accuracy": accuracy, "weight_memory": memory},
        metrics={"val_accuracy": accuracy, "weight_memory_bits": memory * 8},
        feasible=feasible,
    )


def test_dominates_strict_and_equal():
    assert dominates([1.0, 1.0], [1.0, 2.0])
    assert not dominates([1.0, 2.0], [1.0, 2.0])
    assert not dominates([0.0, 3.0], [1.0, 2.0])


def test_pareto_front_keeps_non_dominated():
    trials = [
        _trial(0, 0.90, 1000),
        _trial(1, 0.95, 2000),
        _trial(2, 0.85, 1500),  # dominated by trial 0
        _trial(3, 0.97, 4000),
        _trial(4, 0.96, 4000),  # dominated by trial 3
        _trial(5, 0.99, 500, state="FAIL"),
        _trial(6, 0.0, 100, feasible=False),
    ]
    front = pareto_front(trials, OBJECTIVES, DIRECTIONS)
    assert [t.number for t in front] == [0, 1, 3]


def test_pareto_front_keeps_ties():
    trials = [_trial(0, 0.9, 1000), _trial(1, 0.9, 1000)]
    assert [t.number for t in pareto_front(trials, OBJECTIVES, DIRECTIONS)] == [0, 1]


def test_best_trial_prefers_smaller_memory_on_tie():
    trials = [_trial(0, 0.95, 2000), _trial(1, 0.95, 1000), _trial(2, 0.90, 10)]
    assert best_trial(trials).number == 1


def test_best_trial_none_without_trained():
    assert best_trial([_trial(0, 0.0, 10, feasible=False)]) is None


def test_pareto_front_two_objectives_matches_pairwise():
    import random

    rng = random.Random(0)
    trials = [
        _trial(n, rng.choice([0.8, 0.85, 0.9, 0.95]), rng.choice([100, 200, 300, 400]))
        for n in range(200)
    ]
    expected = [
        t.number
        for t in trials
        if not any(dominates(_signed_pair(o), _signed_pair(t)) for o in trials)
    ]
    front = pareto_front(trials, OBJECTIVES, DIRECTIONS)
    assert [t.number for t in front] == expected


def test_pareto_front_three_objectives():
    trials = [
        TrialRecord(0, "COMPLETE", {}, {"accuracy": 0.9, "weight_memory": 100, "bitops": 5}, {}),
        TrialRecord(1, "COMPLETE", {}, {"accuracy": 0.9, "weight_memory": 100, "bitops": 4}, {}),
        TrialRecord(2, "COMPLETE", {}, {"accuracy": 0.8, "weight_memory": 50, "bitops": 9}, {}),
    ]
    front = pareto_front(trials, [*OBJECTIVES, "bitops"], [*DIRECTIONS, "minimize"])
    assert [t.number for t in front] == [1, 2]


def _signed_pair(trial):
    return [-trial.values["accuracy"], trial.values["weight_memory"]]
