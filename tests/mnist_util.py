"""Synthetic MNIST-format IDX files for tests (the real data set is never downloaded)."""

from __future__ import annotations

from gengraph.plugins.datasets.mnist import synthetic, write_folder


def write_mnist(folder, n_train=30, n_test=10, size=28, gz=False, seed=0, skip=()):
    """Synthetic MNIST-format files; returns the arrays written."""
    arrays = synthetic(n_train, n_test, size, seed)
    write_folder(folder, {k: a for k, a in arrays.items() if k not in skip}, gz)
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
