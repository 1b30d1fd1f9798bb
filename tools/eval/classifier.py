"""The Fashion-MNIST classifier of our evaluation (docs/results.md): a small CNN trained once on
the training split; its 128-d penultimate activations are the features of the Frechet distance.

  python tools/eval/classifier.py train --out models/fmnist-classifier.safetensors   # ~10 min, 2 cores
  python tools/eval/classifier.py test  --weights models/fmnist-classifier.safetensors

Input: images in the model range [-1, 1], (B, 1, 32, 32) (28x28 padded by 2 px of background, as
the TiM models are trained). Training is deterministic for a given --seed and thread count.
The safetensors file holds float16 weights and, in __metadata__, the architecture, the recipe and
the test accuracy measured right after training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import train as T  # noqa: E402  (Fashion-MNIST loading, shared with the trainer)

FEATURES = 128


class Classifier(nn.Module):
    """conv3x3(1->32) relu conv3x3(32->32) relu maxpool2 | conv3x3(32->64) relu conv3x3(64->64) relu
    maxpool2 | linear(4096->128) relu = features | dropout linear(128->10) = logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv4 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 8 * 8, FEATURES)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURES, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        h = F.max_pool2d(F.relu(self.conv4(F.relu(self.conv3(h)))), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.head(self.dropout(f)), f


def load(path: str) -> Classifier:
    from safetensors.torch import load_file
    model = Classifier()
    model.load_state_dict({k: v.float() for k, v in load_file(path).items()})
    return model.eval()


@torch.inference_mode()
def run(model: Classifier, images: torch.Tensor, batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, 10), features (N, 128)) of images (N, 1, 32, 32) in [-1, 1], float64 features."""
    logits, feats = [], []
    for i in range(0, len(images), batch):
        lo, f = model(images[i:i + batch].float())
        logits.append(lo)
        feats.append(f.double())
    return torch.cat(logits), torch.cat(feats)


def accuracy(model: Classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    logits, _ = run(model, images)
    return (logits.argmax(1) == labels).double().mean().item()


def train(args) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    images, labels, data_dir = T.load_fashion_mnist(args.data_dir, "train")
    test_images, test_labels, _ = T.load_fashion_mnist(args.data_dir, "test")
    x_all, x_test = T.to_model_range(images), T.to_model_range(test_images)
    model = Classifier()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = len(x_all) // args.batch
    total = steps_per_epoch * args.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total)
    g = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_all), generator=g)
        for s in range(steps_per_epoch):
            idx = order[s * args.batch:(s + 1) * args.batch]
            x = x_all[idx]
            # light augmentation: random horizontal flip and a shift of up to 2 px
            flip = torch.rand(len(x), generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=g))
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            logits, _ = model(x)
            loss = F.cross_entropy(logits, labels[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        acc = accuracy(model, x_test, test_labels)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.4f}, test accuracy {acc:.4f}, "
              f"{time.time() - start:.0f} s", flush=True)
    from safetensors.torch import save_file
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    meta = {
        "generator": "tools/eval/classifier.py",
        "architecture": Classifier.__doc__.replace("\n", " ").strip(),
        "input": "(B, 1, 32, 32) in [-1, 1]: uint8 / 127.5 - 1, 28x28 padded by 2 px of -1",
        "features": f"{FEATURES}-d penultimate activations (after ReLU)",
        "dataset": f"Fashion-MNIST training split (60,000 images) from {data_dir}",
        "recipe": json.dumps({k: v for k, v in sorted(vars(args).items()) if k not in ("out", "command")}),
        "train_seconds": f"{time.time() - start:.0f}",
        "torch_version": torch.__version__,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(tensors, args.out, metadata=meta)
    # The accuracy of the weights as stored (float16), which is what evaluate.py uses.
    stored = load(args.out)
    meta["test_accuracy"] = f"{accuracy(stored, x_test, test_labels):.4f}"
    meta["test_accuracy_note"] = "Fashion-MNIST test split (10,000 images), float16 weights as stored"
    save_file(tensors, args.out, metadata=meta)
    print(f"wrote {args.out}: {sum(v.numel() for v in tensors.values())} parameters, "
          f"test accuracy {meta['test_accuracy']} (float16 weights)")


def test(args) -> None:
    torch.set_num_threads(args.threads)
    model = load(args.weights)
    images, labels, _ = T.load_fashion_mnist(args.data_dir, "test")
    print(f"{args.weights}: test accuracy {accuracy(model, T.to_model_range(images), labels):.4f} "
          f"on {len(labels)} images")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train on the training split and write the weights")
    t.add_argument("--out", required=True)
    t.add_argument("--epochs", type=int, default=6)
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--data-dir", default=None)
    e = sub.add_parser("test", help="test accuracy of stored weights")
    e.add_argument("--weights", required=True)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--data-dir", default=None)
    args = p.parse_args()
    train(args) if args.command == "train" else test(args)


if __name__ == "__main__":
    main()
