"""Shared fixtures: tiny models built in code, never downloaded."""

import pytest
import torch

from noveltynets.models import build_scheduler, build_unet
from noveltynets.sampling import CFGDenoiser, make_scheduler

TINY = dict(sample_size=8, block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8)


@pytest.fixture(scope="session")
def tiny_unet():
    torch.manual_seed(0)
    return build_unet(**TINY).eval().requires_grad_(False)


@pytest.fixture(scope="session")
def train_config():
    return dict(build_scheduler().config)


@pytest.fixture
def scheduler_factory(train_config):
    def make(name="ddim", steps=6):
        return lambda: make_scheduler(name, train_config, steps)
    return make


@pytest.fixture
def tiny_cfg(tiny_unet):
    return CFGDenoiser(tiny_unet, 2.0)
