import numpy as np
import torch
from torch import nn

from tinycl.replay.codecs import Float32Codec
from tinycl.replay.memory import LatentReplayMemory
from tinycl.train.batch_renorm import BatchRenorm2d, replace_batchnorm
from tinycl.train.cwr import CWRStar
from tinycl.train.learner import Learner, minibatch_plan


def test_minibatch_plan_matches_recipe():
    # REFERENCES.md: n = 3000 new with 1500 LRs -> 21 new + 107 replays per mini-batch of 128.
    assert minibatch_plan(3000, 1500, 128) == (85, 43, 35)  # batch 0 of CORe50 has n=2999..3000
    assert minibatch_plan(300, 1500, 128) == (21, 107, 14)
    assert minibatch_plan(20, 0, 128) == (20, 0, 1)
    assert minibatch_plan(300, 0, 128) == (128, 0, 2)
    assert minibatch_plan(20, 50, 128) == (20, 108, 1)  # fewer than 128 in all: one step


def test_batch_renorm_eval_equals_batchnorm_eval():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(8).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    brn = BatchRenorm2d.from_batchnorm(bn).eval()
    x = torch.randn(4, 8, 3, 3)
    assert torch.allclose(brn(x), bn(x), atol=1e-6)


def test_batch_renorm_train_corrects_towards_running_stats():
    brn = BatchRenorm2d(2)
    x = torch.randn(64, 2, 4, 4) * 5 + 3  # far from running mean 0 / var 1
    y = brn.train()(x)
    # r and d are clipped at 1.25 and 0.5: the output is the batch-normalized value
    # scaled by r_max and shifted by d_max.
    z = (x - x.mean((0, 2, 3), keepdim=True)) / torch.sqrt(x.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5)
    assert torch.allclose(y, z * 1.25 + 0.5, atol=1e-4)


def test_replace_batchnorm_in_place():
    seq = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU())
    replace_batchnorm(seq)
    assert isinstance(seq[1], BatchRenorm2d)


def test_cwr_star_consolidation():
    weight = torch.zeros(4, 2)
    cwr = CWRStar(weight)
    cwr.before_batch(torch.tensor([0, 1]))
    weight[0] = torch.tensor([1.0, 3.0])
    weight[1] = torch.tensor([3.0, 1.0])
    cwr.after_batch(torch.tensor([0, 1]), torch.tensor([10, 10, 0, 0]))
    # rows centred on their mean (2.0); unseen classes stay zero.
    assert torch.equal(weight[0], torch.tensor([-1.0, 1.0]))
    assert torch.equal(weight[2], torch.zeros(2))
    cwr.before_batch(torch.tensor([0]))
    assert torch.equal(weight[1], torch.zeros(2)) and torch.equal(weight[0], torch.tensor([-1.0, 1.0]))
    weight[0] = torch.tensor([2.0, 2.0])
    cwr.after_batch(torch.tensor([0]), torch.tensor([10, 0, 0, 0]))
    # w_past = sqrt(10 / 10) = 1: (old * 1 + (new - mean)) / 2
    assert torch.allclose(weight[0], torch.tensor([-0.5, 0.5]))


def test_learner_learns_separable_latents_and_fills_memory():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    adaptive = nn.Sequential(nn.Flatten(), nn.Linear(8, 4))
    memory = LatentReplayMemory(40, Float32Codec(8), num_classes=4)
    learner = Learner(adaptive, memory, lr=0.1, inc_lr=0.1, momentum=0.9, weight_decay=0.0,
                      epochs=4, minibatch=16, norm="bn", cwr=False, num_classes=4, seed=0)
    centres = torch.randn(4, 8) * 3
    for i, classes in enumerate([(0, 1), (2,), (3,)]):
        labels = torch.tensor(classes).repeat_interleave(30)
        latents = centres[labels] + torch.from_numpy(rng.normal(0, 0.3, (len(labels), 8))).float()
        stats = learner.train_experience(latents, labels, i)
        assert stats.steps > 0
    test_labels = torch.arange(4).repeat_interleave(20)
    test = centres[test_labels] + torch.randn(80, 8) * 0.3
    acc = (learner.predict(test) == test_labels).float().mean()
    assert acc > 0.9  # replays keep classes 0 and 1 alive
    assert len(memory) == 40
    assert set(memory.labels[:40].tolist()) == {0, 1, 2, 3}
