import pytest

from nanogpt.run.profiles import PROFILES, get_profile, profile_table


@pytest.mark.parametrize("name", list(PROFILES))
def test_profiles_are_valid(name):
    prof = get_profile(name)
    for loss in ("ce", "bce"):
        cfg = prof.make_config(loss, prof.seeds[-1])
        assert cfg.profile == name and cfg.loss == loss and cfg.attn_dropout == 0.0
    assert len(set(prof.seeds)) == len(prof.seeds)


def test_paper_profile_has_ten_seeds_and_a_larger_model():
    paper, cpu = get_profile("paper"), get_profile("cpu")
    assert len(paper.seeds) == 10 and len(cpu.seeds) >= 5
    assert paper.config.n_layer * paper.config.n_embd ** 2 > cpu.config.n_layer * cpu.config.n_embd ** 2


def test_unknown_profile():
    with pytest.raises(ValueError, match="Unknown profile 'huge'"):
        get_profile("huge")


def test_profile_table_lists_the_differences():
    rows = {r["profile"]: r for r in profile_table()}
    assert rows["smoke"]["n_embd"] == 64 and rows["paper"]["seeds"] == 10
