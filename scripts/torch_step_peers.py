"""Whole training steps in PyTorch, the peers of `cads bench`'s whole-step cases.

Imported by scripts/bench_torch_peers.py, which times them and measures their peak memory. Each
case builds our own PyTorch model (make_pvt_golden's PVTv2 encoder, written from CADS.md with the
authors' module names, set to the sizes below) and returns a `StepCase`: `make()` draws fresh
inputs, `step(*inputs)` runs one whole step, `holders` lists what keeps tensors alive between
steps (modules, optimizers, dicts of tensors; the CPU memory measure counts their bytes).

- `pvt_encoder_fwd_bwd`: as src/bench/pvt.rs, the PVTv2-b1 encoder (volume path; the 2D-only
  modules are removed so their unused weights do not count in the memory) forward on [2, 1, D, H,
  W] and backward from a fixed random gradient on the stage-4 output; drop path 0.1 (training).
- `pretrain_step`: as src/bench/pretrain.rs, one CADS iteration (teacher, student, loss, backward,
  per-tensor clip, AdamW, EMA, center) at the `tiny` and `cads` (b1) sizes; drop path in both
  networks (`teacher_drop_path` of the recipe).
- `segment_step`: as src/bench/segment.rs, one PVT-UNet step (deep-supervised Dice + CE, SGD
  Nesterov) with drop path 0.1 in the encoder.

Precision: `F32` runs everything in float32 (the caller turns TF32 off). `amp` runs the forward
under torch.autocast — float16 on CUDA, with a GradScaler (dynamic loss scaling, the clip after
unscale_) around the optimizer; bfloat16 on the CPU, where the exponent range of bf16 needs no
scaler. The weights, gradients and optimizer state stay float32 (master weights) either way.
"""
import contextlib
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_cads_step_golden as golden  # noqa: E402
import make_pvt_golden as pvt  # noqa: E402

N = 2
# PVTv2-b1 as CADS configures it: (dims, heads, MLP ratios, depths, SR ratios); stem = dims[0].
B1 = ([64, 128, 320, 512], [1, 2, 5, 8], [8, 8, 4, 4], [2, 2, 2, 2], [8, 4, 2, 1])
DROP_PATH = 0.1


class Precision:
    """f32, or autocast with the device's half type."""

    def __init__(self, name, dev):
        self.name = name
        self.dtype = None
        if name == "amp":
            self.dtype = torch.float16 if dev == "cuda" else torch.bfloat16
        elif name != "f32":
            raise ValueError(f"precision: expected f32 or amp, got {name!r}")
        self.dev = dev

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.dev, dtype=self.dtype)

    def scaler(self):
        """A GradScaler where the half type needs one (float16), else None."""
        return torch.amp.GradScaler(self.dev) if self.dtype == torch.float16 else None


class StepCase:
    def __init__(self, step, make, holders):
        self.step, self.make, self.holders = step, make, holders


def configure(dims, heads, ratios, depths, sr):
    """Set make_pvt_golden's module-level sizes; the next Encoder() is built with them."""
    pvt.DIMS, pvt.HEADS, pvt.MLP_RATIOS, pvt.DEPTHS, pvt.SR = dims, heads, ratios, depths, sr


def drop_path(x, p, training):
    """Stochastic depth: each sample's branch is dropped with probability p, kept ones scaled
    by 1 / (1 − p)."""
    if not training or p == 0.0:
        return x
    keep = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device) >= p
    return x * keep.to(x.dtype) / (1.0 - p)


class DropPathBlock(pvt.Block):
    """make_pvt_golden's block (which has no drop path: its goldens are deterministic) with it."""

    drop_prob = 0.0

    def forward(self, x, grid):
        x = x + drop_path(self.attn(self.norm1(x), grid), self.drop_prob, self.training)
        return x + drop_path(self.mlp(self.norm2(x), grid), self.drop_prob, self.training)


