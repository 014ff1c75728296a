"""Processors go only where they should, zero embeddings change nothing, and the model is always restored."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from motion_core.attention import MotionAttnProcessor, PlainFrameAttnProcessor
from motion_core.embedding import EmbeddingInfo, zero_embedding
from motion_core.patching import build_processors, installed_processors
from motion_core.temporal_layers import find_temporal_blocks, select_temporal_blocks


def _unet_inputs(model, frames=4, size=8, seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, frames, size, size, generator=g)
    text = torch.randn(batch, 12, 32, generator=g)
    return sample, torch.tensor([500]), text


def _info(model, blocks, frames=4, latent=8):
    return EmbeddingInfo("unet3d", dict(model.identity), tuple(blocks), latent * 2, latent * 2, frames, latent, latent)


def test_layer_sets_follow_resolution_levels(tiny_model):
    unet = tiny_model.unet
    names = [b.name for b in find_temporal_blocks(unet)]
    assert "transformer_in" in names and "mid_block.temp_attentions.0" in names
    paper = [b.name for b in select_temporal_blocks(unet, "paper")]
    # tiny model: 3 levels, attention at levels 0 and 1 -> paper = the level-1 blocks of down_blocks.1 / up_blocks.1
    assert paper == ["down_blocks.1.temp_attentions.0", "up_blocks.1.temp_attentions.0", "up_blocks.1.temp_attentions.1"]
    wider = {b.name for b in select_temporal_blocks(unet, "paper+640")}
    assert set(paper) < wider and "down_blocks.0.temp_attentions.0" in wider and "mid_block.temp_attentions.0" not in wider
    assert len(select_temporal_blocks(unet, "all")) == len(names)


def test_zeroscope_paper_layers_are_the_1280_channel_blocks():
    from diffusers import UNet3DConditionModel

    from motion_core.testing.tiny_models import ZEROSCOPE_UNET_CONFIG

    with torch.device("meta"):
        unet = UNet3DConditionModel(**ZEROSCOPE_UNET_CONFIG)
    blocks = select_temporal_blocks(unet, "paper")
    assert [b.name for b in blocks] == [
        "down_blocks.2.temp_attentions.0", "down_blocks.2.temp_attentions.1",
        "up_blocks.1.temp_attentions.0", "up_blocks.1.temp_attentions.1", "up_blocks.1.temp_attentions.2",
    ]
    assert {b.channels for b in blocks} == {1280}
    assert all(b.grid(40, 72) == (10, 18) for b in blocks)  # 576x320 -> latent 72x40 -> 18x10
    wider = select_temporal_blocks(unet, "paper+640")
    assert {b.channels for b in wider} == {640, 1280} and len(wider) == 10


def test_block_grid_matches_hidden_states_seen_by_the_layer(tiny_model):
    """The processor's (B*h*w, N, C) folding: h*w computed from the level equals what the layer receives."""
    seen: dict[str, int] = {}
    modules = dict(tiny_model.unet.named_modules())
    hooks = []
    for block in find_temporal_blocks(tiny_model.unet):
        attn = modules[block.attention_names[0]]
        hooks.append(attn.register_forward_pre_hook(lambda m, args, kw, name=block.name: seen.__setitem__(name, args[0].shape[0]) if args else seen.__setitem__(name, kw["hidden_states"].shape[0]), with_kwargs=True))
    sample, t, text = _unet_inputs(tiny_model, size=6, batch=2)
    with torch.no_grad():
        tiny_model.unet(sample, t, encoder_hidden_states=text)
    for hook in hooks:
        hook.remove()
    for block in find_temporal_blocks(tiny_model.unet):
        h, w = block.grid(6, 6)
        assert seen[block.name] == 2 * h * w, block.name


def test_processors_only_on_selected_temporal_attentions(tiny_model):
    unet = tiny_model.unet
    blocks = select_temporal_blocks(unet, "paper")
    emb = zero_embedding(_info(tiny_model, blocks))
    processors = build_processors(unet, "sdpa", blocks, emb.query_key, emb.value)
    before = {name: type(p) for name, p in unet.attn_processors.items()}
    with installed_processors(unet, processors):
        during = unet.attn_processors
        selected = {a for b in blocks for a in b.attention_names}
        temporal = {a for b in find_temporal_blocks(unet) for a in b.attention_names}
        for key, proc in during.items():
            name = key.removesuffix(".processor")
            if name in selected:
                assert type(proc) is MotionAttnProcessor and proc.value is not None and proc.query_key is not None
            elif name in temporal:
                assert type(proc) is PlainFrameAttnProcessor
            else:
                assert type(proc) is AttnProcessor2_0, name  # spatial attention untouched
        # query-key embedding shared by attn1 and attn2 of a block
        first = blocks[0].attention_names
        assert during[first[0] + ".processor"].query_key is during[first[1] + ".processor"].query_key
    assert {name: type(p) for name, p in unet.attn_processors.items()} == before


