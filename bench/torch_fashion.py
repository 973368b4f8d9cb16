#!/usr/bin/python3
"""PyTorch peer of firetrain's Fashion-MNIST configuration: the small-image SqueezeNet
("squeezenet_small") trained with SGD + momentum, linear warm-up and a poly/cosine/constant schedule.

Used to find the training recipe, and as a baseline to compare firetrain against (accuracy per
epoch, images/s). Reads the IDX .gz files directly (no network, no torchvision datasets).

    /usr/bin/python3 bench/torch_fashion.py --epochs 6 --batch 128 --lr 0.01 --warmup-steps 300 \
        --schedule poly --weight-decay 5e-4 --no-augment

Findings (1 thread): peak lr >= 0.04 kills the final ReLU even with a 200-300-step warm-up (loss
stays at ln 10); 0.02 learns but slower than 0.01; Caffe-style Xavier init never leaves ln 10.

Model (squeezenet_small, 28x28x1 input): conv 3x3/1 pad 1, 64 + ReLU -> maxpool 3/2 ceil ->
fire2 (16,64,64) -> fire3 (16,64,64) -> maxpool 3/2 ceil -> fire4 (32,128,128) -> fire5 (32,128,128)
-> maxpool 3/2 ceil -> fire6 (48,192,192) -> fire7 (48,192,192) -> fire8 (64,256,256) ->
fire9 (64,256,256) -> dropout 0.5 -> conv10 1x1 (classes) -> ReLU -> global average pool.
No batch norm. Spatial sizes 28 -> 14 -> 7 -> 3.
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------- data
def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    assert (magic >> 8) == 0x08, f"{path}: not unsigned-byte IDX data"
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion(root):
    def part(prefix):
        x = read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"))
        y = read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"))
        return x, y.astype(np.int64)
    return part("train"), part("t10k")


def augment(x, pad):
    """Random crop of the image padded by `pad` black pixels (the normalized value of raw 0, i.e. a
    crop of the zero-padded raw image) + random horizontal flip. x: (N, 1, H, W), normalized."""
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), value=float(augment.black))
    dy = torch.randint(0, 2 * pad + 1, (n,))
    dx = torch.randint(0, 2 * pad + 1, (n,))
    flip = torch.rand(n) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        crop = xp[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


augment.black = 0.0


# ---------------------------------------------------------------------------------------- model
class Fire(nn.Module):
    def __init__(self, cin, s, e1, e3):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, s, 1)
        self.expand1x1 = nn.Conv2d(s, e1, 1)
        self.expand3x3 = nn.Conv2d(s, e3, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], 1)


# (squeeze, expand1x1, expand3x3) per fire module, and where the max pools go (after which fire).
FIRES = [(16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128),
         (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)]


def build(arch="small", num_classes=10, stem=64, init="kaiming", width=1.0, dropout=0.5):
    """arch: small = fire2..fire9; small8 = fire2..fire8 (drops fire9); small7 = fire2..fire7."""
    nfire = {"small": 8, "small8": 7, "small7": 6}[arch]
    layers = [nn.Conv2d(1, stem, 3, padding=1), nn.ReLU(inplace=True),
              nn.MaxPool2d(3, 2, ceil_mode=True)]
    cin = stem
    for i, (s, e1, e3) in enumerate(FIRES[:nfire]):
        s, e1, e3 = (max(1, int(round(v * width))) for v in (s, e1, e3))
        layers.append(Fire(cin, s, e1, e3))
        cin = e1 + e3
        if i in (1, 3):  # after fire3 and fire5
            layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
    final = nn.Conv2d(cin, num_classes, 1)
    layers += [nn.Dropout(dropout), final, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
               nn.Flatten()]
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            if m is final:
                nn.init.normal_(m.weight, 0.0, 0.01)
            elif init == "kaiming":
                nn.init.kaiming_uniform_(m.weight)  # as torchvision squeezenet (a=0, fan_in)
            elif init == "xavier":
                # Caffe "xavier" filler: U(-a, a), a = sqrt(3 / fan_in).
                fan_in = m.weight[0].numel()
                a = math.sqrt(3.0 / fan_in)
                nn.init.uniform_(m.weight, -a, a)
            else:
                raise ValueError(init)
            nn.init.zeros_(m.bias)
    return net


def count_macs(net, shape):
    macs = [0]

    def hook(m, inp, out):
        macs[0] += out.numel() // out.shape[0] * (m.in_channels // m.groups) * \
            m.kernel_size[0] * m.kernel_size[1]

    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net.eval()
        net(torch.zeros(1, *shape))
    for h in hs:
        h.remove()
    return macs[0]


# ------------------------------------------------------------------------------------- schedule
def lr_at(step, total, peak, warmup, schedule, final_frac=0.0):
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    t = (step - warmup) / max(1, total - warmup)
    t = min(max(t, 0.0), 1.0)
    if schedule == "poly":
        return peak * (final_frac + (1 - final_frac) * (1.0 - t))
    if schedule == "cosine":
        return peak * (final_frac + (1 - final_frac) * 0.5 * (1.0 + math.cos(math.pi * t)))
    raise ValueError(schedule)


def evaluate(net, x, y, batch=1000):
    net.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = net(x[i:i + batch])
            loss += F.cross_entropy(out, y[i:i + batch], reduction="sum").item()
            correct += (out.argmax(1) == y[i:i + batch]).sum().item()
    return correct / len(x), loss / len(x)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01, help="peak learning rate")
    p.add_argument("--warmup-steps", type=int, default=300)
    p.add_argument("--schedule", choices=["poly", "cosine", "constant"], default="poly")
    p.add_argument("--final-lr-frac", type=float, default=0.0, help="lr at the end / peak")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--pad", type=int, default=2, help="random-crop padding")
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--arch", choices=["small", "small8", "small7"], default="small")
    p.add_argument("--width", type=float, default=1.0, help="multiplier on fire channels")
    p.add_argument("--stem", type=int, default=64)
    p.add_argument("--init", choices=["kaiming", "xavier"], default="kaiming")
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--train-subset", type=int, default=0, help="use the first N training images")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--nchw", action="store_true",
                   help="keep PyTorch's NCHW layout (default channels_last: ~1.5x faster on CPU)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--stop-after-steps", type=int, default=0,
                   help="screening: stop after N steps (the schedule still spans --epochs)")
    p.add_argument("--log-every", type=int, default=100, help="print the running loss every N steps")
    p.add_argument("--json", default="", help="append a JSON line with the results to this file")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    (xtr, ytr), (xte, yte) = load_fashion(args.data)
    if args.train_subset:
        xtr, ytr = xtr[:args.train_subset], ytr[:args.train_subset]
    xtr_f = xtr.astype(np.float32) / 255.0
    mean, std = float(xtr_f.mean()), float(xtr_f.std())
    augment.black = (0.0 - mean) / std
    xtr_t = torch.from_numpy((xtr_f - mean) / std).unsqueeze(1)
    xte_t = torch.from_numpy((xte.astype(np.float32) / 255.0 - mean) / std).unsqueeze(1)
    ytr_t, yte_t = torch.from_numpy(ytr), torch.from_numpy(yte)

    net = build(args.arch, 10, args.stem, args.init, args.width, args.dropout)
    params = sum(q.numel() for q in net.parameters())
    macs = count_macs(net, (1, 28, 28))
    if not args.nchw:
        fmt = torch.channels_last
        net = net.to(memory_format=fmt)
        xtr_t = xtr_t.contiguous(memory_format=fmt)
        xte_t = xte_t.contiguous(memory_format=fmt)
    print(f"config {vars(args)}")
    print(f"model squeezenet_{args.arch} width {args.width}: {params:,} parameters, "
          f"{macs / 1e6:.2f} M MACs forward per image; mean {mean:.4f} std {std:.4f}", flush=True)

    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum,
                          weight_decay=args.weight_decay)
    n = len(xtr_t)
    steps_per_epoch = n // args.batch  # drop the last partial batch
    total = steps_per_epoch * args.epochs
    step = 0
    accs, rates = [], []
    t_start = time.time()
    for epoch in range(args.epochs):
        net.train()
        perm = torch.randperm(n)
        t0 = time.time()
        run_loss, run_correct, seen = 0.0, 0, 0
        win_loss, win_n = 0.0, 0
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch:(b + 1) * args.batch]
            x, y = xtr_t[idx], ytr_t[idx]
            if not args.no_augment:
                if args.pad > 0:
                    x = augment(x, args.pad)
                if not args.no_flip and args.pad == 0:
                    flip = torch.rand(len(x)) < 0.5
                    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            if not args.nchw:
                x = x.contiguous(memory_format=torch.channels_last)
            lr = lr_at(step, total, args.lr, args.warmup_steps, args.schedule, args.final_lr_frac)
            for g in opt.param_groups:
                g["lr"] = lr
            out = net(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            run_loss += loss.item() * len(y)
            run_correct += (out.argmax(1) == y).sum().item()
            seen += len(y)
            win_loss, win_n = win_loss + loss.item(), win_n + 1
            if args.log_every and step % args.log_every == 0:
                print(f"  step {step} lr {lr:.5f} loss(last {win_n}) {win_loss / win_n:.4f}",
                      flush=True)
                win_loss, win_n = 0.0, 0
            if args.stop_after_steps and step >= args.stop_after_steps:
                break
        dt = time.time() - t0
        acc, tloss = evaluate(net, xte_t, yte_t)
        accs.append(acc)
        rates.append(seen / dt)
        print(f"epoch {epoch + 1}/{args.epochs} train_loss {run_loss / seen:.4f} "
              f"train_acc {run_correct / seen:.4f} test_loss {tloss:.4f} test_acc {acc:.4f} "
              f"lr_end {lr:.5f} img/s {seen / dt:.0f} epoch_s {dt:.1f}", flush=True)
        if args.stop_after_steps and step >= args.stop_after_steps:
            break
    elapsed = time.time() - t_start
    print(f"final test_acc {accs[-1]:.4f} best {max(accs):.4f} total_s {elapsed:.0f} "
          f"mean_img/s {np.mean(rates):.0f}")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({"args": vars(args), "params": params, "macs": macs,
                                "accs": accs, "img_s": float(np.mean(rates))}) + "\n")


if __name__ == "__main__":
    sys.exit(main())
