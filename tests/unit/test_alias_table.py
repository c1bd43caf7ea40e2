"""The alias table serving and batch keep: moves, deleted aliases and deleted versions, and what it pins."""

from __future__ import annotations

from shared.model_versions import AliasTable


def test_aliases_move_and_are_forgotten_with_their_versions_and_pin_what_they_point_at() -> None:
    table = AliasTable()
    table.move("credit", "production", 1)
    table.move("credit", "canary", 2)
    table.move("credit", "staging", 2)
    table.move("fraud", "production", 2)
    table.move("credit", "production", 3)

    assert table.of_model("credit") == {"production": 3, "canary": 2, "staging": 2}
    assert table.pinned() == {("credit", 3), ("credit", 2), ("fraud", 2)}

    assert table.forget("credit", "staging")
    assert not table.forget("credit", "staging")  # already gone
    table.forget_versions("credit", [2])  # fraud's version 2 is another model's

    assert table.get("credit", "canary") is None
    assert table.of_model("credit") == {"production": 3}
    assert table.get("fraud", "production") == 2
