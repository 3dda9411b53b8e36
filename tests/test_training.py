"""medscope.train.loop: schedule, loss, precision policy."""
import math

import pytest
import torch

from medscope import data
from medscope.train import loop


def test_cosine_schedule_warms_up_then_decays_to_zero():
    factors = [loop.lr_factor(s, 100, 10, "cosine") for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert factors[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert loop.lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0)


def test_onecycle_warms_up_for_at_least_a_tenth():
    assert loop.lr_factor(0, 200, 0, "onecycle") == pytest.approx(1 / 20)
    assert loop.lr_factor(200, 200, 0, "onecycle") == pytest.approx(1e-3)


def test_constant_schedule_after_warmup():
    assert [loop.lr_factor(s, 10, 2, "constant") for s in (0, 1, 5)] == [0.5, 1.0, 1.0]


def test_multilabel_loss_is_bce_and_smoothing_moves_targets_to_half():
    logits = torch.tensor([[2.0, -1.0]])
    target = torch.tensor([[1.0, 0.0]])
    plain = loop.loss_fn(data.TASK_MULTILABEL, logits, target, 0.0)
    assert plain == pytest.approx(torch.nn.functional.binary_cross_entropy_with_logits(logits, target).item())
    smoothed = loop.loss_fn(data.TASK_MULTILABEL, logits, target, 0.2)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([[0.9, 0.1]]))
    assert smoothed == pytest.approx(expected.item())


def test_no_weight_decay_on_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    optimizer = loop.make_optimizer(model, "adamw", 1e-3, 0.1)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and len(decay["params"]) == 1
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3


def test_amp_is_off_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(loop, "cpu_supports_bf16", lambda: False)
    assert loop.amp_dtype_for(torch.device("cpu"), True) is None
    monkeypatch.setattr(loop, "cpu_supports_bf16", lambda: True)
    assert loop.amp_dtype_for(torch.device("cpu"), True) is torch.bfloat16
    assert loop.amp_dtype_for(torch.device("cpu"), False) is None


