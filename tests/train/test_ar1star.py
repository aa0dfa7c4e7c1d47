"""tinycl's learner under ``--recipe ar1star`` against an independent transcription of AR1*.

The transcription below was written from ar1-pytorch at 813f977 (ar1star_lat_replay.py, utils.py,
models/batch_renorm.py; REFERENCES.md), keeping its structure -- per-class dicts for CWR*, the
replay memory as a [latents, labels] pair sliced in memory order, ``pad_data``, one shuffle per
batch, BRN parameters changed and SGD re-created at batch 1 -- with two substitutions: numpy's
unseeded draws become the run's PCG32 stream (the same draws tinycl makes), and CWR*'s numpy
arithmetic is done in float32 torch (as tinycl documents). Both start from the same weights and
see the same latents in the same memory layout (channels-last, as the learner runs them: a
float reduction's rounding depends on its order); the weights must be bit-identical after every
batch.
"""

import copy

import torch
from torch import nn

from tinycl.config import RECIPES
from tinycl.prng import LOOP_STREAM, Pcg32
from tinycl.replay.codecs import Float32Codec
from tinycl.replay.memory import LatentReplayMemory
from tinycl.train.batch_renorm import replace_batchnorm
from tinycl.train.learner import Learner

AR1 = {key: value for (_, key), value in RECIPES["ar1star"].items()}
MB, RM_SZ, CLASSES, C, HW = 16, 20, 6, 8, 3


class Ar1BatchRenorm(nn.Module):
    """models/batch_renorm.py BatchRenorm2D, transcribed."""

    def __init__(self, bn, momentum, inc_step, max_r_max, max_d_max):
        super().__init__()
        self.eps = bn.eps
        self.momentum = torch.tensor(momentum)
        self.gamma = nn.Parameter(bn.weight.detach().clone().view(1, -1, 1, 1))
        self.beta = nn.Parameter(bn.bias.detach().clone().view(1, -1, 1, 1))
        self.running_avg_mean = bn.running_mean.clone().view(1, -1, 1, 1)
        self.running_avg_std = torch.sqrt(bn.running_var.clone().view(1, -1, 1, 1))
        self.max_r_max, self.max_d_max = max_r_max, max_d_max
        self.r_max_inc_step = self.d_max_inc_step = inc_step
        self.r_max, self.d_max = 1.0, 0.0

    def forward(self, x):
        batch_ch_mean = torch.mean(x, dim=(0, 2, 3), keepdim=True)
        batch_ch_std = torch.sqrt(torch.var(x, dim=(0, 2, 3), keepdim=True, unbiased=False) + self.eps)
        if self.training:
            r = torch.clamp(batch_ch_std / self.running_avg_std, 1.0 / self.r_max, self.r_max).data
            d = torch.clamp((batch_ch_mean - self.running_avg_mean) / self.running_avg_std,
                            -self.d_max, self.d_max).data
            x = ((x - batch_ch_mean) * r) / batch_ch_std + d
            x = self.gamma * x + self.beta
            if self.r_max < self.max_r_max:
                self.r_max += self.r_max_inc_step * x.shape[0]
            if self.d_max < self.max_d_max:
                self.d_max += self.d_max_inc_step * x.shape[0]
            self.running_avg_mean = self.running_avg_mean + self.momentum * (batch_ch_mean.data - self.running_avg_mean)
            self.running_avg_std = self.running_avg_std + self.momentum * (batch_ch_std.data - self.running_avg_std)
        else:
            x = (x - self.running_avg_mean) / self.running_avg_std
            x = self.gamma * x + self.beta
        return x


def make_stage():
    torch.manual_seed(0)
    stage = nn.Sequential(nn.Conv2d(C, 12, 1, bias=False), nn.BatchNorm2d(12), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, CLASSES, bias=False))
    with torch.no_grad():
        stage[1].running_mean.uniform_(-0.5, 0.5)
        stage[1].running_var.uniform_(0.5, 2.0)
        stage[1].weight.uniform_(0.5, 1.5)
    return stage


