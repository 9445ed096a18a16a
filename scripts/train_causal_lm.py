"""Train torchbp's tiny causal language model to reverse (or copy) digit strings with ``torchbp.fit``.

    python scripts/train_causal_lm.py --task reverse --length 6 --logdir runs

Every layer (embeddings, attention, layer norms, linear layers, GELU) runs its explicit δ backward;
with ``--logdir``, TensorBoard shows a δ norm per layer of every block (``delta_norm/blocks.N.…``).
"""

from __future__ import annotations

import argparse

import torchbp
from torchbp.nn.models import CausalLM
from torchbp.training.datasets import digit_strings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("copy", "reverse"), default="reverse")
    parser.add_argument("--length", type=int, default=6, help="digits per string")
    parser.add_argument("--examples", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--width", type=int, default=48)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--logdir", default=None)
    args = parser.parse_args()
    train = digit_strings(args.examples, args.length, args.task, seed=0)
    val = digit_strings(512, args.length, args.task, seed=1)
    model = CausalLM(11, 2 * args.length, width=args.width, heads=4, blocks=args.blocks, scored=args.length)
    history = torchbp.fit(
        model,
        (train.inputs, train.targets),
        cost="cross_entropy",
        rule="adam",
        lr=3e-3,
        epochs=args.epochs,
        batch_size=64,
        val_data=(val.inputs, val.targets),
        logdir=args.logdir,
        name=f"causal-lm-{args.task}",
        seed=0,
    )
    seconds = sum(epoch["seconds"] for epoch in history)
    print(f"token accuracy {100 * history[-1]['val_accuracy']:.2f}% after {seconds:.1f} s of training")


if __name__ == "__main__":
    main()