def test_seed_epoch_is_reproducible():
    g1 = loop.seed_epoch(3, 5)
    a = (torch.rand(3), torch.rand(3, generator=g1))
    g2 = loop.seed_epoch(3, 5)
    b = (torch.rand(3), torch.rand(3, generator=g2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_cpu_bf16_autocast_only_with_native_bf16_instructions(monkeypatch):
    """oneDNN says yes on AVX-512 CPUs that only emulate bf16; the CPU's flags decide."""
    from medscope.train import loop

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(loop, "_cpu_flags", lambda: {"avx512f", "avx512bw"})
    assert not loop.cpu_supports_bf16()
    monkeypatch.setattr(loop, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert loop.cpu_supports_bf16()
    monkeypatch.setattr(loop, "_cpu_flags", lambda: None)  # no /proc/cpuinfo: oneDNN's word
    assert loop.cpu_supports_bf16()


# ---------------------------------------------------------------- precise BatchNorm statistics

def _bn_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
                               torch.nn.Dropout(0.5), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(3, 2))


def _epoch_cfg() -> loop.EpochConfig:
    return loop.EpochConfig(task=data.TASK_BINARY, num_classes=2, batch_size=4, augment=None)


def test_recompute_batchnorm_averages_the_batch_statistics_of_the_training_images():
    images = torch.randint(0, 256, (10, 1, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    split = data.Split(images, torch.zeros((10, 1), dtype=torch.int64))
    net = _bn_net()
    net.train()
    net(data.normalize(images) * 3)  # running statistics of other data, to be replaced
    loop.recompute_batchnorm(net, split, _epoch_cfg(), torch.device("cpu"), batch_size=4)
    conv = net[0]
    with torch.no_grad():  # batches of 4, 4, 2: the mean over batches of each batch's mean and unbiased variance
        parts = [conv(data.normalize(images[i:i + 4])) for i in (0, 4, 8)]
    means = torch.stack([p.mean(dim=(0, 2, 3)) for p in parts]).mean(0)
    variances = torch.stack([p.var(dim=(0, 2, 3), unbiased=True) for p in parts]).mean(0)
    bn = net[1]
    assert torch.allclose(bn.running_mean, means, atol=1e-6) and torch.allclose(bn.running_var, variances, atol=1e-5)
    assert bn.momentum == 0.1 and net.training  # left as it was


def test_recompute_batchnorm_draws_no_random_number_and_keeps_dropout_off():
    images = torch.randint(0, 256, (8, 1, 6, 6), dtype=torch.uint8)
    split = data.Split(images, torch.zeros((8, 1), dtype=torch.int64))
    net = _bn_net().eval()
    torch.manual_seed(5)
    loop.recompute_batchnorm(net, split, _epoch_cfg(), torch.device("cpu"))
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))  # the random stream is where it was
    assert not net[3].training and net[1].momentum == 0.1


def test_precise_bn_reads_every_image_of_a_small_split_and_evenly_spaced_ones_of_a_large_one():
    assert loop.precise_bn_indices(3).tolist() == [0, 1, 2]
    spaced = loop.precise_bn_indices(100_000)
    assert len(spaced) == loop.PRECISE_BN_IMAGES and spaced[0] == 0 and spaced[-1] < 100_000
    assert torch.all(spaced[1:] > spaced[:-1])


# ------------------------------------------------------------------ non-finite steps are skipped

def _tiny_epoch(monkeypatch, bad_steps, n=64, batch=16):
    """One epoch of a small linear model on random images; the steps in ``bad_steps`` get a NaN loss."""
    from medscope.train import augment

    torch.manual_seed(0)
    images = torch.randint(0, 255, (n, 1, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 2, (n, 1))
    split = data.Split(images, labels)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    optimizer = loop.make_optimizer(model, "adamw", 1e-2, 0.0)
    scheduler = loop.make_scheduler(optimizer, n // batch, 0, "constant")
    calls = {"n": 0}
    real_loss = loop.loss_fn

    def loss_with_nan(task, logits, target, smoothing):
        calls["n"] += 1
        value = real_loss(task, logits, target, smoothing)
        return value * float("nan") if calls["n"] in bad_steps else value

    monkeypatch.setattr(loop, "loss_fn", loss_with_nan)
    cfg = loop.EpochConfig(task="binary-class", num_classes=2, batch_size=batch,
                           augment=augment.make_config("breastmnist", "none", 2))
    return model, lambda: loop.train_one_epoch(model, split, cfg, optimizer, scheduler, None, torch.device("cpu"),
                                               torch.Generator().manual_seed(0))


def test_a_step_with_a_nan_loss_is_skipped_and_the_weights_stay_finite(monkeypatch):
    model, epoch = _tiny_epoch(monkeypatch, bad_steps={2})
    result = epoch()
    assert result["skipped_steps"] == 1 and result["images"] == 48  # three of four batches counted
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert math.isfinite(result["loss"])


def test_an_epoch_with_more_non_finite_steps_than_it_tolerates_is_unstable(monkeypatch):
    model, epoch = _tiny_epoch(monkeypatch, bad_steps={1, 2, 3, 4}, n=160)
    with pytest.raises(loop.UnstableEpoch) as caught:
        epoch()
    assert caught.value.skipped == loop.max_skipped(10) + 1 == 4
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_non_finite_gradient_skips_the_optimizer_step():
    model = torch.nn.Linear(3, 1)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = loop.make_optimizer(model, "adamw", 0.1, 0.0)
    loss = (model(torch.ones(1, 3)) * torch.tensor(float("inf"))).sum() * 0 + model.weight.sum() * float("inf")
    assert not loop._backward_and_step(model, loss, optimizer, None, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    loss = model(torch.ones(1, 3)).sum()
    optimizer.zero_grad()
    assert loop._backward_and_step(model, loss, optimizer, None, 1.0)  # clipped and taken
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
