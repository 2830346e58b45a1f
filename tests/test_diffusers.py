"""The diffusers-native pipeline of the shipped model: the images of ``noveltynets sample``, a session's memory, save/load."""

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from noveltynets.errors import NoveltynetsError
from noveltynets.integrations.diffusers import NoveltyDDIMPipeline
from noveltynets.models import load_model
from noveltynets.sampling import SamplingConfig, sample
from noveltynets.session import open_session

STEPS = 6


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def pipe(model):
    return NoveltyDDIMPipeline.from_noveltynets(model)


def test_plain_images_are_those_of_the_sampler(pipe, model):
    got = pipe(class_labels=7, seeds=[3, 4, 5], num_inference_steps=STEPS, output_type="pt").images
    want = sample(model, [3, 4, 5], SamplingConfig(klass=7, steps=STEPS)).images
    assert torch.equal(got, want)
    one = pipe(class_labels=[7], generator=[torch.Generator().manual_seed(4)], num_inference_steps=STEPS, output_type="pt").images
    assert torch.allclose(one[0], want[1], atol=1e-5)  # a generator's seed is the image's seed, whatever the batch


def test_a_session_guides_and_learns_through_the_pipeline(pipe, model, tmp_path):
    store = tmp_path / "m.sqlite"
    kw = dict(class_labels=7, num_inference_steps=STEPS, batch_size=2, output_type="pt")
    with pipe.open_session(klass=7, num_inference_steps=STEPS, guide=["novelty"], memory="m", store=store) as s:
        first = pipe(seeds=[0, 1, 2, 3], novelty=s, **kw).images
        assert s.info()["n_seen"] == 4
        second = pipe(seeds=[0, 1, 2, 3], novelty=s, **kw).images
        assert s.info()["n_seen"] == 8
    config = SamplingConfig(klass=7, steps=STEPS, batch_size=2)
    with open_session(model, config, ["novelty"], memory="m2", store=store) as s2:  # the sampler, the same way
        assert torch.equal(first, sample(model, [0, 1, 2, 3], config, s2.terms).images)
    # on the same seeds a fresh memory makes the first call's images again; this one remembers them and moves every image
    assert ((second - first).flatten(1).norm(dim=1) > 1.0).all(), (second - first).flatten(1).norm(dim=1)


def test_save_and_load_round_trip_and_scheduler_swap(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    again = NoveltyDDIMPipeline.from_pretrained(tmp_path / "p")
    kw = dict(class_labels=[1, 2], seeds=[8, 9], num_inference_steps=STEPS, output_type="np")
    a, b = pipe(**kw).images, again(**kw).images
    assert a.shape == (2, 32, 32, 1) and np.abs(a - b).max() < 2e-3  # the shipped weights are fp16 on disk
    again.scheduler = DPMSolverMultistepScheduler.from_config(again.scheduler.config)
    c = again(**kw).images
    assert np.isfinite(c).all() and not np.allclose(a, c)  # another scheduler: other images, the pipeline still runs
    pil = pipe(class_labels=None, seeds=[0], num_inference_steps=STEPS).images  # unconditional, PIL by default
    assert pil[0].size == (32, 32)


def test_bad_calls_are_clear(pipe):
    with pytest.raises(NoveltynetsError, match="class labels for"):
        pipe(class_labels=[1, 2], seeds=[0], num_inference_steps=STEPS)
    with pytest.raises(NoveltynetsError, match="seeds or generator"):
        pipe(class_labels=1, seeds=[0], generator=[torch.Generator()], num_inference_steps=STEPS)
    with pytest.raises(NoveltynetsError, match="output_type"):
        pipe(class_labels=1, seeds=[0], num_inference_steps=STEPS, output_type="jpeg")
