"""PyTorch twin of geojax's SE-ResNet classifier, for benchmarks beside the JAX train step.

The same network as `geojax.models.se_resnet.SEResNetBackbone` inside `Classifier` (se_resnet
defaults): 7x7/2 stem (64, BN, ReLU, 3x3/2 max-pool), stages of 2, 3, 4, 3 basic SE blocks at
64, 128, 256, 512 filters (block dropout, when set, on the residual branch; 0 by default as in
the Flax config), global average pooling, Dense 512 + ReLU + Dropout 0.3, Dense 256 + ReLU +
Dropout 0.15, Dense logits. Details that make it exact rather than similar:

* 'SAME' padding as XLA pads it (the extra row/column goes at the end: a stride-2 3x3 pads
  (0, 1), the 7x7/2 stem (2, 3) on even inputs), where PyTorch's `padding=` is symmetric;
* BatchNorm epsilon 1e-3 (Keras' default, which the Flax model keeps) and momentum 0.01
  (Flax's 0.99);
* module names equal to the Flax ones, so `load_flax_params` copies a Flax model's variables in
  and `check_against_flax` shows the two give the same logits.

    module = build_se_resnet(10)                      # 19,091,978 parameters
    images_per_s = bench_torch(32, 64, 10, compile=False, device="cpu", dtype="float32")

Needs torch (a benchmark-only dependency; the project's tests skip what needs it).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NUM_PARAMS_10_CLASSES = 19_091_978  # the Flax se_resnet classifier's parameter count
_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.01  # PyTorch's momentum is 1 - Flax's


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(low, high) padding of one spatial dimension for XLA's 'SAME': output ceil(size/stride),
    any odd total padding's extra pixel at the high end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """`nn.Conv2d` with XLA's 'SAME' padding (asymmetric where XLA's is)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, bias: bool = False):
        super().__init__(cin, cout, kernel, stride, padding=0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = (
            same_pads(x.shape[d], self.kernel_size[i], self.stride[i]) for i, d in ((0, 2), (1, 3)))
        if top == bottom and left == right:
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left))
        return F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, self.bias, self.stride)


def max_pool_same(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """`flax.linen.max_pool(x, (k, k), (s, s), padding='SAME')`: pads with -inf."""
    (top, bottom), (left, right) = (same_pads(x.shape[d], kernel, stride) for d in (2, 3))
    if top == bottom and left == right and top <= kernel // 2:
        return F.max_pool2d(x, kernel, stride, padding=(top, left))
    x = F.pad(x, (left, right, top, bottom), value=-math.inf)
    return F.max_pool2d(x, kernel, stride)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPSILON, momentum=_BN_MOMENTUM)


