"""Train the digits CNN deterministically and write weights.npz, eval.npz and calib.npz next to this file.

Data: scikit-learn's bundled 8x8 digits (no download). Split: stratified 75/25, random_state=0.
eval.npz = the held-out 25% (``image``, ``labels``); calib.npz = 200 training images (``image``).
"""

from pathlib import Path

import numpy as np
import torch
from model import DigitsCNN
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).parent


def main(epochs: int = 40) -> None:
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    x_tr, x_ev, y_tr, y_ev = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    rng = np.random.default_rng(0)
    for _epoch in range(epochs):
        model.train()
        order = rng.permutation(len(xt))
        for i in range(0, len(order), 64):
            idx = torch.from_numpy(order[i : i + 64])
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(torch.from_numpy(x_ev)).argmax(1).numpy() == y_ev).mean()
    print(f"eval top-1: {acc * 100:.2f}% on {len(y_ev)} held-out digits")
    np.savez(HERE / "weights.npz", **{k: v.numpy() for k, v in model.state_dict().items()})
    np.savez(HERE / "eval.npz", image=x_ev, labels=y_ev)
    np.savez(HERE / "calib.npz", image=x_tr[:200])


if __name__ == "__main__":
    main()
