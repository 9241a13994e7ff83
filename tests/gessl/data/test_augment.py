"""Batched augmentations: shapes, seeding, identities, devices, and the task samplers."""

from __future__ import annotations

import pytest
import torch

from gessl.data import (
    DatasetTasks,
    GaussianLatentTasks,
    SyntheticImageTasks,
    cifar_augment,
    digits_augment,
    load_digits,
    signal_augment,
)
from gessl.data.augment import (
    color_jitter,
    correlated_noise,
    gaussian_blur,
    hflip,
    random_grayscale,
    random_resized_crop,
    random_scale,
    random_shift,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_shapes_seeding_and_leading_dims():
    x = torch.rand(2, 5, 3, 16, 16)
    a = cifar_augment(blur=True)(x, _gen(1))
    b = cifar_augment(blur=True)(x, _gen(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, cifar_augment(blur=True)(x, _gen(2)))
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_identity_cases():
    x = torch.rand(4, 3, 8, 8)
    crop = random_resized_crop(x, _gen(), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(crop, x, atol=1e-6, rtol=0)  # a full, centred crop changes nothing
    assert torch.equal(hflip(x, _gen(), p=1.0), x.flip(-1))
    assert torch.equal(hflip(x, _gen(), p=0.0), x)
    g = random_grayscale(x, _gen(), p=1.0)
    assert torch.allclose(g[:, 0], g[:, 1]) and torch.allclose(g[:, 1], g[:, 2])
    const = torch.full((2, 1, 8, 8), 0.3)
    torch.testing.assert_close(gaussian_blur(const, _gen(), p=1.0), const)
    assert torch.equal(color_jitter(x, _gen(), p=0.0), x)


def test_digit_views_stay_close_to_the_image():
    d = load_digits()
    x = d.as_float(slice(0, 200))
    y = digits_augment()(x, _gen())
    corr = torch.nn.functional.cosine_similarity(x.flatten(1), y.flatten(1))
    other = torch.nn.functional.cosine_similarity(x.flatten(1), y.roll(1, 0).flatten(1))
    assert float(corr.mean()) > float(other.mean()) + 0.1  # a view resembles its own image most


def test_dataset_tasks_draw_distinct_images_of_chosen_classes():
    d = load_digits()
    sampler = DatasetTasks(d, lambda x, g: x)  # identity augmentation: views equal the images
    batch = sampler.sample(3, 20, _gen(), classes=[1, 2])
    assert batch.support_a.shape == (3, 20, 1, 8, 8)
    for t in range(3):
        flat = {tuple(v.flatten().tolist()) for v in batch.query_a[t]}
        assert len(flat) >= 19  # distinct images (digits has a few exact duplicates)
    allowed = d.as_float((d.labels == 1) | (d.labels == 2)).flatten(1)
    hits = (batch.query_b[0].flatten(1)[:, None, :] == allowed[None]).all(-1).any(-1)
    assert bool(hits.all())
    assert batch.query_b.dtype == torch.float32 and float(batch.query_b.max()) <= 1.0


_VIEWS = ("support_a", "support_b", "query_a", "query_b")


def _samplers():
    d = load_digits()
    return {
        "digits": lambda gen: DatasetTasks(d, digits_augment()).sample(2, 6, gen),
        "digits_classes": lambda gen: DatasetTasks(d, cifar_augment(blur=True)).sample(
            2, 6, gen, classes=[3, 4]
        ),
        "synthetic_images": lambda gen: SyntheticImageTasks(size=16, channels=3).sample(2, 4, gen),
        "gaussian": lambda gen: GaussianLatentTasks(n_classes=3).sample(2, 4, gen),
    }


@pytest.mark.parametrize("name", list(_samplers()))
def test_samplers_draw_and_build_everything_on_the_generator_device(name):
    """With the default device set to "meta", any random number or tensor created without an
    explicit device would land on meta: every view coming back on the CPU, equal to the views
    drawn without it, shows that all of them follow ``gen.device``."""
    sample = _samplers()[name]
    want = sample(_gen(5))
    with torch.device("meta"):
        got = sample(_gen(5))
    for view in _VIEWS:
        assert getattr(got, view).device.type == "cpu"
        assert torch.equal(getattr(got, view), getattr(want, view))


def test_augmentations_follow_the_image_device_and_dtype():
    x = torch.rand(2, 3, 3, 16, 16, generator=_gen(7))
    want = cifar_augment(blur=True)(x, _gen(1))
    with torch.device("meta"):  # random numbers on gen.device (the CPU), not the default device
        assert torch.equal(cifar_augment(blur=True)(x, _gen(1)), want)
    # images elsewhere than the generator: thetas, kernels and weights are built on x.device
    meta = torch.empty(4, 3, 16, 16, device="meta")
    assert cifar_augment(blur=True)(meta, _gen(1)).device.type == "meta"
    assert digits_augment()(torch.empty(4, 1, 8, 8, device="meta"), _gen(1)).device.type == "meta"
    assert GaussianLatentTasks().augment(torch.empty(3, 8, device="meta"), _gen()).is_meta
    assert SyntheticImageTasks().augment(torch.empty(3, 1, 8, 8, device="meta"), _gen()).is_meta
    x64 = x.double()
    y64 = cifar_augment(blur=True)(x64, _gen(1))
    assert y64.dtype == torch.float64  # the same transforms in x's dtype
    torch.testing.assert_close(y64.float(), want, atol=1e-5, rtol=0)


# ----------------------------------------------------------------- one-dimensional signals
_SIGNAL_STEPS = {
    "shift": lambda x, g: random_shift(x, g, max_shift=5),
    "scale": lambda x, g: random_scale(x, g, scale=(0.5, 2.0)),
    "correlated_noise": lambda x, g: correlated_noise(x, g, std=0.3, smoothing=2.0),
    "signal": signal_augment(),
}


@pytest.mark.parametrize("name", list(_SIGNAL_STEPS))
def test_signal_augmentations_keep_the_shape_and_follow_the_seed(name):
    fn = _SIGNAL_STEPS[name]
    x = torch.randn(16, 2, 1, 40, generator=_gen(3))
    a, b = fn(x, _gen(1)), fn(x, _gen(1))
    assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, b)
    assert not torch.equal(a, fn(x, _gen(2)))
    assert not torch.equal(a, x)


def test_random_shift_is_a_circular_shift_of_each_row_within_range():
    x = torch.randn(64, 2, 1, 40, generator=_gen(4))
    y = random_shift(x, _gen(5), max_shift=3)
    assert torch.equal(y.sort(-1).values, x.sort(-1).values)  # a permutation of each row
    shifts = []
    for xi, yi in zip(x, y):
        hits = [s for s in range(-3, 4) if torch.equal(torch.roll(xi, s, -1), yi)]
        assert len(hits) == 1  # a circular shift by one s in [-3, 3], the same on every channel
        shifts.append(hits[0])
    assert set(shifts) == set(range(-3, 4))  # all seven shifts drawn over 64 rows
    assert torch.equal(random_shift(x, _gen(5), max_shift=0), x)
    with pytest.raises(ValueError, match="max_shift"):
        random_shift(x, _gen(), max_shift=-1)


def test_random_scale_multiplies_each_row_by_one_factor_in_range():
    x = torch.rand(200, 2, 1, 40, generator=_gen(6)) + 0.5
    y = random_scale(x, _gen(7), scale=(0.8, 1.2))
    ratio = (y / x).flatten(1)
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))  # one factor per row
    assert float(ratio.min()) >= 0.8 and float(ratio.max()) <= 1.2
    assert float(ratio.max() - ratio.min()) > 0.3  # spread over the range
    assert torch.equal(random_scale(x, _gen(7), scale=(1.0, 1.0)), x)


