"""The latent decoders and the uint8 images: tim.load_decoder on the golden decoders of
tests/data (written by tools/reference/make_vae_golden.py and make_dc_ae_golden.py, their
reference checked against diffusers), configured by a config.json beside the weights as
`tim sample --vae` reads it; tim.to_uint8 against the SPEC 8 formulas in NumPy."""

import json

import numpy as np
import pytest

import tim
from conftest import DATA, read_safetensors, write_safetensors


def decoder_from_golden(path, tmp_path, config):
    """The golden file's weights alone, with a diffusers config.json beside them."""
    tensors, metadata = read_safetensors(path)
    weights = {k: v for k, v in tensors.items() if not k.startswith(("input.", "output."))}
    folder = tmp_path / path.stem
    folder.mkdir()
    write_safetensors(folder / "diffusion_pytorch_model.safetensors", weights)
    (folder / "config.json").write_text(json.dumps(config(metadata)))
    return tensors, folder / "diffusion_pytorch_model.safetensors"


CASES = {
    "sd_vae": (DATA / "vae_golden" / "sd_layout.safetensors",
               lambda m: {"_class_name": "AutoencoderKL", "norm_num_groups": int(m["norm_num_groups"]),
                          "scaling_factor": float(m["scaling_factor"])}, 8),
    "dc_ae": (DATA / "dc_ae_golden" / "sana_layout.safetensors",
              lambda m: {"_class_name": "AutoencoderDC", "attention_head_dim": int(m["attention_head_dim"]),
                         "decoder_in_shortcut": m["in_shortcut"] == "true",
                         "scaling_factor": float(m["scaling_factor"])}, None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_decoder_matches_the_golden_images(case, tmp_path):
    path, config, upscale = CASES[case]
    tensors, weights = decoder_from_golden(path, tmp_path, config)
    decoder = tim.load_decoder(weights)
    latents, expected = tensors["input.latents"], tensors["output.images"]
    assert decoder.latent_channels == latents.shape[1]
    if upscale:
        assert decoder.upscale == upscale
    images = decoder.decode(latents)
    assert images.dtype == np.float32 and images.shape == expected.shape
    # The bound of the C++ golden tests in float (tests/test_sd_vae.cpp, test_dc_ae.cpp):
    # max |difference| / max |reference| <= 1e-4.
    largest = np.abs(expected).max()
    assert largest > 0.1
    assert np.abs(images - expected).max() / largest <= 1e-4


def test_decoder_rejects_what_is_not_one(tmp_path):
    write_safetensors(tmp_path / "w.safetensors", {"weight": np.zeros(3, np.float32)})
    with pytest.raises(tim.Error, match="not a VAE decoder"):
        tim.load_decoder(tmp_path / "w.safetensors")
    with pytest.raises(tim.Error, match="overlap must be in"):
        tim.load_decoder(tmp_path / "w.safetensors", tile=8, overlap=8)


def test_to_uint8_is_the_spec_mapping():
    x = np.linspace(-1.2, 1.2, 2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    x[0, 0, 0, 0] = np.nan
    c2i = np.clip(np.float32(255) * (x + np.float32(1)) / np.float32(2), 0, 255)
    t2i = np.clip(np.float32(127.5) * x + np.float32(128), 0, 255)
    for mapping, values in (("c2i", c2i), ("t2i", t2i)):
        expected = np.nan_to_num(values, nan=0).astype(np.uint8).transpose(0, 2, 3, 1)
        assert np.array_equal(tim.to_uint8(x, mapping), expected)
    with pytest.raises(tim.Error, match="mapping must be"):
        tim.to_uint8(x, "srgb")
    with pytest.raises(tim.Error, match="C = 1 or 3"):
        tim.to_uint8(np.zeros((1, 2, 4, 4), np.float32))


def test_make_grid_places_every_image():
    images = np.arange(5 * 2 * 3 * 1, dtype=np.uint8).reshape(5, 2, 3, 1) + 1
    grid = tim.make_grid(images, columns=2, padding=1)
    assert grid.shape == (3 * 3 + 1, 2 * 4 + 1, 1)
    assert np.array_equal(grid[1:3, 1:4], images[0]) and np.array_equal(grid[1:3, 5:8], images[1])
    assert np.array_equal(grid[7:9, 1:4], images[4]) and not grid[7:9, 5:8].any()
