"""Run every trainer under the launcher this was started by (torchrun --nproc_per_node N) and save
each process's resulting weights, for tests/distributed/test_two_processes.py to compare.

`python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed/worker.py OUT`
writes OUT/<trainer>-rank<r>.safetensors. `python tests/distributed/worker.py OUT` (one process)
writes the single-process reference. Dropout is switched off so that runs at the same global
batch can be compared weight for weight.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script by the launcher: the tests package must import

import verticals  # noqa: E402,F401
from core.foundation import distributed  # noqa: E402
from core.models.backbones import load_backbone  # noqa: E402
from core.classify.config import TrainConfig  # noqa: E402
from core.data.splits import Split  # noqa: E402
from core.models.classifier import build_classifier  # noqa: E402
from core.classify.train import fit  # noqa: E402
from tests.conftest import CARD, TRANSFER  # noqa: E402

TRAIN = Split(CARD + TRANSFER, ["card"] * len(CARD) + ["transfer"] * len(TRANSFER))
CFG = TrainConfig(max_steps=6, lr=5e-3, head_lr=5e-2, batch_size=4, eval_every=2, patience=0, warmup=0.0)


def no_dropout(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return module


def classifier():
    torch.manual_seed(0)
    return no_dropout(build_classifier(load_backbone("tiny"), ["card", "transfer"], dropout=0.0))


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone().contiguous() for n, p in module.named_parameters()}


class Crash(Exception):
    pass


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tag = f"rank{distributed.rank()}" if distributed.is_distributed() else "single"
    runs = out / "runs"
    # classification, straight through; rank 0 writes the run dir, other ranks are pointed at their own
    # (empty) directory to prove that they write nothing
    mine = runs / ("straight" if distributed.is_main() else f"straight-{tag}")
    model = classifier()
    fit(model, TRAIN, TRAIN, CFG, run_dir=mine, progress=False)
    save_file(weights(model), out / f"classify-{tag}.safetensors")

    # interrupted after the checkpoint at step 2, then resumed from it (every process reads it)
    model = classifier()

    def crash(state):
        if state["step"] == 3:
            raise Crash

    try:
        fit(model, TRAIN, TRAIN, CFG, run_dir=runs / "resumed", progress=False, callbacks=(crash,))
    except Crash:
        pass
    distributed.barrier()
    torch.manual_seed(99)  # a fresh start: different RNG, different initial weights
    model = no_dropout(build_classifier(load_backbone("tiny"), ["card", "transfer"], dropout=0.0))
    fit(model, TRAIN, TRAIN, CFG, run_dir=runs / "resumed", resume=True, progress=False)
    save_file(weights(model), out / f"resumed-{tag}.safetensors")

    # the contrastive few-shot phase (sentence-transformers' loss, gathered across processes)
    from core.classify.config import ContrastiveConfig
    from core.classify.fewshot import fit_contrastive

    model = classifier()
    fit_contrastive(model, TRAIN, ContrastiveConfig(contrastive_steps=4, contrastive_batch_size=2, contrastive_lr=1e-3), progress=False)
    save_file(weights(model), out / f"contrastive-{tag}.safetensors")

    # the recsys item encoder (pairs of items, symmetric in-batch negatives)
    from solutions.recsys.content import TextEncoder
    from solutions.recsys.finetune import FinetuneConfig, finetune_encoder

    torch.manual_seed(0)
    encoder = TextEncoder(load_backbone("tiny"), 32)
    no_dropout(encoder.backbone.encoder)
    texts = {f"i{n}": f"item {w}" for n, w in enumerate("card transfer order refund pin cash atm fee".split())}
    pairs = [(f"i{a}", f"i{(a + 1) % 8}") for a in range(8)]
    finetune_encoder(encoder, pairs, texts, FinetuneConfig(steps=3, batch_size=4))
    save_file(weights(encoder.backbone.encoder), out / f"item-encoder-{tag}.safetensors")

    # self-supervised adaptation: SimCSE and MLM (their outputs are backbone directories)
    from core.adapt.mlm import AdaptConfig, adapt_backbone
    from core.adapt.simcse import SimCSEConfig, simcse_adapt

    texts = CARD + TRANSFER
    simcse_adapt("tiny", texts, out / "simcse", SimCSEConfig(max_steps=2, batch_size=4), progress=False)
    adapt_backbone("tiny", texts, out / "mlm", AdaptConfig(max_steps=2, head_warmup_steps=1, batch_size=4),
                   progress=False)
    distributed.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
