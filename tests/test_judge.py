"""pipeline/judge.py: the control draws unused training equations with a generated set's topics, and the
papers a detector holds out come from the records."""
from __future__ import annotations

from pipeline.judge import control_equations, paper_groups


def test_control_draws_unused_training_equations_with_the_sets_topics():
    train = [{"id": f"{t}-{i}", "topic": t, "equation": f"x_{t} + {i}"} for t in (0, 1) for i in range(3)]
    out = control_equations(train, [0, 0, 1, 0, 0, None], seed=0)
    assert [r["topic"] for r in out[:5]] == [0, 0, 1, 0, 0]  # labelled as the generated equation would be
    assert len({r["id"] for r in out}) == len(out) == 6      # never the same record twice
    assert sum(r["id"].startswith("0-") for r in out[:3]) == 2 and out[2]["id"].startswith("1-")
    assert out[3]["id"].startswith("0-") and not out[4]["id"].startswith("0-")  # topic 0 ran out: any topic
    assert control_equations(train, [0] * 3, seed=1) != control_equations(train, [0] * 3, seed=2)
    assert len(control_equations(train, [1] * 9, seed=0)) == 6  # no more than the training split holds


def test_paper_groups_fall_back_to_the_id_and_give_up_without_either():
    assert paper_groups([{"paper": "p1", "id": "a"}, {"id": "b"}]) == ["p1", "b"]
    assert paper_groups([{"paper": "p1"}, {"equation": "x"}]) is None
