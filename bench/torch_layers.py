"""Per-layer forward and backward wall time of a PyTorch SqueezeNet training step on the CPU, timed
in situ, with the same row names as `firetrain bench layers` (the PyTorch side of
bench/layers_vs_torch.sh). Network and step as ../shared/peers/torch_step.py: torchvision's
squeezenet1_0/1_1, channels_last, CrossEntropyLoss, SGD (momentum 0.9, weight decay 2e-4); --bf16
autocasts the forward pass to bfloat16 (PyTorch's CPU mixed precision). Needs python3-torch and
python3-torchvision (Debian: PyTorch 1.13 + oneDNN 2.6).

Usage: /usr/bin/python3 bench/torch_layers.py [--arch squeezenet1_0] [--batch 32] [--size 224]
           [--threads 2] [--steps 5] [--warmup 2] [--bf16] [--device cpu|cuda] [--csv FILE]

--device cuda (the GPU side of `firetrain bench layers --device cuda`): the model and data on
the GPU, cudnn.benchmark on, TF32 off (as firetrain's fp32), --bf16 autocasts to bfloat16 on
CUDA; every hook and step boundary first waits for the GPU (torch.cuda.synchronize), as
firetrain's profile waits after every layer, so a row holds its layer's kernels and their
launches. The backward engine then runs the CUDA graph on its device thread with the same
ordering rules (the attribution check below still applies and is printed).

What is measured. Steps alternate like firetrain's: even steps without hooks (the whole step's
time), odd steps with hooks (per layer); each figure is the median over --steps steps after
--warmup pairs. A row ("group") is one firetrain layer: conv1 = features.0 Conv2d + features.1 ReLU,
maxpool = MaxPool2d, fireN = one Fire module, dropout = classifier.0, conv10 = classifier.1 Conv2d
+ classifier.2 ReLU, avgpool = classifier.3 (torch.flatten and the loss are in no row, as in
firetrain, where softmax+cross-entropy is outside the layers too).
  fwd_ms: from a forward pre-hook on the group's first module to a forward hook on its last.
    Eager CPU ops are synchronous, so this brackets exactly the group's ops (plus ~us of hooks).
  bwd_ms: the autograd engine runs a CPU graph on the calling thread, one node at a time, picking
    the ready node with the highest sequence number (= created latest in forward), and
    AccumulateGrad nodes (parameter gradients) before anything else. So the backward of this
    chain-shaped net is a sequence of contiguous per-group windows, in reverse forward order.
    A tensor hook on the group's output fires just before the group's first backward node (the
    grad_fn of that output, e.g. ReluBackward or CatBackward) runs; the window of group g lasts
    until the hook on group g-1's output fires (group g-1's output is group g's input, and its
    grad_fn can only run once every node of group g that feeds it has run), and for the first
    group until loss.backward() returns. The window thus holds the group's input-gradient and
    weight-gradient kernels, the AccumulateGrad of its parameters, the bf16->fp32 casts of its
    weight gradients under --bf16, and the engine's own bookkeeping between those nodes.
    This is checked on every hooked step: a hook on each parameter (fires when its AccumulateGrad
    runs) must land inside its group's window, and the windows must come in order; the tally is
    printed. (register_full_backward_hook is not used: it wraps module inputs/outputs in extra
    autograd nodes, does not mix with the in-place ReLUs, and 1.13 has no backward pre-hook.)
  Perturbation: the printed whole step with hooks vs without says what the hooks cost.
Prints a table like firetrain's and, with --csv, one CSV row per layer."""
import argparse, functools, re, statistics, time
import torch
from torch import nn

try:
    import torchvision
    from torchvision.models.squeezenet import Fire
    TV = torchvision.__version__
except ImportError:  # same modules and indices as torchvision 0.14's squeezenet (weights init aside)
    torchvision, TV = None, "none (local copy)"

    class Fire(nn.Module):
        def __init__(self, cin, sq, e1, e3):
            super().__init__()
            self.squeeze = nn.Conv2d(cin, sq, 1); self.squeeze_activation = nn.ReLU(inplace=True)
            self.expand1x1 = nn.Conv2d(sq, e1, 1); self.expand1x1_activation = nn.ReLU(inplace=True)
            self.expand3x3 = nn.Conv2d(sq, e3, 3, padding=1); self.expand3x3_activation = nn.ReLU(inplace=True)

        def forward(self, x):
            x = self.squeeze_activation(self.squeeze(x))
            return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                              self.expand3x3_activation(self.expand3x3(x))], 1)


