"""mcn.configs: dict round trips of frozen nested configs and typed ``section.key=value`` overrides."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from mcn.configs import apply_overrides, config_from_dict, config_to_dict, parse_assignments, parse_value
from mcn.errors import MCNError


@dataclass(frozen=True, kw_only=True)
class Inner:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    name: str | None = None
    mode: Literal["a", "b"] = "a"

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise MCNError(f"inner.lr must be > 0, got {self.lr}")


@dataclass(frozen=True, kw_only=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    steps: int = 10
    enabled: bool = True
    tags: list[str] = field(default_factory=list)


def test_round_trip_keeps_tuples_and_nesting():
    config = Outer(inner=Inner(lr=0.5, name="x"), steps=3, tags=["p", "q"])
    data = config_to_dict(config)
    assert data["inner"]["betas"] == [0.9, 0.999]
    assert config_from_dict(Outer, data) == config


def test_unknown_key_in_a_saved_config_is_refused():
    with pytest.raises(MCNError, match="unknown config keys for Outer"):
        config_from_dict(Outer, {"stepz": 3})


@pytest.mark.parametrize(
    ("hint", "text", "value"),
    [
        (int, "12", 12),
        (float, "3e-4", 3e-4),
        (bool, "yes", True),
        (bool, "False", False),
        (str | None, "none", None),
        (str | None, "abc", "abc"),
        (int | None, "7", 7),
        (tuple[float, float], "0.5,0.25", (0.5, 0.25)),
        (list[str], "a,b", ["a", "b"]),
        (Literal["a", "b"], "b", "b"),
        (dict, '{"k": 1}', {"k": 1}),
    ],
)
def test_values_are_parsed_by_type_hint(hint, text, value):
    assert parse_value(hint, text) == value


@pytest.mark.parametrize(
    ("hint", "text"), [(int, "1.5"), (bool, "maybe"), (Literal["a", "b"], "c"), (tuple[float, float], "1")]
)
def test_unparsable_values_name_the_key(hint, text):
    with pytest.raises(MCNError, match="inner.x="):
        parse_value(hint, text, "inner.x")


def test_overrides_apply_together_and_validate_once():
    config = apply_overrides(
        Outer(), {"inner.lr": "0.25", "inner.betas": "0.8,0.9", "steps": 4, "enabled": "off"}
    )
    assert config == Outer(inner=Inner(lr=0.25, betas=(0.8, 0.9)), steps=4, enabled=False)
    with pytest.raises(MCNError, match="inner.lr must be > 0"):
        apply_overrides(Outer(), {"inner.lr": "-1"})


@pytest.mark.parametrize(
    ("key", "known"), [("inner.lrr", "lr, betas, name, mode"), ("stepz", "inner, steps")]
)
def test_unknown_override_keys_list_the_known_ones(key, known):
    with pytest.raises(MCNError, match=known):
        apply_overrides(Outer(), {key: "1"})


def test_override_below_a_leaf_is_refused():
    with pytest.raises(MCNError, match="has no fields"):
        apply_overrides(Outer(), {"steps.x": "1"})


def test_assignments_need_an_equals_sign():
    assert parse_assignments(["a.b=1", "c= x=y"]) == {"a.b": "1", "c": " x=y"}
    with pytest.raises(MCNError, match="SECTION.KEY=VALUE"):
        parse_assignments(["a.b"])