def stream():
    """Batch 0 (37 items, not a multiple of MB: padded), then 3 batches, one new class each."""
    gen = torch.Generator().manual_seed(1)
    sizes_classes = [(37, (0, 1, 2)), (12, (3,)), (14, (4,)), (11, (5,))]
    out = []
    for n, classes in sizes_classes:
        labels = torch.tensor(classes).repeat(n)[:n]
        latents = torch.relu(torch.randn(n, C, HW, HW, generator=gen) + labels.view(-1, 1, 1, 1) * 0.3)
        out.append((latents, labels))
    return out


def run_transcription(model, batches, seed):
    rng = Pcg32(seed, LOOP_STREAM)
    saved_weights, past_j = {}, torch.zeros(CLASSES)
    rm = None
    bn = model[1]
    model[1] = Ar1BatchRenorm(bn, AR1["brn_momentum"], AR1["brn_ramp"], 1.25, 0.5)
    head = model[5]
    model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=AR1["lr"], momentum=AR1["momentum"],
                                weight_decay=AR1["weight_decay"])
    criterion = nn.CrossEntropyLoss()
    snapshots = []
    for i, (train_x, train_y) in enumerate(batches):
        if i == 1:  # change_brn_pars, then a new SGD at inc_lr
            brn = model[1]
            brn.momentum = torch.tensor(AR1["brn_inc_momentum"])
            brn.r_max, brn.d_max = torch.tensor(1.25), torch.tensor(0.5)
            optimizer = torch.optim.SGD(model.parameters(), lr=AR1["inc_lr"], momentum=AR1["momentum"],
                                        weight_decay=AR1["weight_decay"])
        if i == 0:
            cur_class = sorted(set(train_y.tolist()))
            cur_j = torch.bincount(train_y, minlength=CLASSES).float()
        else:
            cur_class = sorted(set(train_y.tolist()) | set(rm[1].tolist()))
            cur_j = torch.bincount(torch.cat([train_y, rm[1]]), minlength=CLASSES).float()
        model.train()
        with torch.no_grad():  # reset_weights
            head.weight.fill_(0.0)
            for c, w in saved_weights.items():
                if c in cur_class:
                    head.weight[c].copy_(w)
        if i == 0:  # pad_data
            n_missing = train_x.shape[0] % MB
            it_x_ep = train_x.shape[0] // MB + (1 if n_missing else 0)
            if n_missing:
                n_to_add = MB - n_missing
                train_x = torch.cat((train_x[:n_to_add], train_x))
                train_y = torch.cat((train_y[:n_to_add], train_y))
        perm = torch.from_numpy(rng.permutation(train_x.shape[0]))  # shuffle_in_unison
        train_x, train_y = train_x[perm], train_y[perm]
        for ep in range(AR1["epochs"]):
            if i > 0:
                cur_sz = train_x.size(0) // ((train_x.size(0) + RM_SZ) // MB)
                it_x_ep = train_x.size(0) // cur_sz
                n2inject = max(0, MB - cur_sz)
            else:
                n2inject = 0
            for it in range(it_x_ep):
                start, end = it * (MB - n2inject), (it + 1) * (MB - n2inject)
                optimizer.zero_grad()
                x_mb = train_x[start:end]
                if i == 0:
                    y_mb = train_y[start:end]
                else:
                    lat_mb_x = rm[0][it * n2inject : (it + 1) * n2inject]
                    y_mb = torch.cat((train_y[start:end], rm[1][it * n2inject : (it + 1) * n2inject]), 0)
                    x_mb = torch.cat((x_mb, lat_mb_x), 0)
                if ep == 0:  # the latents collected in epoch 0 (rm's candidates)
                    new = train_x[start:end]
                    cur_acts = new.clone() if it == 0 else torch.cat((cur_acts, new), 0)  # noqa: F821
                loss = criterion(model(x_mb.contiguous(memory_format=torch.channels_last)), y_mb)
                loss.backward()
                optimizer.step()
        with torch.no_grad():  # consolidate_weights
            globavg = head.weight[cur_class].mean()
            for c in cur_class:
                new_w = head.weight[c] - globavg
                if c in saved_weights:
                    wpast_j = torch.sqrt(past_j[c] / cur_j[c])
                    saved_weights[c] = (saved_weights[c] * wpast_j + new_w) / (wpast_j + 1)
                else:
                    saved_weights[c] = new_w.clone()
        h = min(RM_SZ // (i + 1), cur_acts.size(0))
        idxs_cur = torch.from_numpy(rng.choice(cur_acts.size(0), h))
        rm_add = [cur_acts[idxs_cur], train_y[idxs_cur]]
        if i == 0:
            rm = copy.deepcopy(rm_add)
        else:
            idxs_2_replace = rng.choice(rm[0].size(0), h)
            for j, idx in enumerate(idxs_2_replace):
                rm[0][idx] = rm_add[0][j].clone()
                rm[1][idx] = rm_add[1][j].clone()
        with torch.no_grad():  # set_consolidate_weights
            for c, w in saved_weights.items():
                head.weight[c].copy_(w)
        past_j += cur_j
        brn = model[1]
        snapshots.append([model[0].weight.clone(), brn.gamma.view(-1).clone(), brn.beta.view(-1).clone(),
                          brn.running_avg_mean.view(-1).clone(), brn.running_avg_std.view(-1).clone(),
                          head.weight.clone()])
    return snapshots, rm


def run_tinycl(adaptive, batches, seed):
    replace_batchnorm(adaptive, momentum=AR1["brn_momentum"], ramp_per_sample=AR1["brn_ramp"], stats="std")
    memory = LatentReplayMemory(RM_SZ, Float32Codec(C * HW * HW), CLASSES, policy=AR1["policy"])
    learner = Learner(adaptive, memory, lr=AR1["lr"], inc_lr=AR1["inc_lr"], momentum=AR1["momentum"],
                      weight_decay=AR1["weight_decay"], epochs=AR1["epochs"], minibatch=MB, norm="brn",
                      cwr=True, num_classes=CLASSES, seed=seed, shuffle=AR1["shuffle"],
                      replay_order=AR1["replay_order"], pad_first_batch=AR1["pad_first_batch"],
                      reset_sgd=AR1["reset_sgd"], brn_inc_momentum=AR1["brn_inc_momentum"])
    snapshots = []
    for i, (x, y) in enumerate(batches):
        learner.train_experience(x, y, i)
        brn = adaptive[1]
        snapshots.append([adaptive[0].weight.clone(), brn.weight.clone(), brn.bias.clone(),
                          brn.running_mean.clone(), brn.running_std.clone(), adaptive[5].weight.clone()])
    return snapshots, memory


def test_ar1star_recipe_equals_the_transcription_bit_for_bit(one_thread):
    batches = stream()
    base = make_stage()
    ours, memory = run_tinycl(copy.deepcopy(base), batches, seed=3)
    ref, rm = run_transcription(copy.deepcopy(base), batches, seed=3)
    names = ["conv", "gamma", "beta", "running mean", "running std", "head"]
    for i, (a_batch, b_batch) in enumerate(zip(ours, ref, strict=True)):
        for name, a, b in zip(names, a_batch, b_batch, strict=True):
            assert torch.equal(a.contiguous(), b.contiguous()), f"batch {i}: {name} differs by {(a - b).abs().max()}"
    # The replay memory holds the same latents with the same labels, slot for slot.
    stored, labels = memory.get(torch.arange(len(memory)))
    assert len(memory) == rm[0].shape[0] == RM_SZ
    assert torch.equal(stored, rm[0].reshape(RM_SZ, -1)) and torch.equal(labels, rm[1])


def test_cwr_keeps_classes_seen_only_through_replays(one_thread):
    """Batch 3 holds class 5 only; classes 0-4 live in the memory and stay current (their
    consolidated rows are restored and updated, never zeroed)."""
    batches = stream()
    adaptive = make_stage()
    snapshots, memory = run_tinycl(adaptive, batches, seed=3)
    head = snapshots[-1][5]
    replayed = set(memory.labels[: len(memory)].tolist())
    assert replayed >= {0, 1, 2}
    assert all(bool(head[c].abs().sum() > 0) for c in replayed)
