"""How fast a LaCET layer learns to retrieve, next to softmax attention, on a synthetic recall task.

The built-in demo model has not learned to read its input views back out of its fast weights
(README, "Where the built-in model stands"). This script isolates that skill. Each sample has
``--tokens`` memory tokens ``[address | content]`` (random Gaussian vectors) and ``--queries`` query
tokens ``[address of a memory token | 0]``; the task is to output the queried token's content.
Predicting zero scores a loss of 1 (the content's variance); a perfect retrieval scores 0.

The mixer between a shared embedding and a linear read-out is either

* ``lacet``: :class:`modeling.lacet.LaCETLayer` (one head as wide as the model, as released), which
  updates its fast weights on the memory tokens (in chunks of ``--chunk-size``) and applies them to
  the queries: the path every cross-view read of an FSM-LVSM takes;
* ``attention``: one softmax attention head from the queries to the memory tokens.

Both are trained with Adam on fresh random samples; the script prints the training loss every
``--log-every`` steps and writes JSON. A fast-weight memory can store these pairs (tests/test_lacet.py
checks that updates on random keys retrieve every value); the question here is how quickly
gradient descent finds the projections that make it do so::

    python benchmarks/retrieval_learning.py --json benchmarks/results/retrieval_learning.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling.lacet import LaCETLayer, update_then_apply_schedule  # noqa: E402


class RecallModel(nn.Module):
    """Embedding -> mixer (LaCET or attention) with a residual -> LayerNorm -> linear read-out."""

    def __init__(
        self, mixer: str, part_dim: int, width: int, chunk_size: int, init_scale: float, inter_multi: float, seed: int
    ):
        super().__init__()
        self.embed = nn.Linear(2 * part_dim, width, bias=False)
        self.mixer_kind = mixer
        if mixer == "lacet":
            self.mixer = LaCETLayer(
                hidden_size=width, head_dim=width, inter_multi=inter_multi, chunk_size=chunk_size,
                newton_schulz_dtype="float32", fast_weight_init_scale=init_scale,
            )  # fmt: skip
            self.mixer.reset_fast_weights(torch.Generator().manual_seed(seed))
        else:
            self.mixer = nn.MultiheadAttention(width, 1, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.readout = nn.Linear(width, part_dim)

    def forward(self, tokens: torch.Tensor, num_memory: int) -> torch.Tensor:
        """``tokens [B, M + Q, 2P]`` (memory first) -> ``[B, Q, P]`` predicted contents of the queries."""
        hidden = self.embed(tokens)
        if self.mixer_kind == "lacet":
            mixed, _, _ = self.mixer(hidden, update_then_apply_schedule(num_memory, hidden.shape[1]))
        else:
            memory = hidden[:, :num_memory]
            mixed, _ = self.mixer(hidden, memory, memory, need_weights=False)
        return self.readout(self.norm(hidden + mixed))[:, num_memory:]


def recall_batch(batch: int, tokens: int, queries: int, part_dim: int, generator: torch.Generator):
    """``(inputs [B, M + Q, 2P], targets [B, Q, P])`` of the recall task."""
    address = torch.randn(batch, tokens, part_dim, generator=generator)
    content = torch.randn(batch, tokens, part_dim, generator=generator)
    pick = torch.randint(0, tokens, (batch, queries, 1), generator=generator).expand(-1, -1, part_dim)
    queried_address, target = address.gather(1, pick), content.gather(1, pick)
    memory = torch.cat([address, content], dim=-1)
    query = torch.cat([queried_address, torch.zeros_like(target)], dim=-1)
    return torch.cat([memory, query], dim=1), target


def train(args, mixer: str) -> List[Dict[str, float]]:
    torch.manual_seed(args.seed)
    model = RecallModel(mixer, args.part_dim, args.width, args.chunk_size, args.init_scale, args.inter_multi, args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    data = torch.Generator().manual_seed(args.seed + 1)
    curve, window = [], []
    for step in range(1, args.steps + 1):
        inputs, target = recall_batch(args.batch_size, args.tokens, args.queries, args.part_dim, data)
        loss = F.mse_loss(model(inputs, args.tokens), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.append(loss.item())
        if step % args.log_every == 0:
            curve.append({"step": step, "loss": sum(window) / len(window)})
            window = []
            print(f"{mixer:<9} step {step:5d}  loss {curve[-1]['loss']:.3f}", flush=True)
    return curve


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mixers", default="attention,lacet", help="comma list of attention, lacet")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64, help="memory tokens per sample")
    parser.add_argument("--queries", type=int, default=16, help="query tokens per sample")
    parser.add_argument("--part-dim", type=int, default=32, help="size of the address and of the content")
    parser.add_argument("--width", type=int, default=64, help="model width (= the LaCET head)")
    parser.add_argument("--chunk-size", type=int, default=32, help="LaCET chunk in tokens (0: one chunk)")
    parser.add_argument("--init-scale", type=float, default=1.0, help="LaCET fast-weight init scale (1 = official)")
    parser.add_argument("--inter-multi", type=float, default=2, help="LaCET fast SwiGLU width / head width (2 = released)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--log-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    mixers = [m.strip() for m in args.mixers.split(",") if m.strip()]
    unknown = sorted(set(mixers) - {"attention", "lacet"})
    if unknown:
        parser.error(f"--mixers: unknown {unknown}; expected attention and/or lacet")
    torch.set_num_threads(args.threads)
    curves = {mixer: train(args, mixer) for mixer in mixers}
    print(f"{'step':>6} " + " ".join(f"{m:>10}" for m in mixers))
    for i, row in enumerate(curves[mixers[0]]):
        print(f"{row['step']:6d} " + " ".join(f"{curves[m][i]['loss']:10.3f}" for m in mixers))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "curves": curves}, indent=2), encoding="utf-8")
        print(f"Wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
