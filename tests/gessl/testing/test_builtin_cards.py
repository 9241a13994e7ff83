"""Every built-in loss passes the property card it ships with."""

from __future__ import annotations

import pytest

from gessl.losses import available_losses, builtin_card_path, get_loss
from gessl.testing import check_loss, load_card


@pytest.mark.parametrize("name", available_losses())
def test_builtin_card_passes(name):
    card = load_card(builtin_card_path(name))
    report = check_loss(get_loss(name), card)
    assert report.passed, report.format()
    assert [r.name for r in report.results] == list(card.properties)
    # every card checks the loss against its independent reference and for finiteness
    assert {"finite", "reference"} <= set(card.properties)
