"""PyTorch peer on the GPU: one training step (forward, loss, backward, SGD) of torchvision's
model, channels_last, fp32 (TF32 off, as firetrain's fp32) or autocast bf16/fp16, timed with CUDA
events after warm-up. Prints one line in the same format as ../shared/peers/torch_step.py.
Usage: python3 bench/torch_gpu_step.py --arch squeezenet1_0 --batch 256 [--precision bf16]"""
import argparse, torch, torchvision
p = argparse.ArgumentParser()
p.add_argument("--arch", default="squeezenet1_0"); p.add_argument("--batch", type=int, default=256)
p.add_argument("--size", type=int, default=224); p.add_argument("--steps", type=int, default=20)
p.add_argument("--warmup", type=int, default=5); p.add_argument("--classes", type=int, default=1000)
p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16", "fp16"])
a = p.parse_args()
torch.backends.cudnn.benchmark = True
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = a.precision == "tf32"
torch.manual_seed(0)
dev = torch.device("cuda")
m = getattr(torchvision.models, a.arch)(num_classes=a.classes).to(dev).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(m.parameters(), lr=0.04, momentum=0.9, weight_decay=2e-4)
x = torch.randn(a.batch, 3, a.size, a.size, device=dev).to(memory_format=torch.channels_last)
y = torch.randint(0, a.classes, (a.batch,), device=dev)
lossf = torch.nn.CrossEntropyLoss()
amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.precision)
scaler = torch.amp.GradScaler("cuda", enabled=a.precision == "fp16")
def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=amp or torch.float32, enabled=amp is not None):
        loss = lossf(m(x), y)
    scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
for _ in range(a.warmup): step()
torch.cuda.synchronize()
ts = []
for _ in range(a.steps):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); step(); e.record(); e.synchronize(); ts.append(s.elapsed_time(e))
ts.sort(); med = ts[len(ts) // 2]
print(f"{a.arch} {a.precision} batch={a.batch} size={a.size} device={torch.cuda.get_device_name()} "
      f"median_ms={med:.2f} img_per_s={a.batch / med * 1e3:.1f} peak_mem_MB={torch.cuda.max_memory_allocated() / 2**20:.0f}")