def squeezenet(arch, classes):
    if torchvision is not None:
        return getattr(torchvision.models, arch)(num_classes=classes)
    mp = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)
    r = lambda: nn.ReLU(inplace=True)
    if arch == "squeezenet1_0":
        f = [nn.Conv2d(3, 96, 7, 2), r(), mp(), Fire(96, 16, 64, 64), Fire(128, 16, 64, 64),
             Fire(128, 32, 128, 128), mp(), Fire(256, 32, 128, 128), Fire(256, 48, 192, 192),
             Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), mp(), Fire(512, 64, 256, 256)]
    elif arch == "squeezenet1_1":
        f = [nn.Conv2d(3, 64, 3, 2), r(), mp(), Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), mp(),
             Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), mp(), Fire(256, 48, 192, 192),
             Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), Fire(512, 64, 256, 256)]
    else:
        raise SystemExit(f"torch_layers: unknown arch {arch}")
    m = nn.Module()
    m.features = nn.Sequential(*f)
    m.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(512, classes, 1), r(), nn.AdaptiveAvgPool2d(1))
    m.forward = lambda x: torch.flatten(m.classifier(m.features(x)), 1)
    return m


def layer_groups(m):
    """[(firetrain row name, first module, last module)] in forward order."""
    g, fire = [], 2
    for seq_name in ("features", "classifier"):
        mods = list(getattr(m, seq_name).named_children())
        for i, (k, mod) in enumerate(mods):
            where = f"{seq_name}.{k}"
            if isinstance(mod, nn.ReLU):
                continue  # folded into the preceding convolution
            nxt = mods[i + 1][1] if i + 1 < len(mods) else None
            last = nxt if isinstance(nxt, nn.ReLU) else mod
            if isinstance(mod, nn.Conv2d):
                name = "conv1" if seq_name == "features" else "conv10"
            elif isinstance(mod, nn.MaxPool2d):
                name = "maxpool"
            elif isinstance(mod, Fire):
                name, fire = f"fire{fire}", fire + 1
            elif isinstance(mod, nn.Dropout):
                name = "dropout"
            elif isinstance(mod, nn.AdaptiveAvgPool2d):
                name = "avgpool"
            else:
                raise SystemExit(f"torch_layers: no firetrain row for {where} ({type(mod).__name__})")
            g.append((f"{name} ({where})", mod, last))
    return g


