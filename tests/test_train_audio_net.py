"""ResDAVEnet: output length, and the Conv1d / stem-matmul / channels_last variants against the Conv2d trunk."""

from __future__ import annotations

import pytest
import torch

from mcn.train.audio_net import ResDAVEnet

SIZES = dict(mel_bins=40, widths=(8, 8, 16, 16), layers=(1, 2, 1, 1), kernel=9)


def trunk(**variant) -> ResDAVEnet:
    torch.manual_seed(0)
    return ResDAVEnet(**SIZES, **variant).eval()


def copy_weights(source: ResDAVEnet, target: ResDAVEnet) -> None:
    """Load ``source``'s weights into ``target``, squeezing the unit axis of 4-D conv weights for Conv1d."""
    target_state = target.state_dict()
    state = {k: v.reshape(target_state[k].shape) for k, v in source.state_dict().items()}
    target.load_state_dict(state)


@pytest.mark.parametrize("frames, steps", [(1000, 63), (64, 4), (17, 2), (1, 1)])
def test_output_is_widest_channels_by_ceil_t_over_2_per_stage(frames, steps):
    assert trunk()(torch.randn(2, 40, frames)).shape == (2, 16, steps)


@pytest.mark.parametrize(
    "variant",
    [dict(conv="1d"), dict(stem_matmul=True), dict(conv="1d", stem_matmul=True), dict(channels_last=True)],
)
def test_variants_compute_what_the_conv2d_trunk_computes(variant):
    base, other = trunk(), trunk(**variant)
    with torch.no_grad():  # move the BatchNorm statistics away from their initial values first
        base.train()(torch.randn(4, 40, 80))
    copy_weights(base.eval(), other)
    logmel = torch.randn(3, 40, 50)
    torch.testing.assert_close(other(logmel), base(logmel), rtol=1e-5, atol=1e-5)


def test_wrong_number_of_mel_bins_is_refused():
    with pytest.raises(ValueError, match=r"\(B, 40, T\)"):
        trunk()(torch.randn(2, 64, 100))
