"""Multi-label classifiers of Section 2. Every net returns logits; the task applies the sigmoid."""

from __future__ import annotations

import socket
from pathlib import Path

import torch
from torch import nn

from voc_dl.models.autoencoder import ConvEncoder, init_weights
from voc_dl.models.feature_cache import FeatureCache

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BACKBONES = ("alexnet", "resnet18", "resnet34", "resnet50", "vgg11_bn", "mobilenet_v3_small")


class EncoderClassifier(nn.Module):
    """The Section 1 encoder (8192-code) + one dense layer on the flattened code.

    frozen: 8192 x C + C trainable parameters (24,579 for 3 classes); retrained from scratch the
    encoder's 394,464 join them (419,043). Re-initialisation follows the study: random weights,
    zero biases. cache_features (frozen only) memoises the codes of images already seen
    (models/feature_cache.py). `image_size` is the input's side: the code keeps the encoder's channels
    at 1/8 of it, so 64 px images give a quarter of the coding variables (2,048 for the 8192 encoder).
    `norm` builds the encoder of experiment=autoencoder_improved (batch-norm after each conv); frozen, it
    keeps that batch-norm's statistics.
    """

    def __init__(self, num_classes: int = 3, code_size: int = 8192, freeze_encoder: bool = False,
                 image_size: int = 128, cache_features: bool = False, norm: bool = False):
        super().__init__()
        self.encoder = ConvEncoder(code_size, norm=norm)
        if image_size % 8:
            raise ValueError(f"model.net.image_size={image_size}: the encoder pools three times, so it must be "
                             "a multiple of 8")
        # the code: the encoder's last channels (code_size / 16^2 at the study's 128 px) at 1/8 of the input's side
        self.head = nn.Linear(code_size // 16**2 * (image_size // 8) ** 2, num_classes)
        init_weights(self)
        for m in self.encoder.modules():  # the study: "random weights, zero biases"
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                nn.init.zeros_(m.bias)
        self.freeze_encoder, self.norm = freeze_encoder, norm
        self.encoder.requires_grad_(not freeze_encoder)
        self.feature_cache = frozen_feature_cache(self, freeze_encoder and cache_features)

    def load_encoder(self, state: dict[str, torch.Tensor], source: str, code_size: int | None = None) -> None:
        """Load encoder weights (keys as in AutoEncoder.encoder); a mismatch names the source and the fix."""
        try:
            self.encoder.load_state_dict(state, strict=True)
        except RuntimeError as e:
            has_norm = any(k.endswith("running_mean") for k in state)
            if code_size in (None, self.encoder.code_size) and has_norm != self.norm:
                kind = "with batch-norm (experiment=autoencoder_improved)" if has_norm else "without batch-norm"
                raise ValueError(
                    f"model.encoder_ckpt={source} holds an encoder {kind}, this classifier's has "
                    f"{'' if self.norm else 'no '}batch-norm. Fix: set model.net.norm={str(has_norm).lower()}"
                ) from None
            found = f"it holds a {code_size}-code encoder" if code_size else str(e).splitlines()[1].strip()
            raise ValueError(
                f"model.encoder_ckpt={source} does not hold a {self.encoder.code_size}-code encoder "
                f"({found}). Fix: point it at a Section 1 checkpoint trained with model.code_size="
                f"{self.encoder.code_size}"
            ) from None
        if self.feature_cache is not None:
            self.feature_cache.clear()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_encoder:  # a frozen encoder keeps its batch-norm statistics (a no-op without batch-norm)
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = self.feature_cache(self.encoder, x) if self.feature_cache is not None else self.encoder(x)
        return self.head(torch.flatten(code, 1))


class DeepCNN(nn.Module):
    """The study's "simple classifier": 5 x (conv, batch-norm, ReLU, max-pool, dropout), pooled, dense."""

    def __init__(self, num_classes: int = 3, filters=(32, 64, 128, 256, 256), dropout: float = 0.25,
                 head_dropout: float = 0.5, in_channels: int = 3):
        super().__init__()
        blocks, cin = [], in_channels
        for cout in filters:
            blocks.append(nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.MaxPool2d(2), nn.Dropout(dropout)))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        # Global average pooling keeps the head small, so the head is not where it overfits.
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(head_dropout),
                                  nn.Linear(cin, num_classes))

    def conv_weights(self, blocks) -> list[nn.Parameter]:
        """Kernels of the given blocks (0-based), the ones that get L2 regularisation."""
        return [self.blocks[i][0].weight for i in blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


def frozen_feature_cache(net: nn.Module, enabled: bool) -> FeatureCache | None:
    """A cache for net's frozen extractor, emptied whenever net loads a state dict."""
    if not enabled:
        return None
    cache = FeatureCache()
    net.register_load_state_dict_post_hook(lambda module, keys: cache.clear())
    return cache


class WeightsDownloadError(ConnectionError, ValueError):
    """torchvision weights that could not be fetched; the message says how to give them as a file."""


# model.net.weights values that mean "random init".
NO_WEIGHTS = (None, "", "none", "random")


def load_backbone_weights(name: str, weights: str | None) -> dict[str, torch.Tensor] | None:
    """A state dict from a torchvision weight enum name (downloaded and cached) or a local file."""
    if weights in NO_WEIGHTS:
        return None
    path = Path(str(weights)).expanduser()
    if path.suffix in (".pt", ".pth", ".ckpt", ".bin") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"model.net.weights={weights}: no such file. Fix: give a saved state_dict "
                                    "file or a torchvision weight name such as IMAGENET1K_V1")
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state.get("state_dict", state) if isinstance(state, dict) else state
    from torchvision.models import get_model_weights

    enum = get_model_weights(name)
    if weights not in enum.__members__:
        raise ValueError(f"model.net.weights={weights!r} is not a weight of {name}; allowed: "
                         f"{', '.join(enum.__members__)}, or a path to a state_dict file")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)  # a dead network fails in a minute instead of hanging
    try:
        return enum[weights].get_state_dict(progress=True)
    except Exception as e:
        raise WeightsDownloadError(f"downloading {name} weights {weights} failed ({e}). Fix: check the network, "
                                   "or download them elsewhere and set model.net.weights=<state_dict file>") from None
    finally:
        socket.setdefaulttimeout(old)


