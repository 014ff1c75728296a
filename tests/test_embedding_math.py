"""Where embedding values land: resampling keeps (y, x) and frame order, and a value embedding at latent position
``p = y * w + x`` of a block's grid changes the model only at (y, x).

Every grid here is non-square so that a swap of rows and columns cannot pass.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from motion_core.embedding import EmbeddingInfo, prepare_for_sampling, resample_frames, resample_grid, resample_latent, zero_embedding
from motion_core.patching import build_processors, installed_processors
from motion_core.temporal_layers import find_temporal_blocks


def _source_coordinate(index: torch.Tensor, old: int, new: int) -> torch.Tensor:
    """Where output pixel ``index`` of a size ``new`` axis samples a size ``old`` axis (half-pixel centres, as
    bilinear resizing with ``align_corners=False`` does), clamped to the edge pixels."""
    return ((index + 0.5) * old / new - 0.5).clamp(0, old - 1)


def _ramp_field(h: int, w: int, frames: int, channels: int) -> torch.Tensor:
    """``(h*w, frames, channels)`` whose value at position (y, x) is ``x + 100 y`` (plus a channel and frame offset)."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    spatial = (x + 100 * y).reshape(h * w, 1, 1)
    offsets = torch.arange(frames).view(1, frames, 1) * 1000 + torch.arange(channels).view(1, 1, channels) * 10_000
    return spatial + offsets


