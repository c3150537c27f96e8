"""An unknown key or section is refused with the closest allowed name ("did you mean"), found by
difflib; a name with nothing close gets no guess."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from dhs.params import Params, ParamsError
from dhs.params.fields import did_you_mean
from tests.conftest import REPO

BASE = yaml.safe_load((REPO / "params.yaml").read_text())


def refusal(mutate) -> str:
    p = copy.deepcopy(BASE)
    mutate(p)
    with pytest.raises(ParamsError) as info:
        Params(p, "params.yaml")
    return str(info.value)


def test_a_misspelt_key_is_refused_with_the_key_it_is_close_to():
    msg = refusal(lambda p: p["train"].update(epoch=3))
    assert msg.startswith("params.yaml: unknown keys ['epoch'] in 'train' (did you mean 'epochs'?); allowed keys are [")
    assert "'epochs'" in msg.split("allowed keys are", 1)[1]


def test_nested_sections_misspelt_sections_and_several_keys():
    assert "unknown keys ['mastr'] in 'completeness.spark' (did you mean 'master'?)" in refusal(
        lambda p: p["completeness"]["spark"].update(mastr="local[2]"))
    assert "unknown sections ['trian'] (did you mean 'train'?); the sections are [" in refusal(
        lambda p: p.update(trian=p.pop("train")))
    # each guess names what it is for; case is ignored in the match; a name with nothing close gets none
    msg = refusal(lambda p: p["train"].update(epoch=3, LR=1.0e-3, zzzz=1))
    assert "unknown keys ['LR', 'epoch', 'zzzz'] in 'train' (did you mean 'lr' for 'LR', 'epochs' for 'epoch'?)" in msg


def test_no_guess_where_nothing_is_close():
    msg = refusal(lambda p: p["train"].update(qqqq=1))
    assert re.search(r"unknown keys \['qqqq'\] in 'train'; allowed keys are", msg), msg
    assert did_you_mean(["qqqq"], ["epochs", "lr"]) == ""
    assert did_you_mean(["epoch"], ["epochs", "steps_per_epoch"]) == " (did you mean 'epochs'?)"
