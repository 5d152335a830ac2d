"""duelpy peer adapter (issue 6): runs duelpy's PAC algorithms on our synthetic environment."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.harness.peers import PEER_ALGORITHMS, is_peer, peer_class_name, peer_fault, run_peer
from llmpo.harness.reference import reference_instance
from llmpo.harness.simulate import simulate

pytest.importorskip("duelpy", reason="duelpy peers need the extra llmpo[peers]")


def test_sequential_elimination_finds_the_condorcet_winner_of_bt5():
    summary = simulate(reference_instance("BT5"), "duelpy:SequentialElimination", 0.1, 10, 3)
    assert summary["errors"] == 0
    assert summary["uncertified"] == 0
    assert summary["mean_comparisons"] > 100
    assert summary["peer_fault"] is None


def test_every_peer_runs_and_counts_its_duels():
    instance = reference_instance("BT5")
    for name in PEER_ALGORITHMS:
        run = run_peer(f"duelpy:{name}", instance, 0.1, np.random.SeedSequence(0), 200_000)
        assert run.finished and 0 <= run.best < 5
        assert run.n_comparisons > 0


def test_a_budget_cuts_a_peer_and_is_counted():
    run = run_peer(
        "duelpy:KnockoutTournament",
        reference_instance("BT5"),
        0.1,
        np.random.SeedSequence(1),
        max_comparisons=50,
    )
    assert run.n_comparisons == 50
    assert not run.finished


def test_savage_fault_is_reported(tmp_path):
    assert "defective confidence radius" in peer_fault("duelpy:Savage")
    summary = simulate(reference_instance("BT5"), "duelpy:Savage", 0.1, 10, 0)
    assert "defective" in summary["peer_fault"]
    # About one duel per pair: 10 pairs.
    assert summary["mean_comparisons"] < 20
    path = tmp_path / "bt5.json"
    instance = reference_instance("BT5")
    path.write_text(
        json.dumps({"policies": list(instance.policies), "win_prob": instance.win_prob.tolist()})
    )
    result = CliRunner().invoke(
        app, ["simulate", str(path), "--strategy", "duelpy:Savage", "--reps", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert "defective confidence radius" in result.output


def test_peer_names_are_checked():
    assert is_peer("duelpy:OptMax") and not is_peer("knockout")
    assert peer_class_name("duelpy:OptMax") == "OptMax"
    with pytest.raises(ValueError, match="duelpy:SequentialElimination"):
        peer_class_name("duelpy:NoSuchAlgorithm")
    with pytest.raises(ValueError, match="epsilon"):
        simulate(reference_instance("BT5"), "duelpy:OptMax", 0.1, 2, 0, epsilon=0.1)


def test_peers_solving_an_easier_problem_are_flagged_in_the_table(tmp_path):
    pytest.importorskip("duelpy")
    from llmpo.harness.bench import load_suite, markdown_table, run_suite

    path = tmp_path / "suite.yaml"
    path.write_text(
        "reps: 2\ndeltas: [0.2]\ninstances: [{name: BT4, reference: BT4, strategies: ["
        "'duelpy:KnockoutTournament', {name: 'duelpy:PlackettLucePACItem', "
        "options: {epsilon: 0.0}}]}]\n"
    )
    cells = run_suite(load_suite(path))
    table = markdown_table(cells)
    assert "| duelpy:KnockoutTournament ‡ |" in table
    assert "epsilon = 0.05: may answer an ε-approximate winner" in table
    exact = next(c for c in cells if c.strategy.startswith("duelpy:Plackett"))
    assert "ε-approximate" not in exact.note and "Plackett–Luce" in exact.note


def test_a_peer_that_stalls_without_duels_is_stopped_and_counted_unfinished():
    # PlackettLucePACItem with ε = 0 on BT5: replication 8 of seed 2026 prunes every other
    # policy while the survivor's lower bounds stay below ½, then steps without dueling forever.
    seed = np.random.SeedSequence(2026).spawn(9)[8]
    run = run_peer(
        "duelpy:PlackettLucePACItem", reference_instance("BT5"), 0.01, seed, 300_000,
        {"epsilon": 0.0},
    )
    assert not run.finished and run.best == -1
    assert 0 < run.n_comparisons < 300_000
