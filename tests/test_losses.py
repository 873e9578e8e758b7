import pytest
import torch

from nanogpt.core.losses import BinaryCrossEntropyCriterion, CrossEntropyCriterion, get_criterion


def test_ce_over_two_logits_equals_bce_over_their_difference():
    torch.manual_seed(0)
    logits = torch.randn(64, 2) * 3
    labels = torch.randint(0, 2, (64,))
    ce, bce = CrossEntropyCriterion(), BinaryCrossEntropyCriterion()
    diff = (logits[:, 1] - logits[:, 0]).unsqueeze(-1)
    torch.testing.assert_close(ce.loss(logits, labels), bce.loss(diff, labels))
    torch.testing.assert_close(ce.positive_probability(logits), bce.positive_probability(diff))
    assert torch.equal(ce.predict(logits), bce.predict(diff))


def test_interface_by_name():
    assert get_criterion("ce").n_outputs == 2 and get_criterion("BCE").n_outputs == 1
    assert isinstance(get_criterion("ce"), CrossEntropyCriterion)
    with pytest.raises(ValueError, match="Unknown loss"):
        get_criterion("mse")


def test_known_values():
    bce = BinaryCrossEntropyCriterion()
    z = torch.tensor([[0.0], [2.0], [-1.0]])
    y = torch.tensor([1, 1, 0])
    expected = -(torch.log(torch.tensor(0.5)) + torch.log(torch.sigmoid(torch.tensor(2.0)))
                 + torch.log(1 - torch.sigmoid(torch.tensor(-1.0)))) / 3
    torch.testing.assert_close(bce.loss(z, y), expected)
    assert bce.predict(z).tolist() == [0, 1, 0]  # exactly 0.5 is not positive
    ce = CrossEntropyCriterion()
    torch.testing.assert_close(ce.positive_probability(torch.tensor([[0.0, 0.0]])), torch.tensor([0.5]))
    # the loss is computed in fp32 even when the logits arrive in bf16
    assert ce.loss(torch.randn(4, 2).bfloat16(), torch.tensor([0, 1, 0, 1])).dtype == torch.float32