class SqueezeExcite(nn.Module):
    """GAP -> Linear(C // reduction) + ReLU -> Linear(C) + sigmoid -> scale."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.reduce = nn.Linear(channels, max(1, channels // reduction))
        self.expand = nn.Linear(max(1, channels // reduction), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3))
        s = torch.sigmoid(self.expand(F.relu(self.reduce(s))))
        return x * s[:, :, None, None]


class SEResidualBlock(nn.Module):
    """conv3x3+BN+ReLU, conv3x3+BN, SE, Dropout (on the residual branch, as the Flax block),
    + skip (1x1 conv + BN where the shape changes), ReLU."""

    def __init__(self, cin: int, filters: int, stride: int, se_reduction: int, dropout: float):
        super().__init__()
        self.conv1 = Conv2dSame(cin, filters, 3, stride)
        self.bn1 = batch_norm(filters)
        self.conv2 = Conv2dSame(filters, filters, 3)
        self.bn2 = batch_norm(filters)
        self.se = SqueezeExcite(filters, se_reduction)
        self.project = cin != filters or stride != 1
        if self.project:
            self.proj_conv = Conv2dSame(cin, filters, 1, stride)
            self.proj_bn = batch_norm(filters)
        # Flax's Dropout(0) is the identity; so is this, with no random mask to draw.
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.dropout(self.se(self.bn2(self.conv2(y))))
        skip = self.proj_bn(self.proj_conv(x)) if self.project else x
        return F.relu(y + skip)


class SEResNetBackbone(nn.Module):
    def __init__(self, width: float = 1.0, stem_width: int = 64,
                 stage_widths: Sequence[int] = (64, 128, 256, 512),
                 stage_depths: Sequence[int] = (2, 3, 4, 3), se_reduction: int = 16,
                 block_dropout: float = 0.0):
        super().__init__()

        def channels(base: int) -> int:
            return max(1, round(base * width))

        self.stem_conv = Conv2dSame(3, channels(stem_width), 7, 2)
        self.stem_bn = batch_norm(channels(stem_width))
        cin = channels(stem_width)
        self.block_names: list[str] = []
        for s, (base, depth) in enumerate(zip(stage_widths, stage_depths, strict=True)):
            for b in range(depth):
                name = f"stage{s + 1}_block{b + 1}"
                block = SEResidualBlock(cin, channels(base), 2 if s > 0 and b == 0 else 1,
                                        se_reduction, block_dropout)
                self.add_module(name, block)
                self.block_names.append(name)
                cin = channels(base)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = max_pool_same(F.relu(self.stem_bn(self.stem_conv(x))))
        for name in self.block_names:
            x = getattr(self, name)(x)
        return x


class MLPHead(nn.Module):
    def __init__(self, cin: int, num_classes: int, widths: Sequence[int] = (512, 256),
                 dropout: Sequence[float] = (0.3, 0.15)):
        super().__init__()
        self.hidden = len(widths)
        for i, (width, rate) in enumerate(zip(widths, dropout, strict=True)):
            self.add_module(f"dense{i}", nn.Linear(cin, width))
            self.add_module(f"dropout{i}", nn.Dropout(rate))
            cin = width
        self.logits = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.hidden):
            x = getattr(self, f"dropout{i}")(F.relu(getattr(self, f"dense{i}")(x)))
        return self.logits(x)


class SEResNetClassifier(nn.Module):
    """Backbone -> global average pooling -> MLP head -> float32 logits. Takes float images in
    [0, 1], [N, 3, H, W] (any memory format; channels_last is the fast one)."""

    def __init__(self, num_classes: int = 10, width: float = 1.0, **backbone: Any):
        super().__init__()
        self.backbone = SEResNetBackbone(width=width, **backbone)
        self.head = MLPHead(self.backbone.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.backbone(x).float().mean(dim=(2, 3))
        return self.head(pooled).float()


def build_se_resnet(num_classes: int = 10, **architecture: Any) -> nn.Module:
    """geojax's se_resnet classifier in PyTorch (`architecture`: width, stem_width,
    stage_widths, stage_depths, se_reduction, block_dropout, as in the model config)."""
    return SEResNetClassifier(num_classes, **architecture)


def count_params(module: nn.Module) -> int:
    """Trainable parameters (BatchNorm scale and bias included, running statistics not), as
    Flax counts its 'params' collection."""
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------
# Flax weights in, and the logits check
# ---------------------------------------------------------------------------------------------


def load_flax_params(module: nn.Module, variables: Mapping[str, Any]) -> nn.Module:
    """Copies a Flax se_resnet Classifier's {'params', 'batch_stats'} into `module` in place.

    Kernels HWIO -> OIHW, Dense [in, out] -> Linear [out, in], BatchNorm scale/bias/mean/var ->
    weight/bias/running_mean/running_var. Every Flax variable must find its tensor and every
    tensor of `module` must be written (else ValueError naming them).
    """
    targets = dict(module.named_parameters()) | dict(module.named_buffers())
    written: set[str] = set()

    def put(name: str, value: Any, transform=None) -> None:
        if name not in targets:
            raise ValueError(f"Flax variable for {name!r} has no PyTorch tensor")
        array = np.asarray(value, np.float32)
        if transform is not None:
            array = transform(array)
        tensor = targets[name]
        if tuple(tensor.shape) != array.shape:
            raise ValueError(f"{name}: PyTorch {tuple(tensor.shape)} != Flax {array.shape}")
        with torch.no_grad():
            tensor.copy_(torch.from_numpy(np.array(array, np.float32, copy=True, order="C")))
        written.add(name)

    def walk(tree: Mapping[str, Any], path: tuple[str, ...], collection: str) -> None:
        for key, value in tree.items():
            if isinstance(value, Mapping):
                walk(value, (*path, key), collection)
                continue
            prefix = ".".join(path)
            if collection == "batch_stats":
                put(f"{prefix}.running_{'mean' if key == 'mean' else 'var'}", value)
            elif key == "kernel" and np.ndim(value) == 4:
                put(f"{prefix}.weight", value, lambda a: a.transpose(3, 2, 0, 1))
            elif key == "kernel":
                put(f"{prefix}.weight", value, lambda a: a.T)
            elif key == "scale":
                put(f"{prefix}.weight", value)
            elif key == "bias":
                put(f"{prefix}.bias", value)
            else:
                raise ValueError(f"unexpected Flax variable {prefix}.{key}")

    for collection in ("params", "batch_stats"):
        walk(variables.get(collection, {}), (), collection)
    missing = sorted(n for n in targets if n not in written and not n.endswith("num_batches_tracked"))
    if missing:
        raise ValueError(f"PyTorch tensors without a Flax variable: {', '.join(missing)}")
    return module


def check_against_flax(model: Any, variables: Mapping[str, Any], images: np.ndarray,
                       module: nn.Module | None = None) -> float:
    """Largest |logit difference| between the Flax `model` (eval mode) and its PyTorch twin
    loaded by `load_flax_params`, on float images [N, H, W, 3] in [0, 1], both in float32 at
    full precision (no TF32) on CPU for PyTorch. Returns the difference over max |logit|."""
    import jax

    with jax.default_matmul_precision("highest"):
        apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
        expected = np.asarray(apply(variables, images))
    if module is None:
        backbone = model.backbone.keywords if hasattr(model.backbone, "keywords") else {}
        architecture = {k: backbone[k] for k in ("width", "stem_width", "stage_widths",
                                                  "stage_depths", "se_reduction", "block_dropout")
                        if k in backbone}
        module = build_se_resnet(model.num_classes, **architecture)
    load_flax_params(module, jax.device_get(variables)).eval()
    x = torch.from_numpy(np.asarray(images, np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        got = module.cpu()(x.contiguous(memory_format=torch.channels_last)).numpy()
    return float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-6))


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


def make_optimizer(module: nn.Module, device: torch.device, lr: float = 1e-3,
                   weight_decay: float = 1e-4) -> torch.optim.Optimizer:
    """Adam with L2 weight decay on kernels only, as geojax's 'adam' (optax.add_decayed_weights
    masked to ndim > 1, then adam); fused on CUDA."""
    decay = [p for p in module.parameters() if p.ndim > 1]
    no_decay = [p for p in module.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.Adam(groups, lr=lr, fused=device.type == "cuda")


def bench_torch(batch_size: int, img_size: int, steps: int, *, compile: bool, device: str,
                dtype: str, architecture: Mapping[str, Any] | None = None,
                repeats: int = 1, batches: Iterator[Mapping[str, np.ndarray]] | None = None
                ) -> float:
    """Images/s of the SE-ResNet's full train step in PyTorch: uint8 -> float / 255, forward,
    cross-entropy, backward, Adam step, channels_last. `dtype` 'bfloat16' runs under
    torch.autocast (float32 parameters, as the JAX bfloat16 compute dtype); `compile` wraps the
    model in torch.compile. Warm-up steps (and compilation) are excluded; CUDA is synchronised
    before the clock starts and stops. `architecture`: `build_se_resnet` keywords (default: the
    seed's SE-ResNet, whose parameter count is asserted). With `repeats` > 1, the best of that
    many timed windows of `steps` steps (for machines shared with other work). With `batches`
    (a CPU loader's {'image' uint8 NHWC, 'label'}), every step trains on the next one, copied to
    the device as a training loop would: PyTorch end to end; else on one batch already there."""
    dev = torch.device(device)
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    torch.manual_seed(0)
    module = build_se_resnet(10, **(architecture or {}))
    module = module.to(dev, memory_format=torch.channels_last).train()
    if not architecture:
        assert count_params(module) == NUM_PARAMS_10_CLASSES, count_params(module)
    optimizer = make_optimizer(module, dev)
    net = torch.compile(module) if compile else module
    rng = np.random.default_rng(0)
    # NHWC uint8 viewed as NCHW is channels_last, like a loader's batch moved to the device.
    images = torch.from_numpy(
        rng.integers(0, 256, (batch_size, img_size, img_size, 3), dtype=np.uint8)
    ).to(dev).permute(0, 3, 1, 2)
    labels = torch.from_numpy(rng.integers(0, 10, (batch_size,))).to(dev)

    def autocast():
        if dtype == "bfloat16":
            return torch.autocast(dev.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step() -> torch.Tensor:
        nonlocal images, labels
        if batches is not None:
            batch = next(batches)
            images = torch.from_numpy(batch["image"]).to(dev, non_blocking=True).permute(0, 3, 1, 2)
            labels = torch.from_numpy(batch["label"].astype(np.int64)).to(dev, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            logits = net(images.float() / 255.0)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        return loss

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(3 if compile else 2):
        step()
    sync()
    best = math.inf
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        best = min(best, time.perf_counter() - start)
    return batch_size * steps / best
