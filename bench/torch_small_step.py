"""PyTorch peer of firetrain's `squeezenet_small` (the README's Fashion-MNIST model): torchvision's
squeezenet1_1 with a 3x3 stride-1 padding-1 stem for 1-channel 28x28 inputs, ceil-mode max pools,
no dropout and no ReLU after conv10 (as firetrain's NetSpec documents). One training step
(forward, cross-entropy, backward, SGD with momentum) on random data, timed like
../shared/peers/torch_step.py. Needs python3-torch and python3-torchvision (Debian).
Usage: python3 bench/torch_small_step.py [--batch 32] [--threads 1] [--steps 20] [--channels_last] [--bf16]
Prints one line: arch batch size ms_per_step img_per_s params."""
import argparse, time, torch, torchvision

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, default=32); p.add_argument("--size", type=int, default=28)
p.add_argument("--steps", type=int, default=20); p.add_argument("--threads", type=int, default=1)
p.add_argument("--classes", type=int, default=10); p.add_argument("--channels", type=int, default=1)
p.add_argument("--channels_last", action="store_true"); p.add_argument("--bf16", action="store_true")
a = p.parse_args()
torch.set_num_threads(a.threads); torch.manual_seed(0)
m = torchvision.models.squeezenet1_1(num_classes=a.classes)
m.features[0] = torch.nn.Conv2d(a.channels, 64, kernel_size=3, stride=1, padding=1)
m.classifier = torch.nn.Sequential(torch.nn.Identity(), m.classifier[1],  # no dropout
                                   torch.nn.AdaptiveAvgPool2d((1, 1)))       # no final ReLU
nparams = sum(q.numel() for q in m.parameters())
opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
x = torch.randn(a.batch, a.channels, a.size, a.size); y = torch.randint(0, a.classes, (a.batch,))
if a.channels_last: m = m.to(memory_format=torch.channels_last); x = x.to(memory_format=torch.channels_last)
lossf = torch.nn.CrossEntropyLoss()
def step():
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
        loss = lossf(torch.flatten(m(x), 1), y)
    loss.backward(); opt.step()
for _ in range(3): step()
ts = []
for _ in range(a.steps):
    t = time.perf_counter(); step(); ts.append(time.perf_counter() - t)
ts.sort(); med = ts[len(ts) // 2]
print(f"squeezenet_small {'bf16' if a.bf16 else 'fp32'} batch={a.batch} size={a.size} threads={a.threads} "
      f"median_ms={med*1e3:.2f} img_per_s={a.batch/med:.1f} params={nparams}")
