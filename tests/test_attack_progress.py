"""Progress text is free when silenced: no attack builds its ``_info`` text (whose counts sync the device on
every step) unless a progress bar is showing — and with one showing, every iterative attack reports."""

import pytest
import torch
from torch import nn

from advsal.attacks import make_attack
from advsal.attacks.base import Reporting
from advsal.progress import is_quiet, set_quiet

#: Every registered attack family with settings small enough for a 4×4 toy; tiny budgets keep the images
#: unbroken, so the loops run (and would report) every step.
SMALL = {
    "bim": {"eps": 1e-3, "steps": 2}, "pgd": {"eps": 1e-3, "steps": 2, "restarts": 2},
    "jsma": {"gamma": 0.5}, "cw": {"steps": 2, "binary_search_steps": 1}, "deepfool": {"steps": 2},
    "pixel": {"population": 4, "generations": 2}, "apgd-ce": {"eps": 1e-3, "steps": 3},
    "apgd-t": {"eps": 1e-3, "steps": 3, "n_targets": 1}, "fab-t": {"eps": 1e-3, "steps": 2, "n_targets": 1},
    "square": {"eps": 1e-3, "n_queries": 3}, "autoattack": {"eps": 1e-3, "steps": 2, "n_targets": 1,
                                                           "n_queries": 2},
}


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).eval()
    x = torch.rand(3, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


@pytest.mark.parametrize("quiet", [True, False])
def test_attacks_build_progress_text_only_while_a_bar_shows(toy, monkeypatch, quiet):
    model, x, y = toy
    calls: dict[str, int] = {}
    running = [""]
    monkeypatch.setattr(Reporting, "_info", lambda self, text: calls.__setitem__(running[0],
                                                                                  calls.get(running[0], 0) + 1))
    was = is_quiet()
    set_quiet(quiet)
    try:
        for name, params in SMALL.items():
            running[0] = name
            make_attack(name, **params)(model, x, y)
    finally:
        set_quiet(was)
    if quiet:
        assert calls == {}
    else:
        assert sorted(calls) == sorted(SMALL)
