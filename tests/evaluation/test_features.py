import torch
from torch import nn

from ebmssl.evaluation import extract_features, raw_pixel_features


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.bn(x))


def test_extract_features_shape_eval_mode_and_restores_training():
    torch.manual_seed(0)
    net = _Net()
    net.train()
    net.pool.eval()  # mixed modes must be restored exactly
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    before = net.bn.running_mean.clone()
    feats = extract_features(net, images, transform=None, batch_size=3)
    assert feats.shape == (10, 3) and feats.dtype == torch.float32
    assert torch.equal(net.bn.running_mean, before)  # eval mode: no batch-norm update
    assert net.training and net.bn.training and not net.pool.training
    # uint8 without a transform is scaled to [0, 1]; eval-mode BN with fresh stats is the identity (up to eps)
    expected = images.float().div(255).mean(dim=(2, 3))
    torch.testing.assert_close(feats, expected / (1 + net.bn.eps) ** 0.5, rtol=1e-5, atol=1e-6)


def test_extract_features_applies_transform_and_no_grad():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    images = torch.rand(7, 3, 2, 2)
    feats = extract_features(net, images, transform=lambda x: 2 * x, batch_size=4)
    assert not feats.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(feats, net(2 * images))


def test_raw_pixel_features():
    images = torch.full((2, 3, 2, 2), 255, dtype=torch.uint8)
    feats = raw_pixel_features(images)
    assert feats.shape == (2, 12) and feats.dtype == torch.float32
    assert torch.all(feats == 1.0)
    floats = torch.rand(2, 3, 2, 2)
    torch.testing.assert_close(raw_pixel_features(floats), floats.flatten(1))
