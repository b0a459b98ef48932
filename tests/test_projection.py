import pytest
import torch

from sasa.engine.layers import LayerSelection, LayerSelectionError, default_layers
from sasa.engine.projection import ProjectionConfig, apply_projection, position_mask, project


def test_project_matches_formula_and_is_idempotent():
    torch.manual_seed(0)
    hs, hf = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    p = project(hs, hf, eps=0.0)
    for b in range(2):
        for t in range(5):
            expect = (hs[b, t] @ hf[b, t]) / (hf[b, t] @ hf[b, t]) * hf[b, t]
            torch.testing.assert_close(p[b, t], expect, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(project(p, hf, eps=0.0), p, rtol=1e-5, atol=1e-6)
    # the residual h_s - proj is orthogonal to h_f
    assert ((hs - p) * hf).sum(-1).abs().max() < 1e-4


def test_project_parallel_and_orthogonal_cases():
    hf = torch.tensor([[2.0, 0.0, 0.0]])
    torch.testing.assert_close(project(torch.tensor([[3.0, 4.0, 0.0]]), hf, 0.0), torch.tensor([[3.0, 0.0, 0.0]]))
    torch.testing.assert_close(project(torch.tensor([[0.0, 4.0, 1.0]]), hf, 0.0), torch.zeros(1, 3))


def test_zero_fused_vector_gives_zero_not_nan():
    out = project(torch.ones(1, 4), torch.zeros(1, 4), eps=1e-6)
    assert torch.isfinite(out).all() and out.abs().max() == 0


def test_modes():
    torch.manual_seed(1)
    hs, hf = torch.randn(1, 3, 6), torch.randn(1, 3, 6)
    p = project(hs, hf)
    torch.testing.assert_close(apply_projection(hs, hf, ProjectionConfig("replace")), p)
    torch.testing.assert_close(apply_projection(hs, hf, ProjectionConfig("residual", alpha=0.5)), hs + 0.5 * p)
    torch.testing.assert_close(apply_projection(hs, hf, ProjectionConfig("interpolate", alpha=0.25)),
                               0.75 * hs + 0.25 * p)
    torch.testing.assert_close(apply_projection(hs, hf, ProjectionConfig("interpolate", alpha=0.0)), hs)


def test_position_masks_never_touch_padding():
    attn = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    img = torch.tensor([[0, 1, 0, 0], [0, 0, 1, 1]]).bool()
    assert position_mask(ProjectionConfig(positions="all"), attn, img).tolist() == attn.bool().tolist()
    assert position_mask(ProjectionConfig(positions="image"), attn, img).tolist() == [
        [False, True, False, False], [False, False, True, True]]
    assert position_mask(ProjectionConfig(positions="text"), attn, img).tolist() == [
        [False, False, True, True], [True, True, False, False]]
    assert position_mask(ProjectionConfig(positions="last"), attn, img).tolist() == [
        [False, False, False, True], [False, False, False, True]]
    hs, hf = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    out = apply_projection(hs, hf, ProjectionConfig(), position_mask(ProjectionConfig(), attn, None))
    torch.testing.assert_close(out[0, 0], hs[0, 0])


def test_bad_projection_config():
    with pytest.raises(ValueError, match="mode"):
        ProjectionConfig(mode="add")
    with pytest.raises(ValueError, match="positions"):
        ProjectionConfig(positions="prompt")


def test_layer_indexing_conventions():
    assert LayerSelection(13, 15).resolve(32) == (13, 15)
    assert LayerSelection(14, 16, "1-based").resolve(32) == (13, 15)
    assert LayerSelection(0, 31).resolve(32) == (0, 31)
    with pytest.raises(LayerSelectionError, match="out of range"):
        LayerSelection(13, 32).resolve(32)
    with pytest.raises(LayerSelectionError, match="out of range"):
        LayerSelection(0, 5, "1-based").resolve(32)
    with pytest.raises(LayerSelectionError, match="s < f"):
        LayerSelection(15, 15).resolve(32)
    with pytest.raises(LayerSelectionError, match="s < f"):
        LayerSelection(16, 13).resolve(32)
    with pytest.raises(LayerSelectionError, match="indexing"):
        LayerSelection(1, 2, "2-based")


def test_default_layers_scale_llava_choice():
    assert default_layers(32).resolve(32) == (13, 15)
    for n in (2, 6, 30):
        s, f = default_layers(n).resolve(n)
        assert 0 <= s < f < n