def _lag1(noise):
    a, b = noise[..., :-1].flatten(), noise[..., 1:].flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def test_correlated_noise_has_the_requested_std_and_is_smooth():
    x = torch.zeros(2000, 1, 1, 40)
    noise = correlated_noise(x, _gen(8), std=0.1, smoothing=2.0)
    assert 0.095 < float(noise.std()) < 0.105
    per_position = noise.std(dim=(0, 1, 2))  # no edge effects: the same std along L
    assert float(per_position.min()) > 0.09 and float(per_position.max()) < 0.11
    assert _lag1(noise) > 0.5  # neighbours correlated
    white = correlated_noise(x, _gen(8), std=0.1, smoothing=0.0)
    assert abs(_lag1(white)) < 0.05 and 0.095 < float(white.std()) < 0.105
    signal = torch.randn(4, 1, 1, 40, generator=_gen(9))
    assert torch.equal(correlated_noise(signal, _gen(), std=0.0), signal)


def test_signal_augment_on_task_batches_and_other_devices():
    aug = signal_augment()
    assert aug.name == "signal"
    x = torch.randn(3, 5, 1, 1, 40, generator=_gen(10))  # [M, N, C, 1, L]
    y = aug(x, _gen(11))
    assert y.shape == x.shape and torch.equal(y, aug(x, _gen(11)))
    flat = aug(x.reshape(15, 1, 1, 40), _gen(11))
    assert torch.equal(y.reshape(15, 1, 1, 40), flat)  # the leading dims are one batch dim
    # a view of a smooth signal resembles its own signal most
    phase = 2 * torch.pi * torch.rand(64, 1, 1, 1, generator=_gen(12))
    smooth = torch.sin(2 * torch.pi * torch.arange(40) / 40 + phase)
    view = aug(smooth, _gen(13)).flatten(1)
    own = torch.nn.functional.cosine_similarity(smooth.flatten(1), view)
    other = torch.nn.functional.cosine_similarity(smooth.flatten(1), view.roll(1, 0))
    assert float(own.mean()) > float(other.mean()) + 0.3
    assert torch.equal(signal_augment(0.0)(x, _gen(11)), x)  # strength 0: the identity
    with torch.device("meta"):  # random numbers on gen.device (the CPU), not the default device
        assert torch.equal(aug(x, _gen(11)), y)
    meta = torch.empty(4, 1, 1, 40, device="meta")
    assert aug(meta, _gen(1)).device.type == "meta"
    y64 = aug(x.double(), _gen(11))
    assert y64.dtype == torch.float64
