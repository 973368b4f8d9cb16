#!/usr/bin/python3
"""Generate tests/data/squeezenet1_0_ref.h5: PyTorch reference values for firetrain's C++ tests.

PyTorch is used ONLY here, to generate the file; firetrain never needs it at run time.

Run from the repository root (Debian's python, which has torch, torchvision and h5py):

    /usr/bin/python3 tests/reference/make_reference.py [--out tests/data/squeezenet1_0_ref.h5]

See tests/reference/README.md for what every dataset holds.
"""
import argparse
import os

import h5py
import numpy as np
import torch
import torch.nn.functional as F
import torchvision

SEED = 1234
N, H, W, C = 2, 64, 64, 3
NUM_CLASSES = 10
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 2e-4
SGD_STEPS = 3


def write(group, name, array):
    """Store a float32/int64 array; big ones compressed (shuffle + gzip, read transparently by libhdf5)."""
    array = np.ascontiguousarray(array)
    if array.size >= 4096:
        group.create_dataset(name, data=array, compression="gzip", compression_opts=9, shuffle=True)
    else:
        group.create_dataset(name, data=array)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "..", "data", "squeezenet1_0_ref.h5"))
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(SEED)

    model = torchvision.models.squeezenet1_0(num_classes=NUM_CLASSES).float()
    model.eval()  # dropout off (SqueezeNet has no batch norm, so this is all eval changes)
    init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    x_nhwc = torch.randn(N, H, W, C, dtype=torch.float32)
    labels = torch.randint(0, NUM_CLASSES, (N,), dtype=torch.int64)
    x_nchw = x_nhwc.permute(0, 3, 1, 2).contiguous()

    # Forward, loss, gradients at the initial weights.
    model.zero_grad()
    logits = model(x_nchw)
    loss = F.cross_entropy(logits, labels)  # mean over the batch
    loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}

    # Three SGD steps on the same batch from the initial weights.
    model.load_state_dict(init_state)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    sgd_losses = []
    for _ in range(SGD_STEPS):
        opt.zero_grad()
        step_loss = F.cross_entropy(model(x_nchw), labels)
        sgd_losses.append(step_loss.item())
        step_loss.backward()
        opt.step()
    sgd_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert abs(sgd_losses[0] - loss.item()) < 1e-5

    # Max pool 3x3 stride 2 ceil_mode. H=14 -> 7 (floor mode would give 6), W=13 -> 6 (same either
    # way): a 13x13 input alone could not tell ceil from floor, and H != W catches H/W mix-ups.
    pool_in = torch.randn(1, 14, 13, 2, dtype=torch.float32)
    pool_out = F.max_pool2d(pool_in.permute(0, 3, 1, 2), kernel_size=3, stride=2, ceil_mode=True)
    pool_out = pool_out.permute(0, 2, 3, 1).contiguous()

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with h5py.File(args.out, "w") as f:
        f.attrs["model"] = "torchvision squeezenet1_0(num_classes=10)"
        f.attrs["seed"] = SEED
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["torchvision_version"] = str(torchvision.__version__)
        f.attrs["lr"] = LR
        f.attrs["momentum"] = MOMENTUM
        f.attrs["weight_decay"] = WEIGHT_DECAY
        f.attrs["input_layout"] = "NHWC"
        f.attrs["weight_layout"] = "torch (OIHW for conv weights)"
        for name, state in (("weights", init_state), ("sgd3", sgd_state)):
            g = f.create_group(name)
            for k, v in state.items():
                write(g, k, v.numpy().astype(np.float32))
        g = f.create_group("grads")
        for k, v in grads.items():
            write(g, k, v.numpy().astype(np.float32))
        write(f, "input", x_nhwc.numpy())
        write(f, "labels", labels.numpy().astype(np.int64))
        write(f, "logits", logits.detach().numpy().astype(np.float32))
        f.create_dataset("loss", data=np.float32(loss.item()))
        f.create_dataset("sgd3_losses", data=np.array(sgd_losses, dtype=np.float32))
        p = f.create_group("pool_ceil")
        write(p, "input", pool_in.numpy())
        write(p, "output", pool_out.numpy())
        p.attrs["kernel"] = 3
        p.attrs["stride"] = 2
        p.attrs["ceil_mode"] = 1

    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)")
    print(f"loss {loss.item():.6f}  sgd3_losses {sgd_losses}")
    print(f"logits {logits.detach().numpy()}")
    print(f"pool_ceil {tuple(pool_in.shape)} -> {tuple(pool_out.shape)}")


if __name__ == "__main__":
    main()