def add_drop_path(encoder, rate):
    """Rates rising linearly from 0 to `rate` over the blocks, as PvtConfig::drop_path_rates."""
    blocks = [b for k in range(4) for b in getattr(encoder, f"block{k + 1}")]
    for i, b in enumerate(blocks):
        b.__class__ = DropPathBlock
        b.drop_prob = rate * i / (len(blocks) - 1) if len(blocks) > 1 else 0.0


def strip_image_path(encoder):
    """Remove the 2D-only modules (cads builds none with `with_image_path: false`)."""
    for m in list(encoder.modules()):
        for name, _ in list(m.named_children()):
            if name.endswith("_2D"):
                setattr(m, name, None)


def stage_grids(dhw):
    """Stage grids of a [D, H, W] input: stem (D/2, H/4, W/4), then ⌈·/2⌉ per stage."""
    g = [dhw[0] // 2, dhw[1] // 4, dhw[2] // 4]
    out = [g]
    for _ in range(3):
        g = [-(-v // 2) for v in g]
        out.append(g)
    return out


def volume(dev, *dhw):
    return torch.rand(N, 1, *dhw, device=dev) * 2 - 1


def encoder_step(dev, prec, dhw):
    configure(*B1)
    enc = pvt.Encoder()
    strip_image_path(enc)
    add_drop_path(enc, DROP_PATH)
    enc = enc.to(dev).train()
    params = list(enc.parameters())
    g4 = stage_grids(dhw)[3]

    def make():
        return volume(dev, *dhw), torch.rand(N, *g4, B1[0][3], device=dev) * 2 - 1

    def step(x, g):
        for p in params:
            p.grad = None
        with prec.autocast():
            _, stages = enc(x)
        stages[3].backward(g.to(stages[3].dtype))

    return StepCase(step, make, [enc])


PRETRAIN_PRESETS = {
    # name: (encoder sizes, (head hidden, bottleneck, K)), as CadsConfig::tiny() and ::cads().
    "tiny_n2": (([16, 32, 48, 64], [1, 2, 3, 4], [2, 2, 2, 2], [1, 1, 1, 1], [8, 4, 2, 1]),
                (128, 64, 256)),
    "b1_n2": (B1, (2048, 256, 60000)),
}


def pretrain_step(dev, prec, preset):
    sizes, (hidden, bottleneck, k) = PRETRAIN_PRESETS[preset]
    configure(*sizes)
    golden.HIDDEN, golden.BOTTLENECK, golden.K = hidden, bottleneck, k
    golden.TEACHER_TEMP = 0.04
    student = golden.Student()
    for m in student.modules():
        if isinstance(m, golden.DinoHead):
            nn.init.normal_(m.last_layer.weight_v, std=0.02)
    teacher = golden.Teacher()
    teacher.load_state_dict(student.state_dict(), strict=False)
    for net in (student.backbone, teacher.backbone):
        add_drop_path(net, DROP_PATH)
    student, teacher = student.to(dev).train(), teacher.to(dev).train()
    for p in teacher.parameters():
        p.requires_grad_(False)
    params = list(student.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() > 1], "weight_decay": 0.04},
                             {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}],
                            lr=5e-4)
    scaler = prec.scaler()
    by_name = dict(student.named_parameters())
    ema_t, ema_s = zip(*[(pt, by_name[name]) for name, pt in teacher.named_parameters()])
    state = {"center": torch.zeros(1, k, device=dev)}

    def make():
        return volume(dev, 16, 48, 48), volume(dev, 16, 48, 48), volume(dev, 96, 96)

    def step(x1, x2, xd):
        opt.zero_grad(set_to_none=True)
        x12 = torch.cat([x1, x2])
        with prec.autocast():
            with torch.no_grad():
                t = teacher(x12)
            out = student(x12, xd)
            loss, _ = golden.cads_loss(out, t, state["center"])
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        for p in params:  # DINO's clip_gradients: each tensor on its own
            if p.grad is not None:
                torch.nn.utils.clip_grad_norm_(p, 0.3)
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()
        with torch.no_grad():
            torch._foreach_mul_(ema_t, 0.996)
            torch._foreach_add_(ema_t, ema_s, alpha=0.004)
            # in place, so no memory of an earlier step is freed in this one (the CPU memory
            # measure could not see that free)
            state["center"].mul_(0.9).add_(t.float().mean(0, keepdim=True), alpha=0.1)

    return StepCase(step, make, [student, teacher, opt, state])


