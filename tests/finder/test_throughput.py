"""The train stage's timing file: FLOPs of a training image counted by torch, the fraction of a
GPU's peak only where its peak is known."""

from __future__ import annotations

import torch
import torch.nn as nn

from dhs.finder.throughput import peak_bf16_tflops, throughput_record
from dhs.finder.training import training_flops


def test_training_flops_of_a_linear_model_are_its_matmuls_forward_and_backward():
    """y = W x for a batch of B: 2 B n m FLOPs forward, twice that backward (grad of W and of x;
    x needs no grad, so only W's): torch's counter gives 2 B n m + 2 B n m."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(12, 5, bias=False)

        def forward(self, x):
            return self.fc(x)

    net = Net()
    x = torch.randn(7, 12)
    before = [p.detach().clone() for p in net.parameters()]
    state = torch.random.get_rng_state()
    flops = training_flops(net, x, (), amp=False)
    assert flops == 2 * 7 * 12 * 5 * 2
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters())) and net.fc.weight.grad is None   # a copy did it
    assert torch.equal(state, torch.random.get_rng_state())


def test_peak_and_fraction_only_for_known_cards():
    assert peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0 and peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert peak_bf16_tflops("NVIDIA H200") == 989.4 and peak_bf16_tflops("cpu") is None
    r = throughput_record(images=20_000, elapsed_s=1.0, steps=80, world=2, device_name="NVIDIA H200", flops_per_image=14e9)
    assert r["images_per_s"] == 20_000 and r["achieved_tflops"] == 280.0
    assert r["fraction_of_peak"] == round(280.0 / (2 * 989.4), 4)
    assert throughput_record(10, 1.0, 1, 1, "cpu", 1e9)["fraction_of_peak"] is None