def test_zero_embeddings_reproduce_the_unpatched_model_exactly(tiny_model):
    unet = tiny_model.unet
    sample, t, text = _unet_inputs(tiny_model)
    with torch.no_grad():
        reference = unet(sample, t, encoder_hidden_states=text).sample
        blocks = select_temporal_blocks(unet, "all")
        emb = zero_embedding(_info(tiny_model, blocks))
        with installed_processors(unet, build_processors(unet, "sdpa", blocks, emb.query_key, emb.value)):
            patched = unet(sample, t, encoder_hidden_states=text).sample
        with installed_processors(unet, build_processors(unet, "matmul", blocks, emb.query_key, emb.value)):
            matmul = unet(sample, t, encoder_hidden_states=text).sample
        after = unet(sample, t, encoder_hidden_states=text).sample
    assert torch.equal(patched, reference)
    torch.testing.assert_close(matmul, reference, rtol=1e-5, atol=1e-5)
    assert torch.equal(after, reference)


def test_nonzero_embeddings_change_the_output(tiny_model):
    unet = tiny_model.unet
    sample, t, text = _unet_inputs(tiny_model)
    blocks = select_temporal_blocks(unet, "paper")
    emb = zero_embedding(_info(tiny_model, blocks))
    for tensor in emb.value.values():
        tensor.normal_()
    with torch.no_grad():
        reference = unet(sample, t, encoder_hidden_states=text).sample
        with installed_processors(unet, build_processors(unet, "sdpa", blocks, emb.query_key, emb.value)):
            patched = unet(sample, t, encoder_hidden_states=text).sample
    assert (patched - reference).abs().max() > 1e-3


def test_only_embeddings_receive_gradients(tiny_model):
    unet = tiny_model.unet
    blocks = select_temporal_blocks(unet, "paper")
    emb = zero_embedding(_info(tiny_model, blocks))
    qk = {k: torch.nn.Parameter(v) for k, v in emb.query_key.items()}
    value = {k: torch.nn.Parameter(v) for k, v in emb.value.items()}
    sample, t, text = _unet_inputs(tiny_model)
    with installed_processors(unet, build_processors(unet, "sdpa", blocks, qk, value)):
        unet(sample, t, encoder_hidden_states=text).sample.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in [*qk.values(), *value.values()])
    assert all(p.grad is None and not p.requires_grad for p in unet.parameters())


def test_model_restored_after_exception_inside_patch(tiny_model):
    unet = tiny_model.unet
    before = dict(unet.attn_processors)
    blocks = select_temporal_blocks(unet, "paper")
    emb = zero_embedding(_info(tiny_model, blocks))
    with pytest.raises(KeyboardInterrupt):
        with installed_processors(unet, build_processors(unet, "sdpa", blocks, emb.query_key, emb.value)):
            raise KeyboardInterrupt
    assert unet.attn_processors == before
    assert not any("processor" in name for name, _ in unet.named_parameters())


def test_gradient_checkpointing_gives_the_same_gradients_and_leaves_the_model_as_it_was(tiny_model):
    """Layer-wise checkpointing recomputes the forward in the backward pass: same loss, same embedding gradients."""
    from motion_core.checkpointing import checkpoint_units, gradient_checkpointing

    unet = tiny_model.unet
    blocks = select_temporal_blocks(unet, "all")
    emb = zero_embedding(_info(tiny_model, blocks))
    g = torch.Generator().manual_seed(3)
    for t in (*emb.query_key.values(), *emb.value.values()):
        t.copy_(0.1 * torch.randn(t.shape, generator=g))
    sample, t, text = _unet_inputs(tiny_model)
    grads = []
    for enabled in (False, True):
        qk = {k: torch.nn.Parameter(v.clone()) for k, v in emb.query_key.items()}
        value = {k: torch.nn.Parameter(v.clone()) for k, v in emb.value.items()}
        with gradient_checkpointing(unet, enabled), installed_processors(unet, build_processors(unet, "sdpa", blocks, qk, value)):
            unet(sample, t, encoder_hidden_states=text).sample.square().mean().backward()
        grads.append([p.grad for p in [*qk.values(), *value.values()]])
    for plain, checkpointed in zip(*grads):
        torch.testing.assert_close(checkpointed, plain, rtol=1e-4, atol=1e-6)
    units = checkpoint_units(unet)
    assert len(units) > len(unet.down_blocks) + len(unet.up_blocks), "layers, not whole blocks, are checkpointed"
    assert not any("forward" in vars(unit) for unit in units), "the model's own forward methods are back"
