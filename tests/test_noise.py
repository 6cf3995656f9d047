import torch

from distmtl.data.noise import salt_and_pepper


def test_level_is_respected_half_salt_half_pepper_all_channels():
    images = torch.full((64, 3, 32, 32), 0.5)
    noisy = salt_and_pepper(images, 0.2, torch.Generator().manual_seed(0))
    changed = (noisy != 0.5).all(dim=1)
    assert torch.equal(changed, (noisy != 0.5).any(dim=1))  # a pixel is corrupted in every channel at once
    assert abs(changed.float().mean().item() - 0.2) < 0.01
    salt = (noisy[:, 0] == 1.0).float().sum() / changed.float().sum()
    assert abs(salt.item() - 0.5) < 0.02
    assert set(noisy[:, 0][changed].unique().tolist()) == {0.0, 1.0}


def test_level_zero_returns_the_input():
    images = torch.rand(2, 3, 8, 8)
    assert salt_and_pepper(images, 0.0) is images


def test_same_generator_seed_same_noise():
    images = torch.rand(4, 3, 16, 16)
    a = salt_and_pepper(images, 0.3, torch.Generator().manual_seed(5))
    b = salt_and_pepper(images, 0.3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
