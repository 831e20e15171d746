"""Training profiles: every shipped profile validates; bad values and overrides fail clearly."""

import pytest

from components.training.config import PROFILES, ConfigError, load_profile, parse_overrides

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", PROFILES)
def test_every_shipped_profile_validates(name):
    config = load_profile(name)
    assert config.profile == name
    assert config.micro_batch >= 2


def test_paper_profile_has_the_papers_settings():
    config = load_profile("paper")
    assert config.lr == 2e-4 and config.alpha_lm == config.alpha_cl == 1.0
    assert config.model.backbone == "Qwen/Qwen2.5-0.5B-Instruct" and config.batch_embedding * 8 == 1024


def test_overrides_are_parsed_as_yaml_and_nested():
    config = load_profile("tiny", ["steps=7", "margin=null", "model.max_events=3", "lora.targets=[q_proj]"])
    assert config.steps == 7 and config.margin is None
    assert config.model.max_events == 3 and config.lora.targets == ["q_proj"]
    assert parse_overrides(["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["steps=0"], "steps"),
        (["no_ntp=true", "no_contrastive=true"], "nothing to train"),
        (["batch_embedding=1"], "in-batch negatives"),
        (["unknown_key=1"], "unknown_key"),
        (["model.bogus=1"], "bogus"),
        (["steps"], "key=value"),
        (["scheduling=uniform", "task_batches=2"], "needs scheduling=s2sched"),
        (["scheduling=s2sched", "task_batches=3", "batch_embedding=4"], "in-task negative"),
    ],
)
def test_bad_values_fail_with_the_culprit_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_profile("tiny", overrides)


def test_unknown_profile_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="tiny, quick, paper"):
        load_profile("huge")


def test_ablations_switch_branches_off():
    assert load_profile("tiny", ["no_ntp=true"]).n_generative == 0
    assert load_profile("tiny", ["no_contrastive=true", "batch_embedding=0"]).n_embedding == 0