class PretrainedClassifier(nn.Module):
    """A torchvision backbone (ImageNet-normalised input) and a small dense head."""

    def __init__(self, num_classes: int = 3, backbone: str = "resnet18", weights: str | None = "IMAGENET1K_V1",
                 freeze: bool = True, hidden: int = 256, dropout: float = 0.5, cache_features: bool = False):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"model.net.backbone={backbone!r}; allowed: {', '.join(BACKBONES)}")
        from torchvision.models import get_model

        net = get_model(backbone, weights=None)
        state = load_backbone_weights(backbone, weights)
        if state is not None:
            try:
                net.load_state_dict(state)
            except RuntimeError as e:
                raise ValueError(f"model.net.weights={weights} does not fit {backbone}: "
                                 f"{str(e).splitlines()[0]}") from None
        if hasattr(net, "fc"):  # resnets
            features, net.fc = net.fc.in_features, nn.Identity()
        else:  # alexnet, vgg, mobilenet: keep the classifier up to its last layer
            features = net.classifier[-1].in_features
            net.classifier[-1] = nn.Identity()
        self.backbone, self.freeze = net, freeze
        self.backbone.requires_grad_(not freeze)
        self.feature_cache = frozen_feature_cache(self, freeze and cache_features)
        self.head = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                  nn.Linear(hidden, num_classes))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:  # a frozen backbone keeps its batch-norm statistics and has no dropout
            self.backbone.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.feature_cache is not None:
            return self.head(self.feature_cache(self.features, x))
        return self.head(self.features(x))
