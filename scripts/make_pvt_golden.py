#!/usr/bin/env python3
"""Golden outputs of the CADS PVTv2 encoder, computed by PyTorch, for tests/pvt_golden.rs.

    python3 scripts/make_pvt_golden.py [tests/data/pvt_golden]

Needs torch (run by hand, not by CI; the outputs are committed). The model below is written
from ../shared/CADS.md ("Encoder", "Parameter names") with the authors' module names and PyTorch
layouts, so its `state_dict()` has exactly the keys of their `models/PVTv2.py` (stem
`patch_embed1.proj.{0,3,6}` inside a Sequential with InstanceNorm and LeakyReLU, `proj_next`,
`proj_2D.{0,3,6}`, `proj_next_2D`; `patch_embed{k}.proj` / `.proj_2D`; `attn.sr` / `attn.sr_2D`
as Conv3d / Conv2d; one depthwise Conv3d `mlp.dwconv.dwconv` shared by both paths, run with D = 1
on images). Numerics as the authors': InstanceNorm without affine (eps 1e-5), LeakyReLU 0.01,
LayerNorm eps 1e-5 in the patch embeds and the SR path and 1e-6 in blocks and stage norms, exact
(erf) GELU, softmax attention with scale head_dim^-0.5, eval mode and no drop path.

Writes into the output folder:
- `checkpoint.pth`: saved as the authors' training script saves (`torch.save` of
  `{'student': ..., 'teacher': ..., 'optimizer': ..., 'epoch': ..., 'cads_loss': ...}`); the
  teacher's keys are `backbone.<encoder name>` and `head.<DINO head>`, the student's the same
  under DDP's `module.`. The student's tensors are the teacher's (as at the start of training),
  so torch.save stores each storage once and the file stays small.
- `outputs.safetensors` (float32, channels-last as cads returns them): `volume.skip`,
  `volume.stage{1..4}` `[N, D, H, W, C]` and `image.skip`, `image.stage{1..4}` `[N, H, W, C]`.
  The inputs are not stored: both sides compute them from `input_value` below.

Every parameter is drawn at random, LayerNorm weights and all biases included (not 1 and 0), so
a tensor loaded under the wrong name changes the outputs.
"""
import collections
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_cads_checkpoint import HostTensor, write_safetensors  # noqa: E402

# The small config (tests/pvt_golden.rs mirrors it).
DIMS = [8, 16, 16, 24]
HEADS = [1, 2, 2, 3]
MLP_RATIOS = [2, 2, 2, 2]
DEPTHS = [1, 1, 1, 1]
SR = [4, 2, 2, 1]
VOLUME = [1, 1, 16, 32, 36]  # N, C, D, H, W (H ≠ W, W/4 odd)
IMAGE = [2, 1, 32, 48]  # N, C, H, W


def input_value(i):
    """Element i (row-major, C = 1 so NCDHW and NDHWC agree) of both inputs."""
    return math.sin(0.731 * i) * math.cos(0.117 * i)


def make_input(shape):
    n = 1
    for d in shape:
        n *= d
    values = torch.tensor([input_value(i) for i in range(n)], dtype=torch.float64)
    return values.to(torch.float32).reshape(shape)


class ConvStem(nn.Module):
    """Stage-1 patch embed: three (conv, IN, LReLU) triples in `proj` (convs at 0, 3, 6), a
    stride-(1,2,2) conv `proj_next`; the same in 2D as `proj_2D`, `proj_next_2D`; `norm`."""

    def __init__(self, cin, c):
        super().__init__()

        def triple(conv, norm, first_in):
            layers = []
            for i in range(3):
                if i == 0:
                    layers.append(conv(first_in, c, 7, stride=2, padding=3, bias=True))
                else:
                    layers.append(conv(c, c, 3, stride=1, padding=1, bias=False))
                layers += [norm(c, eps=1e-5, affine=False), nn.LeakyReLU(0.01)]
            return nn.Sequential(*layers)

        self.proj = triple(nn.Conv3d, nn.InstanceNorm3d, cin)
        self.proj_next = nn.Conv3d(c, c, 3, stride=(1, 2, 2), padding=1, bias=True)
        self.proj_2D = triple(nn.Conv2d, nn.InstanceNorm2d, cin)
        self.proj_next_2D = nn.Conv2d(c, c, 3, stride=2, padding=1, bias=True)
        self.norm = nn.LayerNorm(c, eps=1e-5)

    def forward(self, x):
        volume = x.dim() == 5
        skip = (self.proj if volume else self.proj_2D)(x)
        y = (self.proj_next if volume else self.proj_next_2D)(skip)
        grid = y.shape[2:]
        tokens = self.norm(y.flatten(2).transpose(1, 2))
        return skip, tokens, grid


