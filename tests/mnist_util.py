"""Synthetic MNIST-format IDX files for tests (the real data set is never downloaded)."""

from __future__ import annotations

import gzip

import numpy as np

from gengraph.plugins.datasets.mnist import FILES


def idx_bytes(a: np.ndarray, code: int = 0x08) -> bytes:
    head = bytes([0, 0, code, a.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in a.shape)
    return head + a.astype(">u1").tobytes()


def write_mnist(folder, n_train=30, n_test=10, size=28, gz=False, seed=0, skip=()):
    """Synthetic MNIST-format files; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, size=(n_train, size, size)).astype(np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, size, size)).astype(np.uint8),
        "test_labels": ((np.arange(n_test) + 3) % 10).astype(np.uint8),
    }
    for key, a in arrays.items():
        if key in skip:
            continue
        data = idx_bytes(a)
        if gz:
            (folder / (FILES[key] + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / FILES[key]).write_bytes(data)
    return arrays


def mnist_overrides(spec_path, folder) -> list[str]:
    """--set overrides that point an mnist/fashion_mnist spec at small synthetic files in folder
    (written here), and shorten a U-Net diffusion spec's chain; [] for other specs."""
    import tomllib

    raw = tomllib.loads(open(spec_path).read())
    out = []
    if raw.get("data", {}).get("source") in ("mnist", "fashion_mnist"):
        write_mnist(folder, n_train=48, n_test=12)
        out += [f"data.dir={folder}", "data.n_train=48", "data.n_test=12"]
    model = raw.get("model", {})
    net = model.get("network", {})
    if net.get("kind") == "unet":  # a short chain and a narrow network: a smoke test of the whole run
        levels = len(net.get("channels", [32, 64]))
        out += ["model.schedule.T=20", f"model.network.channels=[{', '.join(['8'] * levels)}]",
                "model.network.blocks=1"]
    if model.get("kind") == "rbm" and raw.get("data", {}).get("source") in ("mnist", "fashion_mnist"):
        out += ["model.ais_steps=100", "model.ais_runs=10", "model.sample_steps=10"]
    return out


def gradcheck_overrides(spec_path) -> list[str]:
    """Extra gradcheck arguments that keep a U-Net spec's check fast: a narrow network, one block,
    and few entries per parameter (its parameters are many small tensors)."""
    import tomllib

    net = tomllib.loads(open(spec_path).read()).get("model", {}).get("network", {})
    if net.get("kind") != "unet":
        return []
    levels = len(net.get("channels", [32, 64]))
    return ["--set", f"model.network.channels=[{', '.join(['8'] * levels)}]", "--set", "model.network.blocks=1",
            "--max-entries", "3"]
