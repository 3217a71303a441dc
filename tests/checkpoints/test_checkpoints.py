"""Checkpoints in and out: official / HF / timm layouts, files, other image sizes, safety."""

import os
import sys

import keras
import numpy as np
import pytest
from keras import ops

import keras_mae
from keras_mae import checkpoints as ck

torch = pytest.importorskip("torch")

from tests.torch_vit_reference import VisionTransformer, official_interpolate_pos_embed  # noqa: E402
from tests.hf_reference import assert_matches_hf  # noqa: E402

HEADS = dict(num_heads=2, decoder_num_heads=2)  # width 16 / 8 are not standard widths
ENCODER = dict(image_size=(8, 12), patch_size=4, num_channels=3, hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32)


def to_np(x):
    return ops.convert_to_numpy(x)


def torch_reference(global_pool=True, num_classes=5, image_size=(8, 12)):
    torch.manual_seed(0)
    return VisionTransformer(image_size, 4, 3, 16, 2, 2, 32, num_classes=num_classes, global_pool=global_pool).eval()


def nchw(images):
    return torch.from_numpy(images.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("ext", [".npz", ".safetensors", ".pth"])
def test_export_then_import_is_exact(tiny_config, ext, tmp_path):
    models = {"mae": keras_mae.MaskedAutoencoder(**tiny_config), "encoder": keras_mae.ViTEncoder(**ENCODER),
              "classifier": keras_mae.ViTClassifier(**ENCODER, num_classes=5)}
    for kind, model in models.items():
        path = ck.save_official(model, tmp_path / f"{kind}{ext}")
        loaded = ck.load_model(path, **(HEADS if kind == "mae" else {"num_heads": 2}))
        assert type(loaded) is type(model) and ck.checkpoint_kind(ck.read_state_dict(path)) == kind
        assert loaded.get_config() | {"name": None} == model.get_config() | {"name": None}
        for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("ext", [".pth", ".safetensors"])
def test_pytorch_loads_export_strictly(ext, tmp_path, rng):
    for global_pool in (True, False):
        model = keras_mae.ViTClassifier(**ENCODER, num_classes=5, global_pool=global_pool)
        path = str(ck.save_official(model, tmp_path / f"clf{ext}"))
        if ext == ".pth":
            state_dict = torch.load(path, weights_only=True)["model"]
        else:
            from safetensors.torch import load_file

            state_dict = load_file(path)
        reference = torch_reference(global_pool)
        reference.load_state_dict(state_dict, strict=True)
        images = rng.normal(size=(2, 8, 12, 3)).astype("float32")
        with torch.no_grad():
            expected = reference(nchw(images)).numpy()
        np.testing.assert_allclose(to_np(model(images)), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("global_pool", [True, False])
def test_finetuned_layout_gives_reference_logits(global_pool, rng):
    reference = torch_reference(global_pool)
    # A learned 2x3 table does not tell its grid: the image size is given.
    model = ck.load_model(reference.state_dict(), image_size=(8, 12), num_heads=2)
    assert isinstance(model, keras_mae.ViTClassifier) and model.global_pool == global_pool
    images = rng.normal(size=(3, 8, 12, 3)).astype("float32")
    with torch.no_grad():
        expected = reference(nchw(images)).numpy()
    np.testing.assert_allclose(to_np(model(images)), expected, atol=1e-5, rtol=1e-5)


def test_encoder_only_layout_gives_reference_tokens(rng):
    reference = torch_reference(global_pool=False, num_classes=0)
    encoder = ck.load_model(reference, image_size=(8, 12), num_heads=2)  # a torch module works too
    assert isinstance(encoder, keras_mae.ViTEncoder)
    images = rng.normal(size=(2, 8, 12, 3)).astype("float32")
    with torch.no_grad():
        expected = reference.norm(reference.tokens(nchw(images))).numpy()
    np.testing.assert_allclose(to_np(encoder(images)), expected, atol=1e-5, rtol=1e-5)


def hf_model(norm_pix_loss=False):
    pytest.importorskip("transformers")
    from tests.hf_reference import build_hf_mae

    config = dict(image_size=(8, 8), patch_size=4, num_channels=3, hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32,
                  decoder_hidden_dim=8, decoder_num_layers=1, decoder_num_heads=2, decoder_mlp_dim=16)
    return build_hf_mae(config, norm_pix_loss)


def test_official_layout_from_reference_loads_strictly_and_matches(tmp_path, rng):
    from tests.hf_reference import hf_to_official as test_mapping

    reference = hf_model()
    state_dict = ck.hf_to_official(reference.state_dict())
    expected = test_mapping(reference)
    assert sorted(state_dict) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(state_dict[key], expected[key])
    path = ck.write_state_dict(state_dict, tmp_path / "mae_visualize_tiny.pth")
    model = ck.load_model(path, **HEADS)
    assert isinstance(model, keras_mae.MaskedAutoencoder) and not model.norm_pix_loss
    assert_matches_hf(model, reference, rng)


def test_hf_model_and_directory_round_trip(tmp_path, rng):
    import transformers

    reference = hf_model(norm_pix_loss=True)
    in_memory = ck.load_model(reference)  # heads, eps and norm_pix_loss from the HF config
    assert in_memory.norm_pix_loss and in_memory.num_heads == 2
    assert_matches_hf(in_memory, reference, rng)
    reference.save_pretrained(tmp_path / "hf")  # transformers 5.x writes the 4.x key names
    assert_matches_hf(ck.load_model(tmp_path / "hf"), reference, rng)
    encoder_only = transformers.ViTMAEModel(reference.config).eval()
    encoder_only.load_state_dict({k[4:]: v for k, v in reference.state_dict().items() if k.startswith("vit.")})
    encoder = ck.load_model(encoder_only)
    assert isinstance(encoder, keras_mae.ViTEncoder)
    images = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    noise = rng.random((2, 4)).astype("float32")
    with torch.no_grad():
        expected = encoder_only(nchw(images), noise=torch.from_numpy(noise)).last_hidden_state.numpy()
    # The HF encoder masks inside; ours is a plain backbone: the MAE's masking between embed and encode.
    visible, _, _ = keras_mae.layers.RandomMasking(reference.config.mask_ratio)(encoder.embed(images), noise=noise)
    np.testing.assert_allclose(to_np(encoder.encode(visible)), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("old, new", [((4, 4), (7, 7)), ((14, 14), (8, 5)), ((3, 5), (6, 2)), ((5, 5), (2, 3))])
def test_bicubic_resize_matches_torch(old, new, rng):
    grid = rng.normal(size=(*old, 6)).astype("float32")
    expected = torch.nn.functional.interpolate(nchw(grid[None]), size=new, mode="bicubic", align_corners=False)
    np.testing.assert_allclose(ck.bicubic_resize(grid, new), expected[0].permute(1, 2, 0).numpy(), atol=1e-5)


@pytest.mark.parametrize("image_size", [(12, 12), (12, 20)])
def test_learned_pos_embed_is_interpolated_as_official(image_size, rng):
    reference = torch_reference(image_size=(8, 8))  # 2x2 learned grid: the official code assumes square
    model = ck.load_model(reference, image_size=image_size, num_heads=2)
    grid = (image_size[0] // 4, image_size[1] // 4)
    with torch.no_grad():
        reference.pos_embed.data = official_interpolate_pos_embed(reference.pos_embed, grid)
        images = rng.normal(size=(2, *image_size, 3)).astype("float32")
        expected = reference(nchw(images)).numpy()
    np.testing.assert_allclose(to_np(model.encoder.pos_embed), reference.pos_embed.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(to_np(model(images)), expected, atol=1e-5, rtol=1e-5)


def test_sincos_pos_embed_is_recomputed(tiny_config):
    model = keras_mae.MaskedAutoencoder(**tiny_config)
    state_dict = ck.export_official_weights(model)
    assert ck.source_grid(state_dict["pos_embed"]) == (2, 3)  # non-square, told by the sin-cos table
    bigger = ck.load_model(state_dict, image_size=(16, 20), **HEADS)
    fresh = keras_mae.MaskedAutoencoder(**{**tiny_config, "image_size": (16, 20)})
    np.testing.assert_array_equal(to_np(bigger.encoder.pos_embed), to_np(fresh.encoder.pos_embed))
    np.testing.assert_array_equal(to_np(bigger.decoder.decoder_pos_embed), to_np(fresh.decoder.decoder_pos_embed))
    transposed = ck.load_model(state_dict, image_size=(12, 8), **HEADS)  # 3x2: as many positions, other grid
    fresh = keras_mae.MaskedAutoencoder(**{**tiny_config, "image_size": (12, 8)})
    np.testing.assert_array_equal(to_np(transposed.encoder.pos_embed), to_np(fresh.encoder.pos_embed))
    back = keras_mae.MaskedAutoencoder(**tiny_config)
    ck.load_weights_into(back, ck.export_official_weights(bigger))
    for a, b in zip(model.get_weights(), back.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_missing_and_extra_keys_are_named(tiny_config):
    state_dict = ck.export_official_weights(keras_mae.MaskedAutoencoder(**tiny_config))
    del state_dict["blocks.1.mlp.fc2.bias"]
    state_dict["blocks.1.ls1.gamma"] = np.ones(16, "float32")
    names = r"missing keys \['blocks.1.mlp.fc2.bias'\], unexpected keys \['blocks.1.ls1.gamma'\]"
    with pytest.raises(ValueError, match=names):
        ck.load_model(state_dict, **HEADS)
    model = keras_mae.MaskedAutoencoder(**tiny_config)
    assert ck.load_weights_into(model, state_dict, strict=False) == (["blocks.1.mlp.fc2.bias"], ["blocks.1.ls1.gamma"])


class WritesAFile:
    path = None

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    WritesAFile.path = str(tmp_path / "pwned")
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 16), "x": WritesAFile()}}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"Refusing to load .*evil.pth.*could run code"):
        ck.load_model(tmp_path / "evil.pth")
    assert not os.path.exists(WritesAFile.path)


def test_reading_pth_without_torch_says_what_to_do(tmp_path, monkeypatch):
    path = ck.save_official(keras_mae.ViTEncoder(**ENCODER), tmp_path / "encoder.pth")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"Reading \.pth needs PyTorch: pip install torch, or convert"):
        ck.read_state_dict(path)


def zeros(*shape):
    return np.broadcast_to(np.float32(0), shape)  # shapes only: a ViT-H in no memory


def official_shapes(width, depth, patch, grid, mlp, decoder=None, head=None, global_pool=True):
    sd = {"cls_token": zeros(1, 1, width), "pos_embed": zeros(1, 1 + grid * grid, width),
          "patch_embed.proj.weight": zeros(width, 3, patch, patch), "patch_embed.proj.bias": zeros(width)}
    for i in range(depth):
        sd[f"blocks.{i}.norm1.weight"] = zeros(width)
        sd[f"blocks.{i}.mlp.fc1.weight"] = zeros(mlp, width)
    sd["fc_norm.weight" if head and global_pool else "norm.weight"] = zeros(width)
    if head:
        sd["head.weight"] = zeros(head, width)
    if decoder:
        sd["decoder_embed.weight"] = zeros(decoder, width)
        for i in range(8):
            sd[f"decoder_blocks.{i}.norm1.weight"] = zeros(decoder)
            sd[f"decoder_blocks.{i}.mlp.fc1.weight"] = zeros(4 * decoder, decoder)
    return sd


def test_config_inference_of_official_families():
    base = ck.infer_config(official_shapes(768, 12, 16, 14, 3072))  # mae_pretrain_vit_base.pth
    assert base == dict(image_size=(224, 224), patch_size=16, num_channels=3, hidden_dim=768, num_layers=12,
                        num_heads=12, mlp_dim=3072)
    huge = official_shapes(1280, 32, 14, 16, 5120, decoder=512)  # mae_visualize / *_full
    assert ck.checkpoint_kind(huge) == "mae"
    assert ck.infer_config(huge) == dict(base, patch_size=14, hidden_dim=1280, num_layers=32, num_heads=16,
                                         mlp_dim=5120, decoder_hidden_dim=512, decoder_num_layers=8,
                                         decoder_num_heads=16, decoder_mlp_dim=2048)
    large = official_shapes(1024, 24, 16, 14, 4096, head=1000)  # mae_finetuned_vit_large.pth
    assert ck.checkpoint_kind(large) == "classifier"
    assert ck.infer_config(large) == dict(base, hidden_dim=1024, num_layers=24, num_heads=16, mlp_dim=4096,
                                          num_classes=1000, global_pool=True)
    assert ck.infer_config(official_shapes(768, 1, 16, 14, 3072, head=10, global_pool=False))["global_pool"] is False
    with pytest.raises(ValueError, match=r"Cannot infer num_heads for width 200.*pass num_heads="):
        ck.infer_config(official_shapes(200, 1, 16, 14, 800))
    assert ck.infer_config(official_shapes(200, 1, 16, 14, 800), num_heads=5)["num_heads"] == 5


def test_bad_inputs_get_one_clear_error(tmp_path, tiny_config):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ck.load_model(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"Unknown checkpoint extension '.ckpt'"):
        ck.read_state_dict(tmp_path / "weights.ckpt")
    with pytest.raises(ValueError, match="Not a ViT state dict"):
        ck.load_model({"weight": np.zeros(3)})
    with pytest.raises(ValueError, match=r"norm_pix_loss=True does not apply to .* ViTEncoder"):
        ck.load_model(ck.export_official_weights(keras_mae.ViTEncoder(**ENCODER)), num_heads=2, norm_pix_loss=True)
    learned = ck.export_official_weights(keras_mae.ViTEncoder(**ENCODER))
    learned["pos_embed"] = np.ones((1, 7, 16), "float32")
    with pytest.raises(ValueError, match=r"6 learned, non-square positions; pass image_size"):
        ck.load_model(learned, num_heads=2)
    assert ck.load_model(learned, image_size=(8, 12), num_heads=2).image_size == (8, 12)


def test_keras_file_reloads_at_another_size(tiny_config, tmp_path):
    model = keras_mae.MaskedAutoencoder(**tiny_config)
    model.save(tmp_path / "model.keras")
    same = ck.load_model(tmp_path)  # a workdir holding model.keras
    assert same.get_config() == model.get_config()
    other = ck.load_model(tmp_path / "model.keras", image_size=16, mask_ratio=0.5)
    assert other.image_size == (16, 16) and other.mask_ratio == 0.5
    np.testing.assert_array_equal(to_np(other.encoder.cls_token), to_np(model.encoder.cls_token))


def test_copy_weights_by_path_equals_the_official_layout_copy(tiny_config):
    from keras_mae.utils import copy_weights as copy_module

    keras.utils.set_random_seed(0)
    source = keras_mae.MaskedAutoencoder(**tiny_config)
    keras.utils.set_random_seed(1)
    target = keras_mae.MaskedAutoencoder(**tiny_config)
    assert copy_module.copy_weights(source, target) == []
    for a, b in zip(source.weights, target.weights):
        np.testing.assert_array_equal(to_np(a), to_np(b), err_msg=a.path)
    # Into a classifier's encoder: every encoder weight is copied, the head keeps its initial values.
    classifier = keras_mae.ViTClassifier(**{k: v for k, v in tiny_config.items() if not k.startswith("decoder")},
                                         num_classes=3)
    head = to_np(classifier.head.kernel)
    assert copy_module.copy_weights(source.encoder, classifier.encoder) == []
    np.testing.assert_array_equal(to_np(classifier.encoder.cls_token), to_np(source.encoder.cls_token))
    np.testing.assert_array_equal(to_np(classifier.head.kernel), head)
    # Weights the target has and the source lacks are named.
    assert copy_module.copy_weights(source.encoder, classifier) == [w.path for w in classifier.weights]
    # At another image size: the fixed sin-cos tables are the new grid's, every other weight is copied.
    bigger = keras_mae.MaskedAutoencoder(**{**tiny_config, "image_size": (12, 16)})
    copy_module.copy_weights(source, bigger)
    fresh = keras_mae.MaskedAutoencoder(**{**tiny_config, "image_size": (12, 16)})
    np.testing.assert_allclose(to_np(bigger.encoder.pos_embed), to_np(fresh.encoder.pos_embed), atol=1e-6)
    np.testing.assert_array_equal(to_np(bigger.encoder.blocks[0].qkv.kernel),
                                  to_np(source.encoder.blocks[0].qkv.kernel))
    with pytest.raises(ValueError, match="same architecture"):
        copy_module.copy_weights(source, keras_mae.MaskedAutoencoder(**{**tiny_config, "hidden_dim": 8}))


def test_corrupt_and_malformed_checkpoints_are_one_line_naming_the_file(tiny_config, tmp_path):
    model = keras_mae.MaskedAutoencoder(**tiny_config)
    formats = [".safetensors", ".npz"] + ([".pth"] if _has_torch() else [])
    for ext in formats:
        good = ck.save_official(model, tmp_path / f"good{ext}")
        data = open(good, "rb").read()
        bad = tmp_path / f"truncated{ext}"
        bad.write_bytes(data[: len(data) // 2])
        with pytest.raises(ck.CheckpointError, match=rf"Cannot read checkpoint .*truncated\{ext}.* truncated or "
                                                     r"corrupt; download or save it again"):
            ck.read_state_dict(bad)
        with pytest.raises(ValueError, match=r"truncated or corrupt"):
            ck.load_model(bad)
    # A Hugging Face folder whose config.json is not JSON, or lacks a key.
    folder = tmp_path / "hf"
    os.makedirs(folder)
    ck.save_official(model, folder / "model.safetensors")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json' is not valid JSON"):
        ck.read_hf_directory(str(folder))
    (folder / "config.json").write_text('{"hidden_size": 16, "num_hidden_layers": 2}')
    with pytest.raises(ValueError, match=r"lacks num_attention_heads, intermediate_size"):
        ck.read_hf_directory(str(folder))
    # A path where a state dict belongs.
    with pytest.raises(TypeError, match=r"takes a state dict, not a path .*load_weights_into\(model, path\)"):
        ck.load_official_weights(model, str(tmp_path / "good.npz"))


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


class _Payload:
    """Unpickling this would call os.system: what a malicious .pth does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_naming_the_call(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "ran"
    torch.save({"cls_token": torch.zeros(1, 1, 8), "payload": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(ck.CheckpointError, match=r"Refusing to load .*evil.pth.*\(it would call posix.system\)"):
        ck.read_state_dict(tmp_path / "evil.pth")
    assert not marker.exists()
