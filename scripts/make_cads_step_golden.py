#!/usr/bin/env python3
"""Goldens of two CADS training steps, computed by PyTorch, for tests/pretrain_step.rs.

    python3 scripts/make_cads_step_golden.py [tests/data/cads_step]

Needs torch (run by hand, not by CI; the outputs are committed). Our own small PyTorch
implementation, written from ../shared/CADS.md ("Heads and loss", "One step"), of:
- the student (PVTv2 encoder with its 2D path, from make_pvt_golden.py, + four DINO heads on the
  pooled stage 1..4 outputs: `head_1.`, `head_2.`, `head_3.`, `head.`) and the teacher (encoder
  + stage-4 head `head.`), with the authors' names;
- the DINO head: Linear → GELU → Linear → GELU → Linear → L2-normalise → weight-normalised
  Linear (no bias) with g fixed at 1 (w_k = v_k / ‖v_k‖, written out here rather than through
  torch's weight_norm helper);
- the loss: P_s = softmax(s/τs), P_t = softmax((t − c)/τt) without gradient,
  L_k = [H(Pt(x1),Psk(x2)) + H(Pt(x1),Psk(xD)) + H(Pt(x2),Psk(x1)) + H(Pt(x2),Psk(xD))]/4,
  L = mean_k L_k; the center update c ← 0.9c + 0.1·mean(teacher logits);
- the step in the authors' order: teacher forward, student forward ((x1, x2) then xD), loss,
  backward, per-tensor clipping at 0.3 (DINO clip_gradients), AdamW (torch.optim.AdamW, weight
  decay on the rank ≥ 2 tensors only), EMA of the teacher by name, center update.

Deterministic: drop path 0 in both networks. Every student tensor is random (LayerNorm weights
and biases included), the teacher starts as the student's copy (as the authors'), so it differs
from the student from step 2 on; the center starts non-zero. The inputs are formulas (`wave`),
computed again by the test, so only weights and results are stored.

Writes (float32, PyTorch layouts and names; ~420 kB in all):
- `student.safetensors`: the initial student (loaded strictly by the test; the teacher copies
  its `backbone.` and `head.`);
- `goldens.safetensors`: `center0` `[1, K]`, `step{1,2}.losses` `[5]` (L, L_1..L_4),
  `step{1,2}.center` `[1, K]`, `grad.<name>` (step 1, before clipping), `student.<name>` and
  `teacher.<name>` after step 2.
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_pvt_golden as pvt  # noqa: E402
from convert_cads_checkpoint import HostTensor, write_safetensors  # noqa: E402

# The config (tests/pretrain_step.rs mirrors it). Encoder: make_pvt_golden's small config.
HIDDEN, BOTTLENECK, K = 32, 16, 64
B = 2
VOLUME = [B, 1, 16, 32, 32]
IMAGE = [B, 1, 32, 32]
STUDENT_TEMP = 0.1
TEACHER_TEMP = 0.04  # epoch 0 of the ramp
CENTER_MOMENTUM = 0.9
CLIP = 0.3
STEPS = 2
# Schedules over 2 epochs × 2 iterations, no warm-up (both steps in epoch 0: τt = 0.04, last
# layer not frozen): DINO cosine_scheduler(base, final, 4 iterations) at iterations 0 and 1.
TOTAL_ITERATIONS = 4
LR = (1e-3, 2e-6)  # peak = base_lr 1e-3 × batch 2 / reference batch 2, min_lr
WEIGHT_DECAY = (0.04, 0.4)
TEACHER_MOMENTUM = (0.9, 1.0)

GRAD_NAMES = [
    "backbone.patch_embed1.proj.0.weight",
    "backbone.patch_embed1.proj_2D.0.weight",
    "backbone.block1.0.attn.sr_2D.weight",
    "backbone.block2.0.mlp.dwconv.dwconv.weight",
    "backbone.block3.0.mlp.fc1.bias",
    "backbone.block4.0.mlp.fc2.weight",
    "backbone.norm4.weight",
    "head.mlp.0.weight",
    "head.last_layer.weight_v",
    "head_1.mlp.4.bias",
    "head_1.last_layer.weight_v",
    "head_3.mlp.2.weight",
]
TEACHER_NAMES = [
    "backbone.patch_embed1.proj.0.weight",
    "backbone.block4.0.mlp.fc2.weight",
    "backbone.norm1.bias",
    "head.mlp.4.weight",
    "head.last_layer.weight_v",
]


def wave(shape, a, b, phase):
    """Input element i (row-major; C = 1 so NCDHW = NDHWC): sin(a·i + phase)·cos(b·i)."""
    n = math.prod(shape)
    values = [math.sin(a * i + phase) * math.cos(b * i) for i in range(n)]
    return torch.tensor(values, dtype=torch.float64).to(torch.float32).reshape(shape)


def cosine_at(schedule, it):
    """DINO cosine_scheduler without warm-up: final + ½(base − final)(1 + cos(π·it/total))."""
    base, final = schedule
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * it / TOTAL_ITERATIONS))


class DinoHead(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(cin, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, HIDDEN), nn.GELU(),
            nn.Linear(HIDDEN, BOTTLENECK),
        )
        self.last_layer = nn.Module()
        # state_dict order of a weight-normed Linear: weight_g, then weight_v.
        self.last_layer.register_buffer("weight_g", torch.ones(K, 1))
        self.last_layer.weight_v = nn.Parameter(torch.empty(K, BOTTLENECK))

    def forward(self, x):
        z = F.normalize(self.mlp(x), dim=-1, p=2)
        v = self.last_layer.weight_v
        w = self.last_layer.weight_g * v / v.norm(dim=1, keepdim=True)
        return z @ w.t()


def pooled(stages):
    """Channels-last stage outputs [N, *grid, C] → [N, C]."""
    return [s.flatten(1, -2).mean(1) for s in stages]


class Student(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = pvt.Encoder()
        self.head = DinoHead(pvt.DIMS[3])
        self.head_1 = DinoHead(pvt.DIMS[0])
        self.head_2 = DinoHead(pvt.DIMS[1])
        self.head_3 = DinoHead(pvt.DIMS[2])

    def forward(self, volume, image):
        _, sv = self.backbone(volume)
        _, si = self.backbone(image)
        feats = [torch.cat([a, b]) for a, b in zip(pooled(sv), pooled(si))]
        heads = [self.head_1, self.head_2, self.head_3, self.head]
        return [h(f) for h, f in zip(heads, feats)]


class Teacher(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = pvt.Encoder()
        self.head = DinoHead(pvt.DIMS[3])

    def forward(self, volume):
        _, s = self.backbone(volume)
        return self.head(pooled(s)[3])


def cads_loss(student_out, teacher_out, center):
    pt = F.softmax((teacher_out - center) / TEACHER_TEMP, dim=-1).detach().chunk(2)
    stage_losses = []
    for s in student_out:
        x1, x2, xd = (s / STUDENT_TEMP).chunk(3)
        h = lambda p, q: torch.sum(-p * F.log_softmax(q, dim=-1), dim=-1).mean()  # noqa: E731
        stage_losses.append((h(pt[0], x2) + h(pt[0], xd) + h(pt[1], x1) + h(pt[1], xd)) / 4)
    return sum(stage_losses) / 4, stage_losses


def host(t):
    t = t.detach().contiguous().to(torch.float32)
    return HostTensor(list(t.shape), t.numpy().astype("<f4").tobytes())


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/data/cads_step"
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2024)
    student = Student()
    pvt.randomise(student, gen)
    # Heads at the scale the authors' init gives (trunc-normal 0.02 would make the pooled
    # features barely matter); weight_v as PyTorch's Linear default U(±1/√in).
    with torch.no_grad():
        for name, p in student.named_parameters():
            if name.endswith("weight_v"):
                p.uniform_(-1 / math.sqrt(BOTTLENECK), 1 / math.sqrt(BOTTLENECK), generator=gen)
    teacher = Teacher()
    teacher.load_state_dict(student.state_dict(), strict=False)
    for p in teacher.parameters():
        p.requires_grad = False

    x1 = wave(VOLUME, 0.731, 0.117, 0.0)
    x2 = wave(VOLUME, 0.377, 0.071, 1.0)
    drr = wave(IMAGE, 0.193, 0.0517, 0.5)
    center = 0.1 * wave([1, K], 0.9, 0.0, 0.3)

    tensors = {"center0": host(center)}
    write_safetensors({k: host(v) for k, v in student.state_dict().items()},
                      os.path.join(out_dir, "student.safetensors"))

    named = dict(student.named_parameters())
    regularised = [p for n, p in named.items() if not (n.endswith(".bias") or p.dim() == 1)]
    others = [p for n, p in named.items() if n.endswith(".bias") or p.dim() == 1]
    opt = torch.optim.AdamW([{"params": regularised}, {"params": others, "weight_decay": 0.0}])

    for step in range(STEPS):
        for i, group in enumerate(opt.param_groups):
            group["lr"] = cosine_at(LR, step)
            if i == 0:  # only the regularised group is decayed
                group["weight_decay"] = cosine_at(WEIGHT_DECAY, step)
        with torch.no_grad():
            t_out = teacher(torch.cat([x1, x2]))
        s_out = student(torch.cat([x1, x2]), drr)
        loss, stage_losses = cads_loss(s_out, t_out, center)
        tensors[f"step{step + 1}.losses"] = host(torch.stack([loss] + stage_losses))
        opt.zero_grad()
        loss.backward()
        if step == 0:
            for n in GRAD_NAMES:
                tensors[f"grad.{n}"] = host(named[n].grad)
        for p in student.parameters():  # DINO clip_gradients
            norm = p.grad.data.norm(2)
            coef = CLIP / (norm + 1e-6)
            if coef < 1:
                p.grad.data.mul_(coef)
        opt.step()
        with torch.no_grad():
            m = cosine_at(TEACHER_MOMENTUM, step)
            sp = dict(student.named_parameters())
            for n, p in teacher.named_parameters():
                p.mul_(m).add_((1 - m) * sp[n].detach())
            center = center * CENTER_MOMENTUM + t_out.mean(0, keepdim=True) * (1 - CENTER_MOMENTUM)
        tensors[f"step{step + 1}.center"] = host(center)
        print(f"step {step + 1}: loss {loss.item():.6f} stages "
              f"{[round(x.item(), 6) for x in stage_losses]} momentum {m}")

    for n in GRAD_NAMES:
        tensors[f"student.{n}"] = host(named[n])
    tp = dict(teacher.named_parameters())
    for n in TEACHER_NAMES:
        tensors[f"teacher.{n}"] = host(tp[n])
    write_safetensors(tensors, os.path.join(out_dir, "goldens.safetensors"))
    count = sum(p.numel() for p in student.parameters())
    print(f"student parameters: {count}")
    for name in sorted(os.listdir(out_dir)):
        print(f"{name}: {os.path.getsize(os.path.join(out_dir, name))} bytes")


if __name__ == "__main__":
    main()
