"""Syntax-aware decoding on real data: compile rate and balanced share without the constraint, with the TeX
rules alone and with the well-formedness rules (topicrnn/latex_syntax/wellformed.py), and each one's cost.

A Kneser-Ney n-gram (topicrnn.ngram.NGramLM) is fitted on the training equations of an ingest dir, over
characters (`--unit char`) or over LaTeX tokens (`--unit latex`), each equation framed <bos> ... <eos> so
that the end is learned too. The same model then writes `--n` equations from the same seed through the one
sampler (topicrnn.sampling): free, and under `LatexConstraint` built from the same training equations for each
constraint config (the TeX rules alone; + the well-formedness rules), at `--max-len` the constraint's closing()
appended. Every set goes through the real compile rule (pipeline.compile_check) and the balance check
(pipeline.wellformed). The baseline of the timing part is one step of a 2x512 LSTM at the same batch size,
measured in the same run; the new rules' cost is also given as a ratio to the TeX rules'.

    .venv/bin/python bench/syntax_bench.py --data data/ingest --n 300 --unit latex
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.compile_check import check  # noqa: E402
from pipeline.ingest import read_records  # noqa: E402
from pipeline.wellformed import balanced_share  # noqa: E402
from topicrnn.interface import LoadedModel  # noqa: E402
from topicrnn.latex_syntax import LatexConstraint, SyntaxConfig, SyntaxVocabulary, TokenAutomaton  # noqa: E402
from topicrnn.ngram import NGramConfig, NGramLM  # noqa: E402
from topicrnn.tokenizers import make_tokenizer  # noqa: E402


def load_train(data: Path, limit: int | None, seed: int) -> list[str]:
    eqs = [r["equation"] for r in read_records(data, "train")]
    if limit and len(eqs) > limit:
        rng = np.random.default_rng(seed)
        eqs = [eqs[i] for i in sorted(rng.choice(len(eqs), limit, replace=False))]
    return eqs


def fit_ngram(unit: str, order: int, equations: list[str]) -> LoadedModel:
    tokenizer = make_tokenizer(unit).fit(equations)
    model = NGramLM(tokenizer, NGramConfig(order=order, tokenizer=unit, records=True)).fit_records(equations)
    return LoadedModel(model, tokenizer, add_eos=True)


CONFIGS = {"tex": SyntaxConfig(balanced=False, operands=False, known_words=False), "wellformed": SyntaxConfig()}


def time_masks(auto: TokenAutomaton, batch: int, steps: int, seed: int) -> tuple[float, float, float]:
    """Seconds per step for mask + advance of `batch` sequences (random allowed tokens), cold (the first
    pass, filling the caches) and warm (a second pass), and for one 2x512 LSTM step at the same batch (the
    baseline)."""
    rng = np.random.default_rng(seed)

    def run() -> float:
        c = LatexConstraint(auto)
        c.start(batch)
        spent = 0.0
        for _ in range(steps):
            t0 = time.perf_counter()
            mask = c.allowed_mask()
            spent += time.perf_counter() - t0
            probs = mask.float()
            choice = torch.multinomial(probs / probs.sum(1, keepdim=True), 1,
                                       generator=torch.Generator().manual_seed(int(rng.integers(1 << 30)))).squeeze(1)
            t0 = time.perf_counter()
            c.advance(choice.tolist())
            spent += time.perf_counter() - t0
        return spent / steps

    cold = run()  # fills the caches (a real sampler keeps one automaton per model)
    per_step = run()
    lstm = torch.nn.LSTM(128, 512, num_layers=2, batch_first=True)
    head = torch.nn.Linear(512, auto.V)
    x = torch.randn(batch, 1, 128)
    with torch.no_grad():
        out, st = lstm(x)
        t0 = time.perf_counter()
        for _ in range(10):
            out, st = lstm(x, st)
            head(out[:, -1])
        model_step = (time.perf_counter() - t0) / 10
    return cold, per_step, model_step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO / "data" / "ingest")
    ap.add_argument("--unit", choices=["char", "latex"], default="char")
    ap.add_argument("--order", type=int, default=6)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--max-len", type=int, default=0, help="symbols per equation (default 400 char / 120 latex)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--train-limit", type=int, default=0, help="fit on a random subset of the training split")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timing-batch", type=int, default=1024)
    ap.add_argument("--timing-steps", type=int, default=30)
    args = ap.parse_args(argv)
    max_len = args.max_len or (400 if args.unit == "char" else 120)

    train = load_train(args.data, args.train_limit or None, args.seed)
    syntax = SyntaxVocabulary.from_equations(train)
    t0 = time.perf_counter()
    lm = fit_ngram(args.unit, args.order, train)
    print(f"train equations {len(train)}, {args.unit} {args.order}-gram, vocab {lm.tokenizer.vocab_size}, "
          f"fit {time.perf_counter() - t0:.1f}s; unsupported seen names: {syntax.unsupported()}")
    sets: dict[str, list[str]] = {}
    autos: dict[str, TokenAutomaton | None] = {}
    seconds: dict[str, float] = {}
    for name in ("free",) + tuple(CONFIGS):
        proto = LatexConstraint.for_tokenizer(lm.tokenizer, syntax, CONFIGS[name]) if name in CONFIGS else None
        autos[name] = proto.automaton if proto is not None else None
        t0 = time.perf_counter()
        sets[name] = lm.sample(args.n, max_len, temperature=args.temperature, seed=args.seed,
                               constraint=proto.fresh() if proto is not None else None)
        seconds[name] = time.perf_counter() - t0
    verdicts = check([e for eqs in sets.values() for e in eqs], progress=True)
    print(f"{args.unit} {args.order}-gram, T={args.temperature}, n={args.n}, max_len={max_len}:")
    for i, (name, eqs) in enumerate(sets.items()):
        ok = sum(v.ok for v in verdicts[i * args.n:(i + 1) * args.n])
        auto = autos[name]
        extra = f", {auto.n_states} states, {auto.n_keys} mask rows" if auto is not None else ""
        print(f"  {name:<10} compile {ok}/{args.n} = {ok / args.n:.1%}; balanced {balanced_share(eqs):.1%}; "
              f"generation {seconds[name]:.1f}s{extra}")
    errs: dict[str, int] = {}
    for v in verdicts[: args.n]:
        if not v.ok:
            k = (v.error or "?").split(".")[0][:60]
            errs[k] = errs.get(k, 0) + 1
    print("free failures:", sorted(errs.items(), key=lambda kv: -kv[1])[:6])
    for i, name in enumerate(CONFIGS, start=1):
        bad = [(t, v.error) for t, v in zip(sets[name], verdicts[i * args.n:(i + 1) * args.n]) if not v.ok]
        for t, e in bad[:5]:
            print(f"{name} failure:", repr(t[:300]), e)
        for t in sets[name][:3]:
            print(f"{name} sample:", t[:200])
    if args.timing_batch:
        torch.set_num_threads(max(1, torch.get_num_threads()))
        costs = {}
        for name in CONFIGS:
            # fresh caches: the cold pass is real
            auto = LatexConstraint.for_tokenizer(lm.tokenizer, syntax, CONFIGS[name]).automaton
            cold, per_step, model_step = time_masks(auto, args.timing_batch, args.timing_steps, args.seed)
            costs[name] = per_step
            print(f"{name}: per step at batch {args.timing_batch}: mask+advance {per_step * 1e3:.1f} ms warm, "
                  f"{cold * 1e3:.1f} ms cold (first pass, {auto.n_keys} mask rows); 2x512 LSTM step "
                  f"{model_step * 1e3:.1f} ms, ratio warm/LSTM {per_step / model_step:.2f}")
        print(f"wellformed / tex, warm per step: {costs['wellformed'] / costs['tex']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
