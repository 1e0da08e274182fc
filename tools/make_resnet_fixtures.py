#!/usr/bin/env python3
"""Reference outputs of torchvision for smith's ResNet, preprocessing and `.pth` tests.

Usage: python3 tools/make_resnet_fixtures.py PHOTOS_DIR OUT_DIR
(PHOTOS_DIR from tools/fetch_photos.sh: scikit-image's astronaut, chelsea, coffee, rocket.)

Everything runs in f32 on the CPU, so the references do not depend on TF32 or cuDNN's
algorithm choice. Writes into OUT_DIR (tests/fixtures/vision):

- photos_224.safetensors: `crops` uint8 [4, 224, 224, 3], the photos (sorted by name) after
  torchvision's `Resize(256)` (antialiased bilinear on the PIL image) and `CenterCrop(224)`,
  and `resized` int64 [4, 2] (height, width after the resize).
- resnet18_reference.safetensors, resnet50_reference.safetensors: the batch-norm buffers of a
  ResNet whose parameters follow the deterministic scheme below, after three training-mode
  forward passes on seeded noise (so the running statistics are not trivial), and `logits`
  [4, 1000] of the eval-mode network on the normalised crops. resnet18's file also holds
  `train_losses` [20]: 20 SGD steps (lr 1e-4, momentum 0.9, weight decay 1e-4 on convolution
  and classifier weights only) in training mode on the centre 96x96 of the normalised crops
  with labels `train_labels` (a gentle rate: at 1e-3 the four-image batch is memorised
  so fast that float rounding alone, PyTorch's own f32 against f64, grows 30-fold per step).
- resnet_small.pth and resnet_small.safetensors: a small ResNet in torchvision's naming
  (3x3 stem, no max pool, one BasicBlock per stage, widths 8/16/32/64, 10 classes) with
  PyTorch's own seeded initialisation, saved whole by `torch.save(state_dict)` and by
  safetensors; `resnet_small_logits.safetensors` its eval-mode logits on `input` [2, 3, 32, 32],
  and `train_losses` of 20 SGD steps from those weights (lr 0.05, momentum 0.9, weight decay
  5e-4 on convolution and classifier weights), a batch of 16 per step: inputs
  u * sqrt(3) from `train_input.<step>`, labels floor((u + 1) * 5) from `train_labels.<step>`.
- pth_zoo.pth: a checkpoint-like dict with tensors of every storage dtype, a transposed view,
  two slices sharing one storage, a 0-d and an empty tensor, and plain Python values nested;
  pth_zoo_expected.safetensors: each tensor contiguous, for comparison.
- pth_evil.pth: a pickle whose unpickling would call `os.system`; pth_module.pth: a whole
  `nn.Linear` module pickled (classes by reference); pth_legacy.pth: the pre-1.6 format.

Deterministic parameters (reproduced by tests/resnet_reference.rs): for a tensor named
`name` with n elements, u[i] = ((h(i) >> 8) / 2^23) - 1 in [-1, 1), where h is the murmur3
finaliser of (i * 0x9E3779B1 + fnv1a32(name)) mod 2^32. Convolutions: u * sqrt(3) * sqrt(2 /
fan_out); batch-norm weight 1 + 0.25 u, bias 0.1 u; classifier weight and bias u / sqrt(fan_in).
"""
import collections
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as T
from PIL import Image
from safetensors.torch import save_file
from torchvision.models.resnet import BasicBlock

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def fnv1a32(name):
    h = 0x811C9DC5
    for b in name.encode():
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def uniform(name, n):
    m = np.uint64(0xFFFFFFFF)
    h = (np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B1) + np.uint64(fnv1a32(name))) & m
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & m
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & m
    h ^= h >> np.uint64(16)
    return (h >> np.uint64(8)).astype(np.float32) / np.float32(1 << 23) - np.float32(1.0)


def deterministic_params(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            u = uniform(name, p.numel()).reshape(p.shape)
            if p.dim() == 4:
                fan_out = p.shape[0] * p.shape[2] * p.shape[3]
                v = u * np.float32(math.sqrt(3.0) * math.sqrt(2.0 / fan_out))
            elif name.startswith("fc."):
                fan_in = model.fc.weight.shape[1]
                v = u * np.float32(1.0 / math.sqrt(fan_in))
            elif name.endswith("weight"):
                v = u * np.float32(0.25) + np.float32(1.0)
            else:
                v = u * np.float32(0.1)
            p.copy_(torch.from_numpy(np.ascontiguousarray(v)))


def buffers(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
            if "running_" in k or "num_batches_tracked" in k}


def photos(photo_dir):
    pre = T.Compose([T.Resize(256), T.CenterCrop(224)])
    crops, resized = [], []
    for name in PHOTOS:
        img = Image.open(os.path.join(photo_dir, name)).convert("RGB")
        r = T.Resize(256)(img)
        resized.append([r.height, r.width])
        crops.append(torch.from_numpy(np.asarray(pre(img)).copy()))
    return torch.stack(crops), torch.tensor(resized, dtype=torch.int64)


def normalise(crops):
    x = crops.permute(0, 3, 1, 2).float().div(255)
    return T.Normalize(MEAN, STD)(x)


def warm_up(model):
    g = torch.Generator().manual_seed(7)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 96, 96, generator=g) * 1.5 + 0.2)
    model.eval()


