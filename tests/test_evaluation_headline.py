"""`llmpo evaluate`'s headline says what its interval is about (issue 13, point 5): the held-out
tasks themselves when they repeat, new questions like them only when each was used once."""

import pytest

from llmpo.runtime.evaluation import summarize_evaluation
from llmpo.store import ComparisonRecord, Store


def _evaluation(tmp_path, outcomes, tasks, held_out_tasks, held_out_records=None):
    store = Store(tmp_path / "runs.db", writer=True)
    experiment = store.create_experiment({"environment": {"type": "llm"}}, ["quiz", "chatty"])
    store.set_status(experiment, "certified", {"certified": True, "best": "quiz"})
    evaluation = store.create_evaluation(
        experiment,
        "quiz",
        "chatty",
        {"held_out_tasks": held_out_tasks, "held_out_records": held_out_records},
    )
    for seq, (outcome, task) in enumerate(zip(outcomes, tasks, strict=True), start=1):
        store.append_evaluation_comparison(
            evaluation, ComparisonRecord(seq, 0, 1, outcome, task, "ab", None, 0.0, 1.0)
        )
    return store, store.evaluation(evaluation)


def test_repeated_tasks_the_interval_is_for_these_tasks_not_new_questions(tmp_path):
    held = [f"t{k}" for k in range(21)]
    outcomes = [1.0] * 120 + [0.0] * 80  # 60%
    store, evaluation = _evaluation(tmp_path, outcomes, [held[k % 21] for k in range(200)], held)
    with store:
        sentence = summarize_evaluation(store, evaluation)["sentence"]
    assert sentence.startswith(
        "Policy quiz beats today's policy chatty in 60% of 200 comparisons on the same 21 "
        "held-out tasks, asked again with fresh answers (95% CI "
    )
    assert "for its win rate on these 21 tasks, not on new questions at large)" in sentence
    assert "60% of new questions" not in sentence  # the overclaim of earlier versions


def test_each_task_once_the_interval_is_for_new_questions_like_them(tmp_path):
    held = [f"t{k}" for k in range(50)]
    store, evaluation = _evaluation(tmp_path, [1.0] * 30 + [0.5] * 10, held[:40], held)
    with store:
        sentence = summarize_evaluation(store, evaluation)["sentence"]
    assert "in 88% of 40 comparisons on 40 held-out tasks, each once (95% CI" in sentence
    assert "for its win rate on new questions like these held-out ones; 10 were ties" in sentence


@pytest.mark.parametrize(
    ("held_out_tasks", "records", "where", "about"),
    [
        (["t0", "t1"], 50, "on recorded judgments of held-out tasks", "judgments like these"),
        ([], None, "of fresh simulated outcomes", "its probability of winning a comparison"),
    ],
)
def test_replay_and_synthetic_scopes(tmp_path, held_out_tasks, records, where, about):
    tasks = ["t0", "t1"] * 10 if held_out_tasks else [None] * 20
    store, evaluation = _evaluation(tmp_path, [1.0, 0.0] * 10, tasks, held_out_tasks, records)
    with store:
        sentence = summarize_evaluation(store, evaluation)["sentence"]
    assert where in sentence and about in sentence and "not shown better" in sentence