class PvtUnet(nn.Module):
    """The PVTv2-b1 encoder under src/models/pvt_unet.rs's decoder: transposed conv kernel =
    stride up to each skip ((1, 2, 2) onto the stem skip, (2, 2, 2) above), concat, [Conv 3³ no
    bias → InstanceNorm → LeakyReLU 0.01] × 2; a final k2 s2 up to 32 channels and a block;
    1×1×1 heads on the five outputs (deep supervision)."""

    STRIDES = [(1, 1, 1), (2, 2, 2), (2, 4, 4), (4, 8, 8), (8, 16, 16)]

    def __init__(self, classes, final=32):
        super().__init__()
        configure(*B1)
        dims = B1[0]
        self.encoder = pvt.Encoder()
        strip_image_path(self.encoder)
        add_drop_path(self.encoder, DROP_PATH)
        skip = [dims[0], dims[0], dims[1], dims[2]]
        below = [dims[0], dims[1], dims[2], dims[3]]
        self.ups = nn.ModuleList(
            nn.ConvTranspose3d(below[l], skip[l], st, stride=st)
            for l, st in enumerate([(1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)]))
        self.blocks = nn.ModuleList(conv_block(2 * c, c) for c in skip)
        self.final_up = nn.ConvTranspose3d(skip[0], final, 2, stride=2)
        self.final_block = conv_block(final, final)
        self.heads = nn.ModuleList(nn.Conv3d(c, classes, 1) for c in [final] + skip)

    def forward(self, x):
        skip, stages = self.encoder(x)  # channels-last, as cads returns them
        skips = [s.movedim(-1, 1) for s in [skip] + stages[:3]]
        h = stages[3].movedim(-1, 1)
        outs = []
        for l in range(3, -1, -1):
            h = self.blocks[l](torch.cat([self.ups[l](h), skips[l]], 1))
            outs.append(self.heads[l + 1](h))
        h = self.final_block(self.final_up(h))
        outs.append(self.heads[0](h))
        return outs[::-1]


def conv_block(cin, cout):
    layers = []
    for c in (cin, cout):
        layers += [nn.Conv3d(c, cout, 3, padding=1, bias=False),
                   nn.InstanceNorm3d(cout, eps=1e-5, affine=False), nn.LeakyReLU(0.01)]
    return nn.Sequential(*layers)


def seg_loss(outs, labels, classes):
    """nnU-Net's deep-supervised Dice + CE: weights 2^-i with the coarsest off, normalised; Dice
    over the foreground per sample (smoothing 1e-5); output i's labels sampled at j·s + s//2."""
    raw = [0.5 ** i for i in range(4)] + [0.0]
    total = 0.0
    for o, w, s in zip(outs, raw, PvtUnet.STRIDES):
        if w == 0.0:
            continue
        lab = labels[:, s[0] // 2::s[0], s[1] // 2::s[1], s[2] // 2::s[2]]
        o = o.float()
        ce = F.cross_entropy(o, lab)
        q = torch.softmax(o, 1)
        t = F.one_hot(lab, classes).movedim(-1, 1).to(q.dtype)
        dice = (2 * (q * t).sum((2, 3, 4)) + 1e-5) / (q.sum((2, 3, 4)) + t.sum((2, 3, 4)) + 1e-5)
        total = total + w / sum(raw) * (ce + 1 - dice[:, 1:].mean())
    return total


def segment_step(dev, prec, dhw, classes=2):
    torch.manual_seed(0)
    net = PvtUnet(classes).to(dev).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True,
                          weight_decay=3e-5)
    scaler = prec.scaler()

    def make():
        return volume(dev, *dhw), torch.randint(0, classes, (N, *dhw), device=dev)

    def step(x, labels):
        opt.zero_grad(set_to_none=True)
        with prec.autocast():
            loss = seg_loss(net(x), labels, classes)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    return StepCase(step, make, [net, opt])


