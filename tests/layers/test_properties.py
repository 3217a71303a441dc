"""Property-based tests of the layers and the model over random sizes, channels and mask ratios.

Each property holds for every example hypothesis draws: image sizes, patch sizes, channel counts
and mask ratios, including the edges (1x1 grids, 1x1 patches, mask_ratio 0, one kept patch).
"""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import keras_mae
from keras_mae.layers import (
    PatchEmbedding,
    RandomMasking,
    patchify,
    sincos_position_embedding,
    unpatchify,
)
from keras_mae.layers.random_masking import num_kept

# Example counts keep the file under ~30 s per backend on 2 cores; JAX gets fewer where each example
# has new shapes, since JAX compiles every operation anew for every shape.
_JAX = keras.backend.backend() == "jax"


def examples(n, jax_n=None):
    return settings(max_examples=jax_n if _JAX and jax_n is not None else n, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


grids = st.integers(1, 4)
patch_sizes = st.integers(1, 5)
channel_counts = st.sampled_from([1, 2, 3, 4])
mask_ratios = st.one_of(st.just(0.0), st.floats(0.0, 1.0, exclude_max=True, allow_subnormal=False))


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def random_images(seed, batch, height, width, channels):
    return np.random.default_rng(seed).normal(size=(batch, height, width, channels)).astype("float32")


# === patchify / unpatchify ===


@examples(50, jax_n=15)
@given(batch=st.integers(1, 2), grid_h=grids, grid_w=grids, p=patch_sizes, channels=channel_counts,
       seed=st.integers(0, 2**16), data=st.data())
def test_patchify_orders_pixels_as_the_official_code_and_unpatchify_inverts_it(batch, grid_h, grid_w, p, channels,
                                                                               seed, data):
    images = random_images(seed, batch, grid_h * p, grid_w * p, channels)
    patches = to_np(patchify(images, p))
    assert patches.shape == (batch, grid_h * grid_w, p * p * channels)
    # Patch (i, j), pixel (r, c), channel k sits at [i * grid_w + j, (r * p + c) * channels + k].
    b, i, j, r, c, k = (data.draw(st.integers(0, n - 1)) for n in (batch, grid_h, grid_w, p, p, channels))
    assert patches[b, i * grid_w + j, (r * p + c) * channels + k] == images[b, i * p + r, j * p + c, k]
    np.testing.assert_array_equal(to_np(unpatchify(patches, p, (grid_h, grid_w), channels)), images)


@examples(50, jax_n=10)
@given(height=st.integers(1, 24), width=st.integers(1, 24), p=st.integers(2, 6))
def test_patchify_and_patch_embedding_reject_indivisible_sizes_clearly(height, width, p):
    images = np.zeros((1, height, width, 1), "float32")
    if height % p == 0 and width % p == 0:
        assert PatchEmbedding(p, 8)(images).shape == (1, (height // p) * (width // p), 8)
        return
    message = f"Image size {height}x{width} is not divisible by patch_size={p}"
    with pytest.raises(ValueError, match=message):
        patchify(images, p)
    with pytest.raises(ValueError, match=message):
        PatchEmbedding(p, 8)(images)


@examples(50, jax_n=6)
@given(batch=st.integers(1, 2), grid_h=grids, grid_w=grids, p=patch_sizes, channels=channel_counts,
       hidden_dim=st.integers(1, 12))
def test_patch_embedding_gives_one_token_per_patch(batch, grid_h, grid_w, p, channels, hidden_dim):
    tokens = PatchEmbedding(p, hidden_dim)(np.ones((batch, grid_h * p, grid_w * p, channels), "float32"))
    assert tuple(tokens.shape) == (batch, grid_h * grid_w, hidden_dim)
    assert np.isfinite(to_np(tokens)).all()


# === RandomMasking ===


@examples(50, jax_n=6)
@given(batch=st.integers(1, 3), grid_h=st.integers(1, 6), grid_w=st.integers(1, 6), dim=st.integers(1, 4),
       mask_ratio=mask_ratios, strategy=st.sampled_from(["random", "block", "grid"]), seed=st.integers(0, 2**16))
def test_masking_keeps_int_l_times_one_minus_r_and_ids_restore_inverts_the_shuffle(batch, grid_h, grid_w, dim,
                                                                                    mask_ratio, strategy, seed):
    length = grid_h * grid_w
    keep = int(length * (1 - mask_ratio))
    assert num_kept(length, mask_ratio) == keep
    # Token l carries l in every feature, so the visible tokens name the patches they came from.
    tokens = np.broadcast_to(np.arange(length, dtype="float32")[None, :, None], (batch, length, dim)).copy()
    masking = RandomMasking(mask_ratio, strategy, (grid_h, grid_w), seed=seed)
    visible, mask, ids_restore = (to_np(x) for x in masking(tokens))
    assert visible.shape == (batch, keep, dim) and mask.shape == ids_restore.shape == (batch, length)
    assert set(np.unique(mask)) <= {0.0, 1.0} and (mask.sum(axis=1) == length - keep).all()
    for b in range(batch):
        assert sorted(ids_restore[b]) == list(range(length))  # A permutation ...
        ids_shuffle = np.argsort(ids_restore[b])
        np.testing.assert_array_equal(ids_shuffle[ids_restore[b]], np.arange(length))  # ... inverting the shuffle.
        kept = visible[b, :, 0].astype(int)
        np.testing.assert_array_equal(kept, ids_shuffle[:keep])  # Visible: the first `keep` of the shuffle ...
        assert set(kept) == set(np.flatnonzero(mask[b] == 0))  # ... exactly the patches the mask keeps.
        # The decoder's unshuffle: visible tokens then mask tokens (-1), gathered by ids_restore, puts every
        # visible token back at its own position.
        full = np.concatenate([kept, -np.ones(length - keep, int)])[ids_restore[b]]
        np.testing.assert_array_equal(full, np.where(mask[b] == 0, np.arange(length), -1))


@examples(50)
@given(mask_ratio=st.one_of(st.floats(max_value=0.0, exclude_max=True, allow_nan=False, allow_infinity=False),
                            st.floats(min_value=1.0, allow_nan=False, allow_infinity=False)))
def test_masking_rejects_ratios_outside_zero_one(mask_ratio):
    with pytest.raises(ValueError, match="mask_ratio must be in \\[0, 1\\)"):
        RandomMasking(mask_ratio)


# === Position embedding ===


@examples(100)
@given(grid_h=st.integers(1, 8), grid_w=st.integers(1, 8), quarter=st.integers(1, 16), cls_token=st.booleans())
def test_sincos_position_embedding_shape_and_unit_sin_cos_pairs(grid_h, grid_w, quarter, cls_token):
    dim = 4 * quarter
    emb = sincos_position_embedding(grid_h, grid_w, dim, cls_token=cls_token)
    assert emb.shape == (grid_h * grid_w + cls_token, dim) and emb.dtype == np.float32
    if cls_token:
        assert not emb[0].any()
        emb = emb[1:]
    # Layout [sin(w), cos(w), sin(h), cos(h)] with dim / 4 frequencies each: sin^2 + cos^2 = 1.
    for half in (emb[:, : dim // 2], emb[:, dim // 2 :]):
        np.testing.assert_allclose(half[:, :quarter] ** 2 + half[:, quarter:] ** 2, 1.0, atol=1e-6)
    # The first half depends on the column (w) only, the second on the row (h) only.
    w_half, h_half = np.split(emb.reshape(grid_h, grid_w, dim), 2, axis=-1)
    np.testing.assert_array_equal(w_half, np.broadcast_to(w_half[:1], w_half.shape))
    np.testing.assert_array_equal(h_half, np.broadcast_to(h_half[:, :1], h_half.shape))


@examples(50)
@given(grid=st.integers(1, 4), dim=st.integers(1, 66).filter(lambda d: d % 4))
def test_sincos_position_embedding_rejects_dims_not_divisible_by_4(grid, dim):
    with pytest.raises(ValueError, match=f"needs dim divisible by 4; received dim={dim}"):
        sincos_position_embedding(grid, grid, dim)


# === MaskedAutoencoder ===


@examples(12, jax_n=3)
@given(grid_h=st.integers(1, 3), grid_w=st.integers(1, 3), p=st.integers(1, 4), channels=st.sampled_from([1, 3, 4]),
       num_heads=st.sampled_from([1, 2]), mask_ratio=mask_ratios, norm_pix_loss=st.booleans())
def test_masked_autoencoder_builds_and_runs_any_small_config(grid_h, grid_w, p, channels, num_heads, mask_ratio,
                                                              norm_pix_loss):
    # A 1-value patch has no unbiased variance (torch's .var gives NaN; ours divides by zero).
    assume(not (norm_pix_loss and p * p * channels == 1))
    model = keras_mae.MaskedAutoencoder(
        image_size=(grid_h * p, grid_w * p), patch_size=p, num_channels=channels, hidden_dim=8, num_layers=1,
        num_heads=num_heads, mlp_dim=16, decoder_hidden_dim=8, decoder_num_layers=1, decoder_num_heads=num_heads,
        decoder_mlp_dim=16, mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss, seed=0,
    )
    length, keep = grid_h * grid_w, int(grid_h * grid_w * (1 - mask_ratio))
    images = random_images(0, 2, grid_h * p, grid_w * p, channels)
    outputs = {name: to_np(value) for name, value in model(images).items()}
    assert outputs["pred"].shape == (2, length, p * p * channels)
    assert outputs["latent"].shape == (2, 1 + keep, 8)
    assert outputs["mask"].shape == outputs["ids_restore"].shape == (2, length)
    assert (outputs["mask"].sum(axis=1) == length - keep).all()
    loss = float(to_np(model.reconstruction_loss(images, outputs["pred"], outputs["mask"])))
    assert np.isfinite(loss) and loss >= 0
