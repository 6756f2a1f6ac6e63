"""Jigsaw Patch Module: shift + shuffle permutation and the local branches."""

import pytest
import torch

from reid.models.jpm import JigsawPatchModule, JPMConfig, shift_shuffle_order
from reid.models.vit import vit_tiny


def _official_shuffle_unit(features: torch.Tensor, shift: int, group: int) -> torch.Tensor:
    """The semantics of the official ``shuffle_unit(features, shift, group, begin=1)``, restated as a loop
    over positions: features = [cls; patches], output = the rearranged patches."""
    seq = [features[:, i] for i in range(shift, features.shape[1])] + [
        features[:, i] for i in range(1, shift)
    ]
    if len(seq) % group:
        seq.append(seq[-2])
    per_group = len(seq) // group
    out = [seq[g * per_group + j] for j in range(per_group) for g in range(group)]
    return torch.stack(out, dim=1)


def test_hand_worked_permutation_even_length():
    # 8 patches, shift 3 -> rotate left by 2: [2,3,4,5,6,7,0,1]; rows [2,3,4,5] / [6,7,0,1] read by column
    assert shift_shuffle_order(8, shift=3, groups=2).tolist() == [2, 6, 3, 7, 4, 0, 5, 1]


def test_hand_worked_permutation_with_padding():
    # 7 patches, shift 2 -> [1,2,3,4,5,6,0] + second-to-last (6) -> rows [1,2,3,4] / [5,6,0,6]
    assert shift_shuffle_order(7, shift=2, groups=2).tolist() == [1, 5, 2, 6, 3, 0, 4, 6]


def test_shift_one_is_pure_shuffle_and_even_case_is_a_permutation():
    assert shift_shuffle_order(6, shift=1, groups=3).tolist() == [0, 2, 4, 1, 3, 5]
    order = shift_shuffle_order(210, shift=5, groups=2)
    assert sorted(order.tolist()) == list(range(210))


@pytest.mark.parametrize(
    ("num_patches", "shift", "groups"), [(210, 5, 2), (128, 5, 2), (9, 4, 2), (12, 2, 3)]
)
def test_order_matches_official_shuffle_unit(num_patches, shift, groups):
    features = torch.randn(2, 1 + num_patches, 3)
    ours = features[:, 1:][:, shift_shuffle_order(num_patches, shift, groups)]
    torch.testing.assert_close(ours, _official_shuffle_unit(features, shift, groups), rtol=0, atol=0)


def test_local_sequences_prepend_cls_and_split_in_chunks():
    backbone = vit_tiny(img_size=(32, 16), patch_size=8, depth=1, num_parts=2, embed_dim=48)
    jpm = JigsawPatchModule(backbone.blocks[-1], backbone.norm, JPMConfig(shift=3, groups=2, num_local=4))
    tokens = torch.randn(2, 3 + 8, 5)  # cls, 2 parts, 8 patches
    sequences = jpm.local_sequences(tokens, num_prefix=3)
    assert sequences.shape == (4, 2, 1 + 2, 5)
    order = [2, 6, 3, 7, 4, 0, 5, 1]
    for j in range(4):
        torch.testing.assert_close(sequences[j, :, 0], tokens[:, 0])
        torch.testing.assert_close(sequences[j, :, 1:], tokens[:, 3:][:, order[2 * j : 2 * j + 2]])
    unshuffled = JigsawPatchModule(backbone.blocks[-1], backbone.norm, JPMConfig(num_local=3, shuffle=False))
    plain = unshuffled.local_sequences(tokens, num_prefix=3)
    assert plain.shape == (3, 2, 1 + 2, 5)  # 8 // 3 = 2 patches each; the last 2 are dropped as officially
    torch.testing.assert_close(plain[2, :, 1:], tokens[:, 7:9])


def test_batched_branches_equal_separate_branch_calls():
    torch.manual_seed(0)
    backbone = vit_tiny(img_size=(32, 16), patch_size=8, depth=1, embed_dim=48).eval()
    jpm = JigsawPatchModule(
        backbone.blocks[-1], backbone.norm, JPMConfig(shift=2, groups=2, num_local=2)
    ).eval()
    tokens = torch.randn(3, 1 + 8, 48)
    feats = jpm(tokens, num_prefix=1)
    assert len(feats) == 2 and feats[0].shape == (3, 48)
    for j, seq in enumerate(jpm.local_sequences(tokens, 1)):
        torch.testing.assert_close(feats[j], jpm.norm(jpm.block(seq))[:, 0], rtol=1e-5, atol=1e-5)


def test_copy_is_independent_and_reloadable():
    backbone = vit_tiny(img_size=(32, 16), patch_size=8, depth=1, embed_dim=48)
    jpm = JigsawPatchModule(backbone.blocks[-1], backbone.norm, JPMConfig())
    assert jpm.block is not backbone.blocks[-1]
    with torch.no_grad():
        backbone.blocks[-1].attn.qkv.weight.add_(1.0)
    assert not torch.equal(jpm.block.attn.qkv.weight, backbone.blocks[-1].attn.qkv.weight)
    jpm.load_from_backbone(backbone.blocks[-1], backbone.norm)
    assert torch.equal(jpm.block.attn.qkv.weight, backbone.blocks[-1].attn.qkv.weight)


def test_config_errors():
    with pytest.raises(ValueError, match="must all be >= 1"):
        JPMConfig(num_local=0)
    with pytest.raises(ValueError, match="shift must be"):
        shift_shuffle_order(4, shift=5, groups=2)