def encoder_flops(dims, ratios, depths, srs, dhw):
    """The 3D encoder's forward FLOPs of one sample (src/bench/pvt.rs forward_flops)."""
    vol = lambda g: g[0] * g[1] * g[2]  # noqa: E731
    s = dims[0]
    g0 = [dhw[0] // 2, dhw[1] // 2, dhw[2] // 2]
    grids = stage_grids(dhw)
    f = 2 * vol(g0) * 343 * s + 2 * 2 * vol(g0) * 27 * s * s + 2 * vol(grids[0]) * 27 * s * dims[0]
    for st in range(4):
        l, c, r, sr = vol(grids[st]), dims[st], ratios[st], srs[st]
        if st > 0:
            f += 2 * l * 27 * dims[st - 1] * c
        m = vol([v // sr for v in grids[st]]) if sr > 1 else l
        sr_conv = 2 * m * sr ** 3 * c * c if sr > 1 else 0
        block = (2 * l * c * c + sr_conv + 2 * m * c * 2 * c + 4 * l * m * c + 2 * l * c * c
                 + 2 * 2 * l * c * r * c + 2 * l * 27 * r * c)
        f += depths[st] * block
    return f


def decoder_flops(dhw, classes=2, final=32):
    """The PVT-UNet decoder's forward FLOPs of one sample (src/bench/segment.rs forward_flops)."""
    dims = B1[0]
    vol = lambda st: (dhw[0] // st[0]) * (dhw[1] // st[1]) * (dhw[2] // st[2])  # noqa: E731
    skip = [dims[0], dims[0], dims[1], dims[2]]
    below = [dims[0], dims[1], dims[2], dims[3]]
    f = 0.0
    for l in range(4):
        v, c = vol(PvtUnet.STRIDES[l + 1]), skip[l]
        f += 2 * v * below[l] * c + 2 * v * 27 * (2 * c * c + c * c) + 2 * v * c * classes
    v = vol((1, 1, 1))
    return f + 2 * v * skip[0] * final + 2 * v * 27 * 2 * final * final + 2 * v * final * classes


def cases():
    """(op, case, build(dev, precision) → StepCase, FLOPs per step, small) for every step case;
    `small` ones fit a CPU run (the others take minutes and tens of GB there)."""
    dims, _, ratios, depths, sr = B1
    for dhw, small in (([16, 48, 48], True), ([64, 160, 160], False)):
        name = f"vol{dhw[0]}x{dhw[1]}x{dhw[2]}_n2"
        f = encoder_flops(dims, ratios, depths, sr, dhw)
        yield ("pvt_encoder_fwd_bwd", name, lambda dev, p, dhw=dhw: encoder_step(dev, p, dhw),
               3 * N * f, small)
    for preset, (sizes, _) in PRETRAIN_PRESETS.items():
        # The 3D encoder only: teacher forward on 2B views (1×) + student forward and backward
        # on them (3×), as src/bench/pretrain.rs.
        f = encoder_flops(sizes[0], sizes[2], sizes[3], sizes[4], [16, 48, 48])
        yield ("pretrain_step", preset, lambda dev, p, preset=preset: pretrain_step(dev, p, preset),
               4 * 2 * N * f, True)
    for dhw, small in (([16, 64, 64], True), ([64, 160, 160], False)):
        name = f"vol{dhw[0]}x{dhw[1]}x{dhw[2]}_n2"
        f = encoder_flops(dims, ratios, depths, sr, dhw) + decoder_flops(dhw)
        yield ("segment_step", name, lambda dev, p, dhw=dhw: segment_step(dev, p, dhw),
               3 * N * f, small)