class Profiler:
    """Timestamps of one hooked step; attach() before the step, detach() after."""

    def __init__(self, groups):
        self.groups = groups
        n = len(groups)
        self.shape = [None] * n
        self.params = [sum(p.numel() for mod in set(self._mods(gi)) for p in mod.parameters())
                       for gi in range(n)]
        self.handles = []
        self.reset()

    def _mods(self, gi):
        _, first, last = self.groups[gi]
        return [first, last]

    def reset(self):
        n = len(self.groups)
        self.f0, self.f1, self.b0 = [None] * n, [None] * n, [None] * n
        self.pt = [[] for _ in range(n)]  # AccumulateGrad times of the group's parameters
        self.bwd_end = None

    def attach(self):
        self.reset()
        for gi, (_, first, last) in enumerate(self.groups):
            self.handles.append(first.register_forward_pre_hook(functools.partial(self._pre, gi)))
            self.handles.append(last.register_forward_hook(functools.partial(self._post, gi)))
            for mod in set(self._mods(gi)):
                for p in mod.parameters():
                    self.handles.append(p.register_hook(functools.partial(self._param, gi)))

    def detach(self):
        for h in self.handles:
            h.remove()
        self.handles = []

    sync = staticmethod(lambda: None)  # torch.cuda.synchronize with --device cuda

    def _pre(self, gi, mod, inp):
        self.sync()
        self.f0[gi] = time.perf_counter()

    def _post(self, gi, mod, inp, out):
        self.sync()
        self.f1[gi] = time.perf_counter()
        if out.requires_grad:
            out.register_hook(functools.partial(self._grad, gi))
        if self.shape[gi] is None:
            s = out.shape
            self.shape[gi] = f"{s[2]}x{s[3]}x{s[1]}" if out.dim() == 4 else "x".join(map(str, s[1:]))

    def _grad(self, gi, grad):
        self.sync()
        self.b0[gi] = time.perf_counter()

    def _param(self, gi, grad):
        self.sync()
        self.pt[gi].append(time.perf_counter())

    def times(self):
        """Per group (fwd_s, bwd_s), plus (params inside their window, params, windows in order)."""
        n = len(self.groups)
        ends = [self.b0[gi - 1] if gi > 0 else self.bwd_end for gi in range(n)]
        fwd = [self.f1[gi] - self.f0[gi] for gi in range(n)]
        bwd = [ends[gi] - self.b0[gi] for gi in range(n)]
        inside = sum(self.b0[gi] <= t <= ends[gi] for gi in range(n) for t in self.pt[gi])
        total = sum(len(t) for t in self.pt)
        ordered = all(b > 0 for b in bwd)
        return fwd, bwd, inside, total, ordered


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="squeezenet1_0", choices=["squeezenet1_0", "squeezenet1_1"])
    p.add_argument("--batch", type=int, default=32); p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2); p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--steps", type=int, default=5, help="hooked steps (and as many without hooks)")
    p.add_argument("--warmup", type=int, default=2, help="untimed pairs of steps first")
    p.add_argument("--bf16", action="store_true", help="autocast the forward pass to bfloat16")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--csv", help="also write the rows as CSV to this file")
    a = p.parse_args()

    torch.set_num_threads(a.threads); torch.manual_seed(0)
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    if a.device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    m = squeezenet(a.arch, a.classes).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.04, momentum=0.9, weight_decay=2e-4)
    x = torch.randn(a.batch, 3, a.size, a.size, device=dev).to(memory_format=torch.channels_last)
    y = torch.randint(0, a.classes, (a.batch,), device=dev)
    lossf = nn.CrossEntropyLoss()
    groups = layer_groups(m)
    prof = Profiler(groups)
    prof.sync = sync

    def step():
        """One training step as in torch_step.py; returns (zero_grad+fwd+loss, bwd, SGD) seconds."""
        sync()
        t0 = time.perf_counter()
        opt.zero_grad()
        with torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.bf16):
            loss = lossf(m(x), y)
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        prof.bwd_end = t2
        opt.step()
        sync()
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    n = len(groups)
    fwd, bwd = [[] for _ in range(n)], [[] for _ in range(n)]
    plain, hooked = [], []  # (whole, fwd phase, bwd phase, sgd) per step
    inside = total = 0
    disordered = 0
    m.train()
    for s in range(2 * (a.warmup + a.steps)):
        profiled = s % 2 == 1
        if profiled:
            prof.attach()
        ph = step()
        if profiled:
            prof.detach()
        if s // 2 < a.warmup:
            continue
        (hooked if profiled else plain).append((sum(ph),) + ph)
        if profiled:
            f, b, ins, tot, ordered = prof.times()
            inside += ins; total += tot; disordered += not ordered
            for gi in range(n):
                fwd[gi].append(f[gi] * 1e3); bwd[gi].append(b[gi] * 1e3)

    med = lambda v: statistics.median(v)
    fm = [med(v) for v in fwd]; bm = [med(v) for v in bwd]
    pl = [med([r[i] for r in plain]) * 1e3 for i in range(4)]
    hk = [med([r[i] for r in hooked]) * 1e3 for i in range(4)]
    dnnl = re.search(r"MKL-DNN (v[\d.]+)", torch.__config__.show())
    prec = "bf16 autocast" if a.bf16 else "fp32"
    lib = (f"oneDNN {dnnl.group(1) if dnnl else '?'}" if a.device == "cpu" else
           f"{torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()}, TF32 off")
    print(f"# torch_layers: {a.arch}, {a.device} {prec} channels_last, batch {a.batch}, {a.size}x{a.size}, "
          f"{a.threads} thread(s), median of {a.steps} hooked steps (PyTorch {torch.__version__}, "
          f"torchvision {TV}, {lib})")
    print(f"# {'layer':<28} {'out (HxWxC)':>12} {'params':>9} {'fwd_ms':>8} {'bwd_ms':>8}")
    for gi, (name, _, _) in enumerate(groups):
        print(f"  {name:<28} {prof.shape[gi]:>12} {prof.params[gi]:>9} {fm[gi]:8.2f} {bm[gi]:8.2f}")
    print(f"  {'total':<28} {'':>12} {sum(prof.params):>9} {sum(fm):8.2f} {sum(bm):8.2f}")
    print(f"# whole step without hooks (zero_grad+forward+loss, backward, SGD): {pl[0]:.1f} ms = "
          f"{a.batch / pl[0] * 1e3:.1f} img/s ({pl[1]:.1f} + {pl[2]:.1f} + {pl[3]:.1f} ms)")
    print(f"# with hooks: {hk[0]:.1f} ms ({hk[1]:.1f} + {hk[2]:.1f} + {hk[3]:.1f} ms), "
          f"{(hk[0] / pl[0] - 1) * 100:+.1f}% vs without; layers sum to {sum(fm):.1f} (fwd) + "
          f"{sum(bm):.1f} (bwd) = {sum(fm) + sum(bm):.1f} ms")
    print(f"# backward attribution check: {inside}/{total} parameter gradients accumulated inside "
          f"their layer's window; {disordered} of {a.steps} hooked steps had windows out of order")
    print(f"# step_ms={pl[0]:.2f} hooked_step_ms={hk[0]:.2f}")
    if a.csv:
        with open(a.csv, "w") as fh:
            fh.write("arch,precision,batch,size,threads,layer,out,params,fwd_ms,bwd_ms\n")
            for gi, (name, _, _) in enumerate(groups):
                fh.write(f'{a.arch},{"bf16" if a.bf16 else "fp32"},{a.batch},{a.size},{a.threads},'
                         f'"{name}",{prof.shape[gi]},{prof.params[gi]},{fm[gi]:.4f},{bm[gi]:.4f}\n')


if __name__ == "__main__":
    main()
