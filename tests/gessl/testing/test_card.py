"""Card parsing, validation and expression evaluation."""

from __future__ import annotations

import math

import pytest

from gessl.losses import available_losses, builtin_card_path, get_loss
from gessl.testing import CardError, PropertyCard, check_loss, evaluate, load_card


def test_evaluate():
    assert evaluate("log(2*N - 1)", {"N": 3}) == pytest.approx(math.log(5))
    assert evaluate(4, {}) == 4.0
    assert evaluate("inf", {}) == math.inf
    assert evaluate("-2*norm2 + norm2**2", {"norm2": 3.0}) == 3.0
    with pytest.raises(CardError, match="unknown variable 'tau'"):
        evaluate("1/tau", {"N": 2})
    for bad in ("__import__('os')", "N.real", "[1, 2]", "lambda: 1", "open('x')"):
        with pytest.raises(CardError):
            evaluate(bad, {"N": 2})


def test_card_validation():
    with pytest.raises(CardError, match="unknown property 'rotational'"):
        PropertyCard(name="x", properties=("rotational",))
    with pytest.raises(CardError, match="declares 'range'"):
        PropertyCard(name="x", properties=("range",))
    with pytest.raises(CardError, match="declares 'collapse'"):
        PropertyCard(name="x", properties=("collapse",))
    with pytest.raises(CardError, match="names no function"):
        PropertyCard(name="x", properties=("reference",))
    with pytest.raises(CardError, match="differentiable input 'q'"):
        PropertyCard(name="x", properties=("gradcheck",), differentiable=("q",))
    with pytest.raises(CardError, match="both an option and swept"):
        PropertyCard(name="x", properties=("finite",), options={"t": 1.0}, sweep={"t": (0, 1)})
    with pytest.raises(CardError, match="batch sizes start at 2"):
        PropertyCard(name="x", properties=("finite",), batch=(1, 4))
    with pytest.raises(CardError, match="unknown property 'colapse'"):
        PropertyCard(name="x", properties=("finite",), property_options={"colapse": {}})


def test_load_card_errors(tmp_path):
    with pytest.raises(CardError, match="not found"):
        load_card(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("properties = [\n")
    with pytest.raises(CardError, match="invalid TOML"):
        load_card(bad)
    bad.write_text('properties = ["finite"]\nfoo = 1\n')
    with pytest.raises(CardError, match="unknown key 'foo'"):
        load_card(bad)
    bad.write_text('name = "x"\n')
    with pytest.raises(CardError, match="lists no properties"):
        load_card(bad)


def test_every_builtin_card_loads_and_declares_known_properties():
    for name in available_losses():
        card = load_card(builtin_card_path(name))
        assert card.name == name and card.properties


def test_undeclared_property_request_is_an_error():
    card = load_card(builtin_card_path("byol"))
    with pytest.raises(ValueError, match="not declared"):
        check_loss(get_loss("byol"), card, properties=["translation"])


def test_bad_expression_is_a_card_error_not_a_pass():
    # a card error is not a property outcome: check_loss raises (the CLI exits 2)
    card = PropertyCard(name="x", properties=("collapse",), collapse="log(N) + nonsense")
    with pytest.raises(CardError, match="unknown variable 'nonsense'"):
        check_loss(get_loss("infonce"), card)
