import numpy as np
import torch

from distmtl.data.synthetic import DEPTH_LEVELS, HUES, LOBES, TEXTURES, generate


def test_same_seed_same_data_and_other_seed_other_data():
    a, b, c = generate(40, 24, seed=3), generate(40, 24, seed=3), generate(40, 24, seed=4)
    assert torch.equal(a.images, b.images)
    for task in a.targets:
        assert torch.equal(a.targets[task], b.targets[task])
    assert not torch.equal(a.images, c.images)


def test_targets_lie_in_their_ranges():
    s = generate(300, 32, seed=0)
    assert s.images.shape == (300, 3, 32, 32) and s.images.dtype == torch.uint8
    assert s.targets["fine"].max() < len(LOBES) * len(DEPTH_LEVELS) and s.targets["fine"].min() >= 0
    assert torch.equal(s.targets["coarse"], s.targets["fine"] // len(DEPTH_LEVELS))
    assert set(s.targets["colour"].tolist()) <= set(range(len(HUES)))
    assert set(s.targets["texture"].tolist()) <= set(range(len(TEXTURES)))
    shape = s.targets["shape"]
    assert shape.shape == (300, 4) and shape.min() >= 0 and shape.max() <= 1
    boxes = s.targets["bbox"]
    assert (boxes >= 0).all() and (boxes <= 1).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert all(m.all() for m in s.has_target.values())
    assert np.array_equal(s.groups, np.arange(300))


def test_box_is_tight_around_the_mask():
    s = generate(20, 32, seed=1)
    for mask, box in zip(s.targets["mask"], s.targets["bbox"]):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        expected = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / 32
        assert torch.allclose(box, expected.float())


def test_object_pixels_carry_the_colour_class():
    """Appearance is drawn as constructed: the mean hue of object pixels falls in the colour's sector."""
    from matplotlib.colors import rgb_to_hsv

    s = generate(60, 32, seed=2)
    for image, mask, colour in zip(s.images, s.targets["mask"], s.targets["colour"]):
        rgb = image.permute(1, 2, 0).numpy()[mask.numpy().astype(bool)] / 255.0
        hue = rgb_to_hsv(rgb.mean(axis=0))[0]
        sector = round(hue * len(HUES)) % len(HUES)
        assert sector == colour.item()