def _transposed_resample_grid(embedding: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """A wrong implementation that reads the positions column-major (what a swapped h/w would do)."""
    h, w = grid
    _, frames, channels = embedding.shape
    image = embedding.reshape(w, h, frames * channels).permute(2, 1, 0).unsqueeze(0)
    resized = F.interpolate(image, size=new_grid, mode="bilinear", align_corners=False)
    return resized.squeeze(0).permute(1, 2, 0).reshape(new_grid[0] * new_grid[1], frames, channels)


@pytest.mark.parametrize("grid, new_grid", [((3, 5), (6, 10)), ((3, 5), (4, 9)), ((6, 10), (3, 5))])
def test_resample_grid_keeps_every_value_at_its_position(grid, new_grid):
    (h, w), (new_h, new_w) = grid, new_grid
    field = _ramp_field(h, w, frames=3, channels=2)
    resized = resample_grid(field, grid, new_grid)
    y = _source_coordinate(torch.arange(new_h, dtype=torch.float32), h, new_h).view(new_h, 1)
    x = _source_coordinate(torch.arange(new_w, dtype=torch.float32), w, new_w).view(1, new_w)
    expected_spatial = (x + 100 * y).reshape(new_h * new_w, 1, 1)  # bilinear reproduces an affine field exactly
    offsets = field[:1] - field[0, 0, 0]  # frame and channel offsets of position (0, 0)
    torch.testing.assert_close(resized, expected_spatial + offsets, rtol=0, atol=1e-2)
    # The check has teeth: the same field read column-major lands elsewhere.
    wrong = _transposed_resample_grid(field, grid, new_grid)
    assert (wrong - (expected_spatial + offsets)).abs().max() > 50


def test_resample_frames_keeps_positions_and_channels_apart():
    positions, frames, channels = 6, 5, 3
    field = _ramp_field(2, 3, frames, channels)  # frame n adds 1000 n
    longer = resample_frames(field, 9)
    times = torch.linspace(0, frames - 1, 9)  # end points kept: output frame k samples frame k * 4 / 8
    expected = field[:, :1] + 1000 * times.view(1, 9, 1)
    torch.testing.assert_close(longer, expected, rtol=0, atol=1e-2)
    shorter = resample_frames(field, 3)
    torch.testing.assert_close(shorter, field[:, ::2], rtol=0, atol=1e-2)
    assert longer.shape == (positions, 9, channels)


def test_resample_latent_keeps_the_layout_of_a_ramp():
    channels, frames, h, w = 4, 3, 3, 5
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    time = torch.arange(frames, dtype=torch.float32).view(frames, 1, 1)
    latent = torch.stack([(x + 10 * y + 100 * time) * (c + 1) - 300 for c in range(channels)])  # (C, N, h, w)
    new_frames, new_h, new_w = 5, 6, 10
    resized = resample_latent(latent, new_frames, new_h, new_w)
    t_src = _source_coordinate(torch.arange(new_frames, dtype=torch.float32), frames, new_frames).view(new_frames, 1, 1)
    y_src = _source_coordinate(torch.arange(new_h, dtype=torch.float32), h, new_h).view(1, new_h, 1)
    x_src = _source_coordinate(torch.arange(new_w, dtype=torch.float32), w, new_w).view(1, 1, new_w)
    raw = torch.stack([(x_src + 10 * y_src + 100 * t_src) * (c + 1) - 300 for c in range(channels)])
    expected = raw * (latent.std() / raw.std())  # rescaled to the source's spread (the scheduler's noise level)
    torch.testing.assert_close(resized, expected, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(resized.std(), latent.std())


def _temporal_block_output(module: torch.nn.Module, hidden: torch.Tensor, frames: int) -> torch.Tensor:
    with torch.no_grad():
        return module(hidden, num_frames=frames, return_dict=False)[0]


@pytest.mark.parametrize("y, x", [(1, 4), (2, 0), (0, 2)])
def test_value_embedding_changes_only_its_own_latent_position(tiny_model, y, x):
    """A real temporal block of the tiny UNet on a 3x5 grid; temporal attention mixes frames, never positions."""
    unet = tiny_model.unet
    block = next(b for b in find_temporal_blocks(unet) if b.name == "down_blocks.0.temp_attentions.0")
    module = unet.get_submodule(block.name)
    frames, batch, (h, w) = 4, 2, (3, 5)
    hidden = torch.randn(batch * frames, block.channels, h, w, generator=torch.Generator().manual_seed(0))
    value = torch.zeros(h * w, frames, block.channels)
    value[y * w + x] = torch.randn(frames, block.channels, generator=torch.Generator().manual_seed(1))
    plain = build_processors(unet, tiny_model.kernel)
    patched = build_processors(unet, tiny_model.kernel, [block], {}, {block.attention_names[0]: value})
    with installed_processors(unet, plain):
        before = _temporal_block_output(module, hidden, frames)
    with installed_processors(unet, patched):
        after = _temporal_block_output(module, hidden, frames)
    change = (after - before).abs().amax(dim=(0, 1))  # (h, w): largest change over batch, frames and channels
    assert change[y, x] > 1e-2
    others = change.clone()
    others[y, x] = 0
    assert others.max() == 0, change


@pytest.mark.parametrize("block_name, y, x", [("transformer_in", 2, 9), ("up_blocks.2.temp_attentions.0", 5, 3)])
@pytest.mark.parametrize("scale", [1, 2])
def test_value_embedding_through_the_whole_unet_peaks_at_its_position(tiny_model, block_name, y, x, scale):
    """End to end: an embedding trained on an 8x12 latent with one non-zero position, prepared for sampling at
    ``scale`` times that size and run through the full UNet. Convolutions spread the change, so what is checked
    is that its peak sits where (y, x) lands, give or take a pixel (a row/column swap lands far away)."""
    unet = tiny_model.unet
    block = next(b for b in find_temporal_blocks(unet) if b.name == block_name)  # level 0: its grid is the latent
    frames, (h, w) = 4, (8, 12)
    generator = torch.Generator().manual_seed(0)
    info = EmbeddingInfo("unet3d", dict(tiny_model.identity), (block,), 8 * w, 8 * h, frames, h, w)
    embedding = zero_embedding(info)
    embedding.value[block.attention_names[0]][y * w + x] = 3 * torch.randn(frames, block.channels, generator=generator)
    prepared = prepare_for_sampling(embedding, frames, h * scale, w * scale, mode="raw")
    sample = torch.randn(1, 4, frames, h * scale, w * scale, generator=generator)
    text = torch.randn(1, 12, 32, generator=generator)
    outputs = []
    for value in ({}, prepared.value):
        with installed_processors(unet, build_processors(unet, tiny_model.kernel, [block], {}, value)), torch.no_grad():
            outputs.append(unet(sample, torch.tensor([500]), encoder_hidden_states=text).sample)
    change = (outputs[1] - outputs[0]).abs().sum(dim=(0, 1, 2))  # (h * scale, w * scale)
    peak_y, peak_x = divmod(int(change.argmax()), w * scale)
    # Bilinear resizing spreads position (y, x) over the pixels less than ``scale`` from its centre; the
    # convolutions may move the peak one pixel further.
    centre_y, centre_x = (y + 0.5) * scale - 0.5, (x + 0.5) * scale - 0.5
    reach = scale + 0.5
    assert abs(peak_y - centre_y) < reach and abs(peak_x - centre_x) < reach, (peak_y, peak_x, change)
