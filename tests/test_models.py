"""Networks: the study's shapes and parameter counts, and that training steps lower each loss."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.conftest import ADAM, assert_fp32_close
from voc_dl.models.autoencoder import AutoEncoder, ConvEncoder
from voc_dl.models.classifiers import DeepCNN, EncoderClassifier, PretrainedClassifier
from voc_dl.models.fast_conv import NCHWWeightGradConv2d, nchw_weight_grad
from voc_dl.models.segmenter import SegNet, UNet
from voc_dl.tasks.reconstruction import ReconstructionTask

# float results that depend on the CPU's kernels: `make test` runs these again under the AVX2 caps
pytestmark = pytest.mark.numerics


def trainable(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


@pytest.mark.parametrize("code_size, channels", [(2048, 8), (4096, 16), (8192, 32)])
def test_code_has_exactly_code_size_elements(code_size, channels):
    code = ConvEncoder(code_size)(torch.zeros(2, 3, 128, 128))
    assert code.shape == (2, channels, 16, 16) and code[0].numel() == code_size
    assert AutoEncoder(code_size)(torch.rand(2, 3, 128, 128)).shape == (2, 3, 128, 128)


def test_8192_encoder_has_394464_parameters():
    assert trainable(ConvEncoder(8192)) == 394_464


@pytest.mark.parametrize("bad", [1024, 3000, 16384])
def test_impossible_code_size_is_rejected_with_the_allowed_values(bad):
    with pytest.raises(ValueError, match=rf"model.code_size={bad} .* allowed: 2048, 4096, 8192"):
        AutoEncoder(bad)


def test_reconstruction_is_a_sigmoid_output():
    y = AutoEncoder(4096)(torch.randn(1, 3, 128, 128) * 10)
    assert 0 <= y.min() and y.max() <= 1


def test_classifier_parameter_counts_match_the_study():
    assert trainable(EncoderClassifier(3, freeze_encoder=True)) == 24_579
    assert trainable(EncoderClassifier(3, freeze_encoder=False)) == 419_043
    assert trainable(EncoderClassifier(20, freeze_encoder=True)) == 8192 * 20 + 20


@pytest.mark.parametrize("code_size", [2048, 4096, 8192])
@pytest.mark.parametrize("size", [64, 96, 128])
def test_encoder_classifier_reads_the_code_of_its_image_size(code_size, size):
    # the code keeps the encoder's last channels at 1/8 of the input's side: at 64 px, a quarter of the study's
    net = EncoderClassifier(3, code_size=code_size, image_size=size)
    assert net.head.in_features == code_size * size**2 // 128**2
    assert net(torch.rand(2, 3, size, size)).shape == (2, 3)
    with pytest.raises(ValueError, match="multiple of 8"):
        EncoderClassifier(3, image_size=100)


def test_retrained_encoder_starts_with_zero_biases():
    enc = EncoderClassifier(3).encoder
    biases = [m.bias for m in enc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert biases and all(torch.count_nonzero(b) == 0 for b in biases)


@pytest.mark.parametrize("classes", [3, 20])
@pytest.mark.parametrize("make", [
    lambda c: EncoderClassifier(c, freeze_encoder=True),
    lambda c: DeepCNN(c),
    lambda c: PretrainedClassifier(c, "resnet18", weights=None),
    lambda c: PretrainedClassifier(c, "alexnet", weights=None),
], ids=["frozen_encoder", "deep_cnn", "resnet18", "alexnet"])
def test_classifier_forward_shapes(make, classes):
    assert make(classes)(torch.rand(2, 3, 128, 128)).shape == (2, classes)


def test_frozen_parameters_stay_unchanged_after_an_optimizer_step():
    net = EncoderClassifier(3, freeze_encoder=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(net(torch.rand(4, 3, 128, 128)), torch.ones(4, 3))
    loss.backward()
    opt.step()
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    assert not torch.equal(before["head.weight"], after["head.weight"])


def test_frozen_batch_norm_encoder_loads_the_improved_autoencoder_and_keeps_its_statistics():
    ae = AutoEncoder(8192, norm=True)
    for m in ae.encoder.modules():  # statistics that training would have left
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(0, 1)
            m.running_var.uniform_(1, 2)
    state = ae.encoder.state_dict()
    with pytest.raises(ValueError, match=r"encoder with batch-norm .*Fix: set model.net.norm=true"):
        EncoderClassifier(3, freeze_encoder=True).load_encoder(state, "ae.ckpt", 8192)
    net = EncoderClassifier(3, freeze_encoder=True, norm=True, image_size=64)
    net.load_encoder(state, "ae.ckpt", 8192)
    x = torch.rand(4, 3, 64, 64)
    net.train()
    assert not net.encoder.training and net.head.training
    net(x)
    assert all(torch.equal(net.encoder.state_dict()[k], v) for k, v in state.items()), "statistics unchanged"
    with torch.no_grad():
        assert torch.allclose(net.encoder(x), ae.encoder.eval()(x))
    assert trainable(net) == 2048 * 3 + 3  # a 64 px code


def _count_calls(module: torch.nn.Module) -> list[int]:
    seen = []
    module.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    return seen


def test_frozen_feature_cache_gives_the_same_logits_and_gradients_and_computes_each_image_once():
    torch.manual_seed(0)
    plain = EncoderClassifier(3, freeze_encoder=True)
    cached = EncoderClassifier(3, freeze_encoder=True, cache_features=True)
    cached.load_state_dict(plain.state_dict())
    calls = _count_calls(cached.encoder)
    images = torch.rand(6, 3, 128, 128)
    for epoch in range(2):  # two "epochs" over the same 6 images, in a different order each time
        order = torch.randperm(6)
        for batch in (order[:4], order[4:]):
            x = images[batch].contiguous(memory_format=torch.channels_last) if epoch else images[batch]
            for net in (plain, cached):
                net.zero_grad()
                net(x).square().sum().backward()
            if epoch:  # channels_last input: its conv kernels sum in another order than the cached NCHW pass
                assert_fp32_close(cached(x), plain(x), terms=8192)  # the head sums 8192 codes
                assert_fp32_close(cached.head.weight.grad, plain.head.weight.grad, terms=8192)
            else:
                torch.testing.assert_close(cached(x), plain(x), rtol=0, atol=0)
                torch.testing.assert_close(cached.head.weight.grad, plain.head.weight.grad, rtol=0, atol=0)
    assert sum(calls) == 6, "each image goes through the frozen encoder once, whatever its memory format"
    assert (cached.feature_cache.hits, cached.feature_cache.misses) == (6 * 4 - 6, 6)
    cached.load_state_dict(plain.state_dict())  # new weights make old features stale
    assert not cached.feature_cache.store


def test_feature_cache_only_for_frozen_nets_and_off_with_augmentation():
    from voc_dl.tasks.classification import ClassificationTask

    assert EncoderClassifier(3, freeze_encoder=False, cache_features=True).feature_cache is None
    net = PretrainedClassifier(3, "resnet18", weights=None, freeze=True, cache_features=True)
    net.train()
    x = torch.rand(2, 3, 64, 64)
    first = torch.manual_seed(1) and net(x)  # the head's dropout draws the same mask after the same seed
    torch.testing.assert_close(torch.manual_seed(1) and net(x), first, rtol=0, atol=0)
    assert net.feature_cache.misses == 2 and net.feature_cache.hits == 2
    net = {"_target_": "voc_dl.models.classifiers.EncoderClassifier", "num_classes": 3, "freeze_encoder": True,
           "cache_features": True}
    task = ClassificationTask(net, 3, augment=True, optimizer=ADAM)
    assert task.net.feature_cache is None


def test_augmentation_strength_scales_crop_and_jitter_down_to_flips_only():
    from voc_dl.tasks.classification import ClassificationTask, augmentation

    x = torch.rand(3, 32, 32)
    torch.manual_seed(0)
    flips_only = augmentation(32, strength=0.0)
    outs = [flips_only(x) for _ in range(20)]
    assert all(torch.equal(o, x) or torch.equal(o, x.flip(-1)) for o in outs)
    assert any(torch.equal(o, x.flip(-1)) for o in outs) and any(torch.equal(o, x) for o in outs)
    _, crop, jitter = augmentation(32, strength=0.5).transforms
    assert crop.scale == (0.8, 1.0) and crop.ratio == pytest.approx(((3 / 4) ** 0.5, (4 / 3) ** 0.5))
    assert jitter.brightness == pytest.approx((0.85, 1.15)) and jitter.hue == pytest.approx((-0.025, 0.025))
    net = {"_target_": "voc_dl.models.classifiers.DeepCNN", "num_classes": 3}
    with pytest.raises(ValueError, match=r"model.augment_strength=2.5: must be in \[0, 2\]"):
        ClassificationTask(net, 3, augment=True, augment_strength=2.5, optimizer=ADAM)


def test_pretrained_backbone_from_a_local_state_dict(tmp_path):
    from torchvision.models import resnet18

    ref = resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    net = PretrainedClassifier(3, "resnet18", weights=str(tmp_path / "r18.pth"), freeze=True)
    assert torch.equal(net.backbone.conv1.weight, ref.conv1.weight)
    assert trainable(net) == 512 * 256 + 256 + 256 * 3 + 3
    net.train()
    assert not net.backbone.training, "a frozen backbone keeps its batch-norm statistics"


def test_pretrained_weights_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model.net.weights=.*missing.pth: no such file"):
        PretrainedClassifier(3, "resnet18", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match=r"'IMAGENET_V9' is not a weight of resnet18; allowed: IMAGENET1K"):
        PretrainedClassifier(3, "resnet18", weights="IMAGENET_V9")
    from torchvision.models import alexnet
    torch.save(alexnet(weights=None).state_dict(), tmp_path / "alex.pth")
    with pytest.raises(ValueError, match=r"does not fit resnet18"):
        PretrainedClassifier(3, "resnet18", weights=str(tmp_path / "alex.pth"))
    with pytest.raises(ValueError, match=r"model.net.backbone='vgg99'"):
        PretrainedClassifier(3, "vgg99", weights=None)


@pytest.mark.parametrize("net", [SegNet(), UNet()], ids=["segnet", "unet"])
def test_segmenters_give_one_logit_per_pixel(net):
    assert net(torch.rand(2, 1, 64, 64)).shape == (2, 1, 64, 64)


def test_segnet_follows_the_study_widths():
    convs = [m for m in SegNet().modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [256, 128, 64, 32, 32, 64, 128, 1]
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in SegNet().encoder)


def test_pca_error_is_zero_at_full_rank_and_grows_as_k_shrinks():
    from voc_dl.models.pca import PCA

    torch.manual_seed(0)
    train = torch.rand(12, 3) @ torch.rand(3, 40) + 0.01 * torch.rand(12, 40)  # 12 images, 40 "pixels"
    pca = PCA(train)
    assert pca.max_components == 11  # centred data of n images span at most n - 1 directions
    full = pca.reconstruct(train, pca.max_components)
    assert torch.allclose(full, train, atol=1e-5)
    errors = [torch.mean((pca.reconstruct(train, k) - train) ** 2).item() for k in range(0, 12)]
    assert all(a >= b - 1e-12 for a, b in zip(errors, errors[1:], strict=False)) and errors[0] > errors[3] > 0
    curve = pca.mse_curve(train, list(range(0, 12)))
    assert curve == pytest.approx(errors, rel=1e-6, abs=1e-9)  # float32 reconstructions vs float64 curve
    with pytest.raises(ValueError, match="at most 11 components"):
        pca.reconstruct(train, 12)


def test_nchw_weight_grad_conv_gives_the_plain_conv_gradients():
    torch.manual_seed(0)
    plain = torch.nn.Conv2d(32, 48, 3, padding=1).to(memory_format=torch.channels_last)
    fast = nchw_weight_grad(copy.deepcopy(torch.nn.Sequential(plain)))[0]
    assert isinstance(fast, NCHWWeightGradConv2d)
    x = torch.randn(4, 32, 12, 12).contiguous(memory_format=torch.channels_last)
    grads = []
    for conv in (plain, fast):
        xi = x.clone().requires_grad_()
        out = conv(xi)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((out, xi.grad, conv.weight.grad, conv.bias.grad))
    assert grads[1][2].is_contiguous(memory_format=torch.channels_last)  # the weight's own layout
    n, c_in, h, w = x.shape
    # terms summed per element: output and input grad over c_in (c_out) x 3 x 3, weight and bias grads over n h w
    terms = (c_in * 9, plain.out_channels * 9, n * h * w, n * h * w)
    for a, b, k in zip(*grads, terms, strict=True):
        assert_fp32_close(a, b, k)


def test_nchw_weight_grad_swaps_only_wide_convs_and_keeps_the_state_dict():
    net = AutoEncoder(8192)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    nchw_weight_grad(net)
    kinds = [(type(m) is NCHWWeightGradConv2d, min(m.in_channels, m.out_channels)) for m in net.modules()
             if isinstance(m, torch.nn.Conv2d)]
    assert [swapped for swapped, _ in kinds] == [narrow >= 16 for _, narrow in kinds]
    assert any(s for s, _ in kinds) and not all(s for s, _ in kinds)  # the RGB convs keep the plain route
    after = net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_task_switches_conv_route_at_fit_start_only_when_configured_and_on_a_cpu_it_helps(monkeypatch):
    for helps in (False, True):
        monkeypatch.setattr("voc_dl.tasks.base.helps_on_this_cpu", lambda helps=helps: helps)
        for flag in (False, True):
            task = ReconstructionTask(code_size=8192, optimizer=ADAM, nchw_weight_grad=flag)
            task.on_fit_start()
            assert any(type(m) is NCHWWeightGradConv2d for m in task.net.modules()) == (flag and helps)


def test_cpu_flags_drive_bf16_and_the_conv_route(monkeypatch):
    import voc_dl.hardware as config
    from voc_dl.models.fast_conv import helps_on_this_cpu

    for flags, bf16, avx2_fix in (("fpu avx2 fma", False, True), ("avx2 avx512f avx512_bf16", True, False),
                                  ("avx512f amx_bf16 amx_tile", True, False)):
        monkeypatch.setattr(config, "cpu_flags", lambda flags=flags: set(flags.split()))
        assert config.cpu_has_bf16() == bf16
        assert config.resolve_precision("auto", False, "cpu") == ("bf16-mixed" if bf16 else "32-true")
        monkeypatch.setattr("voc_dl.models.fast_conv.cpu_flags", lambda flags=flags: set(flags.split()))
        assert helps_on_this_cpu() == avx2_fix