class PatchEmbed(nn.Module):
    def __init__(self, cin, c):
        super().__init__()
        self.proj = nn.Conv3d(cin, c, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(c, eps=1e-5)
        self.proj_2D = nn.Conv2d(cin, c, 3, stride=2, padding=1)

    def forward(self, x):
        y = self.proj(x) if x.dim() == 5 else self.proj_2D(x)
        return self.norm(y.flatten(2).transpose(1, 2)), y.shape[2:]


class Attention(nn.Module):
    def __init__(self, c, heads, sr):
        super().__init__()
        self.heads, self.sr_ratio = heads, sr
        self.q = nn.Linear(c, c)
        self.kv = nn.Linear(c, 2 * c)
        self.proj = nn.Linear(c, c)
        if sr > 1:
            self.sr_2D = nn.Conv2d(c, c, sr, stride=sr)
            self.sr = nn.Conv3d(c, c, sr, stride=sr)
            self.norm = nn.LayerNorm(c, eps=1e-5)

    def forward(self, x, grid):
        n, l, c = x.shape
        hd = c // self.heads
        q = self.q(x).reshape(n, l, self.heads, hd).transpose(1, 2)  # [N, h, L, hd]
        src = x
        if self.sr_ratio > 1:
            vol = x.transpose(1, 2).reshape(n, c, *grid)
            reduced = self.sr(vol) if len(grid) == 3 else self.sr_2D(vol)
            src = self.norm(reduced.flatten(2).transpose(1, 2))
        kv = self.kv(src).reshape(n, -1, 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]  # [N, h, M, hd]
        a = torch.softmax((q @ k.transpose(-2, -1)) * hd**-0.5, dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(n, l, c))


class DepthwiseConv(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dwconv = nn.Conv3d(c, c, 3, padding=1, groups=c, bias=True)

    def forward(self, x, grid):
        n, l, c = x.shape
        shape = grid if len(grid) == 3 else (1, *grid)  # images: D = 1
        y = self.dwconv(x.transpose(1, 2).reshape(n, c, *shape))
        return y.flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    def __init__(self, c, hidden):
        super().__init__()
        self.fc1 = nn.Linear(c, hidden)
        self.dwconv = DepthwiseConv(hidden)
        self.fc2 = nn.Linear(hidden, c)

    def forward(self, x, grid):
        return self.fc2(F.gelu(self.dwconv(self.fc1(x), grid)))  # exact (erf) GELU


class Block(nn.Module):
    def __init__(self, c, heads, ratio, sr):
        super().__init__()
        self.norm1 = nn.LayerNorm(c, eps=1e-6)
        self.attn = Attention(c, heads, sr)
        self.norm2 = nn.LayerNorm(c, eps=1e-6)
        self.mlp = Mlp(c, c * ratio)

    def forward(self, x, grid):
        x = x + self.attn(self.norm1(x), grid)
        return x + self.mlp(self.norm2(x), grid)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        for k in range(4):
            if k == 0:
                embed = ConvStem(1, DIMS[0])
            else:
                embed = PatchEmbed(DIMS[k - 1], DIMS[k])
            blocks = nn.ModuleList(
                [Block(DIMS[k], HEADS[k], MLP_RATIOS[k], SR[k]) for _ in range(DEPTHS[k])]
            )
            setattr(self, f"patch_embed{k + 1}", embed)
            setattr(self, f"block{k + 1}", blocks)
            setattr(self, f"norm{k + 1}", nn.LayerNorm(DIMS[k], eps=1e-6))

    def forward(self, x):
        n = x.shape[0]
        stages = []
        for k in range(4):
            embed = getattr(self, f"patch_embed{k + 1}")
            if k == 0:
                skip, t, grid = embed(x)
            else:
                t, grid = embed(x)
            for block in getattr(self, f"block{k + 1}"):
                t = block(t, grid)
            t = getattr(self, f"norm{k + 1}")(t)
            out = t.reshape(n, *grid, -1)  # channels-last, as cads returns it
            stages.append(out)
            x = out.movedim(-1, 1).contiguous()
        return skip.movedim(1, -1).contiguous(), stages


class Head(nn.Module):
    """A tiny DINO-style head, only so the checkpoint carries `head.` keys as theirs does."""

    def __init__(self, cin, out):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(cin, 16), nn.GELU(), nn.Linear(16, 8))
        self.last_layer = nn.utils.weight_norm(nn.Linear(8, out, bias=False))


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Encoder()
        self.head = Head(DIMS[3], 10)


def randomise(model, generator):
    """Every parameter random: weights ~ N(0, 1/fan_in) scale, LayerNorm weight 1 + N(0, 0.2),
    biases N(0, 0.1), so no two tensors of one shape are interchangeable."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=generator))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(fan_in))


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/data/pvt_golden"
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1234)
    teacher = Wrapper()
    randomise(teacher, generator)
    teacher.eval()

    goldens = {}
    with torch.no_grad():
        for what, shape in (("volume", VOLUME), ("image", IMAGE)):
            skip, stages = teacher.backbone(make_input(shape))
            named = [("skip", skip)] + [(f"stage{k + 1}", s) for k, s in enumerate(stages)]
            for name, t in named:
                t = t.contiguous().to(torch.float32)
                goldens[f"{what}.{name}"] = HostTensor(list(t.shape), t.numpy().astype("<f4").tobytes())
                print(f"{what}.{name}: {list(t.shape)}")

    teacher_state = teacher.state_dict()
    student_state = collections.OrderedDict(("module." + k, v) for k, v in teacher_state.items())
    checkpoint = {
        "student": student_state,
        "teacher": teacher_state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.0, "weight_decay": 0.04}]},
        "epoch": 1,
        "cads_loss": collections.OrderedDict(center=torch.zeros(1, 10)),
    }
    torch.save(checkpoint, os.path.join(out_dir, "checkpoint.pth"))
    write_safetensors(goldens, os.path.join(out_dir, "outputs.safetensors"))
    encoder_params = sum(p.numel() for p in teacher.backbone.parameters())
    print(f"encoder parameters: {encoder_params}; state keys: {len(teacher_state)}")
    for name in ("checkpoint.pth", "outputs.safetensors"):
        print(f"{name}: {os.path.getsize(os.path.join(out_dir, name))} bytes")


if __name__ == "__main__":
    main()