def imagenet_resnet(name, x, out, train):
    model = getattr(torchvision.models, name)(weights=None)
    deterministic_params(model)
    warm_up(model)
    tensors = buffers(model)
    with torch.no_grad():
        tensors["logits"] = model(x).contiguous()
    print(name, "logits std", tensors["logits"].std().item(),
          "max", tensors["logits"].abs().max().item())
    if train:
        labels = torch.tensor([0, 281, 504, 900])
        batch = x[:, :, 64:160, 64:160].contiguous()
        decay = [p for n, p in model.named_parameters() if p.dim() > 1]
        no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
        opt = torch.optim.SGD([{"params": decay, "weight_decay": 1e-4},
                               {"params": no_decay, "weight_decay": 0.0}],
                              lr=1e-4, momentum=0.9)
        model.train()
        losses = []
        for _ in range(20):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(batch), labels)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        print(name, "losses", [round(v, 5) for v in losses])
        tensors["train_losses"] = torch.tensor(losses, dtype=torch.float32)
        tensors["train_labels"] = labels
    save_file(tensors, os.path.join(out, f"{name}_reference.safetensors"))


class SmallResNet(nn.Module):
    """torchvision's ResNet naming with a 3x3 stem and no max pool, for small images."""

    def __init__(self, widths=(8, 16, 32, 64), classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        inp = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or inp != w:
                down = nn.Sequential(nn.Conv2d(inp, w, 1, stride, bias=False), nn.BatchNorm2d(w))
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(inp, w, stride, down)))
            inp = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inp, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def small_resnet(out):
    torch.manual_seed(3)
    model = SmallResNet()
    g = torch.Generator().manual_seed(11)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32, generator=g))
    model.eval()
    sd = model.state_dict()
    torch.save(sd, os.path.join(out, "resnet_small.pth"))
    save_file({k: v.contiguous() for k, v in sd.items()},
              os.path.join(out, "resnet_small.safetensors"))
    x = torch.randn(2, 3, 32, 32, generator=g)
    with torch.no_grad():
        logits = model(x)
    tensors = {"input": x, "logits": logits.contiguous()}
    # 20 SGD steps in training mode from these weights, a new batch of 16 each step.
    # The batches follow the deterministic scheme (names `train_input.<step>` and
    # `train_labels.<step>`), so the fixture need not hold them.
    def batch(step):
        u = uniform(f"train_input.{step}", 16 * 3 * 32 * 32).reshape(16, 3, 32, 32)
        v = uniform(f"train_labels.{step}", 16)
        y = np.floor((v + np.float32(1.0)) * np.float32(5.0)).astype(np.int64)
        return torch.from_numpy(u * np.float32(math.sqrt(3.0))), torch.from_numpy(y)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                           {"params": no_decay, "weight_decay": 0.0}], lr=0.05, momentum=0.9)
    model.train()
    losses = []
    for step in range(20):
        opt.zero_grad()
        bx, by = batch(step)
        loss = nn.functional.cross_entropy(model(bx), by)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print("small resnet losses", [round(v, 5) for v in losses])
    tensors["train_losses"] = torch.tensor(losses, dtype=torch.float32)
    save_file(tensors, os.path.join(out, "resnet_small_logits.safetensors"))


class Evil:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def pth_files(out):
    g = torch.Generator().manual_seed(5)
    base = torch.randn(4, 6, generator=g)
    zoo = collections.OrderedDict()
    zoo["f32"] = torch.randn(2, 3, generator=g)
    zoo["f16"] = torch.randn(3, 4, generator=g).half()
    zoo["bf16"] = torch.randn(5, generator=g).bfloat16()
    zoo["f64"] = torch.randn(2, 2, generator=g).double()
    zoo["i64"] = torch.arange(-3, 9, dtype=torch.int64).reshape(3, 4)
    zoo["i32"] = torch.arange(0, 6, dtype=torch.int32)
    zoo["i16"] = torch.tensor([-300, 7, 12000], dtype=torch.int16)
    zoo["i8"] = torch.tensor([-128, 0, 127], dtype=torch.int8)
    zoo["u8"] = torch.arange(250, 256, dtype=torch.uint8)
    zoo["bool"] = torch.tensor([True, False, True])
    zoo["transposed"] = torch.randn(4, 5, generator=g).t()
    zoo["base"] = base
    zoo["slice_a"] = base[1:3, ::2]
    zoo["slice_b"] = base[:, 4]
    zoo["scalar"] = torch.tensor(3.5)
    zoo["empty"] = torch.zeros(0, 3)
    zoo["param"] = nn.Parameter(torch.randn(2, 2, generator=g))
    checkpoint = {"model": zoo, "epoch": 3, "lr": 0.125, "name": "zoo", "flags": [True, None],
                  "pair": (1, -2), "big": 2 ** 40, "raw": b"\x00\x01"}
    torch.save(checkpoint, os.path.join(out, "pth_zoo.pth"))
    save_file({k: (v.detach() if isinstance(v, nn.Parameter) else v).contiguous()
               for k, v in zoo.items()},
              os.path.join(out, "pth_zoo_expected.safetensors"))
    torch.save({"w": torch.ones(2), "payload": Evil()}, os.path.join(out, "pth_evil.pth"))
    torch.save(nn.Linear(2, 2), os.path.join(out, "pth_module.pth"))
    torch.save({"w": torch.ones(2)}, os.path.join(out, "pth_legacy.pth"),
               _use_new_zipfile_serialization=False)


def main():
    photo_dir, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    crops, resized = photos(photo_dir)
    save_file({"crops": crops.contiguous(), "resized": resized},
              os.path.join(out, "photos_224.safetensors"))
    x = normalise(crops)
    imagenet_resnet("resnet18", x, out, train=True)
    imagenet_resnet("resnet50", x, out, train=False)
    small_resnet(out)
    pth_files(out)
    print("torch", torch.__version__, "torchvision", torchvision.__version__)


if __name__ == "__main__":
    main()
