"""Helpers of the learner tests (torch)."""

import numpy as np
import torch


def perturbed_net(net_class, spec, seed: int = 1):
    """`net_class(spec, seed=seed)` with every parameter moved by 0.1 * N(0, 1) (a torch generator seeded `seed`)."""
    net = net_class(spec, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return net


def onnx_beside_torch(net, model, feeds, inputs, outputs, draws: int = 20):
    """(output name, ONNX value, torch value) over `draws` random feeds (rng seeded 0) of the export and its net."""
    rng = np.random.default_rng(0)
    for _ in range(draws):
        f = feeds(rng)
        got = model.session.run(None, f)
        with torch.no_grad():
            want = net(*(torch.from_numpy(f[k]) for k in inputs))
        for name, g, w in zip(outputs, got, want, strict=True):
            yield name, g, w.numpy()
