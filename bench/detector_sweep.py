"""Does a decoding choice make a run's equations harder to tell from real ones? The flow's own generation and
judge, one setting varied at a time, over several generation seeds.

Each row generates what the `equations` flow's "topic" set holds (`--per-topic` equations for every topic,
syntax constraint, lengths capped by the topic's real lengths, T = `--temperature`) from a checkpoint on a
finished run's ingest and topics, for each of `--gen-seeds`, and judges it as the flow does
(`pipeline.detector.detect`: real test equations of the same topic and length, `--repeats` matchings
averaged). The spread between generation seeds is the figure's noise: a single run's detector moves by
±0.01-0.02 with the seed alone. Variants (`--variant`, several allowed):

    base              the flow's decoding (θ = the topic's LDA prototype)
    context           θ from the model's own context encoder on a training context of the topic, one per
                      equation (a context-lstm only): in-distribution θ instead of the prototype
    context-test      the same on contexts of the test split (unseen papers: TopicEq's "an equation for this
                      paragraph"; the judge still pairs by topic and length, not with that paragraph's equation)
    likely:K          best of K candidates per slot by the model's own log-probability per character
    typical:K:Q       of K candidates, the one nearest the Q quantile of real validation equations' log-prob
    guided:W          logits (1 + W) log p_topic − W log p_plain (`--plain` checkpoint): topic guidance
    mix:N:L           log(L p_model + (1 − L) p_ngram): interpolated with a Kneser-Ney N-gram of the training
                      equations over the model's own tokens (it lowers validation bits/char by 0.16 at N = 8,
                      L = 0.6 on the default run)
    control           no model: real training equations of the topics (`pipeline.judge.control_equations`),
                      what a model writing exactly like the training papers reaches

Each row gives the char detector with the test papers held out (the judge's figure, `pipeline.detector`) and
under stratified folds ("any fold"), where the detector can learn the few test papers' own notation.

    python bench/detector_sweep.py --run data/runs/latest --variant base --variant context \\
        --variant likely:4 --variant typical:4:0.8 --variant guided:0.5 --gen-seeds 0,1,2,3
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.detector import DetectorConfig, detect  # noqa: E402
from pipeline.judge import control_equations, paper_groups  # noqa: E402
from pipeline.ingest import read_records  # noqa: E402
from pipeline.quiz import attach_dominant_topics  # noqa: E402
from pipeline.topics import ThetaTable  # noqa: E402
from topicrnn.checkpoint import load_model  # noqa: E402
from topicrnn.conditioning import topic_prototypes, topic_theta  # noqa: E402
from topicrnn.context_lm import context_theta_rows, reads_contexts  # noqa: E402
from topicrnn.generation import (TOPIC_SEED_STRIDE, TopicEquation, allowed_control_sequences,  # noqa: E402
                                 generate_for_topics, length_settings, sample_equations)
from topicrnn.ngram import NGramConfig, NGramLM  # noqa: E402
from topicrnn.scoring import sequence_logprobs  # noqa: E402


class PairedModel:
    """Two models of one vocabulary stepped together, their next-token log-probabilities combined by `mix`
    (the second takes no θ). Guidance: (1 + w) log p_a − w log p_b; interpolation: log(λ p_a + (1 − λ) p_b)."""

    training = False

    def __init__(self, a, b, mix):
        self.a, self.b, self.mix = a, b, mix
        self.device, self.vocab_size, self.topic_dim = a.device, a.vocab_size, a.topic_dim

    @classmethod
    def guided(cls, a, b, weight: float) -> "PairedModel":
        return cls(a, b, lambda la, lb: (1 + weight) * la - weight * lb)

    @classmethod
    def interpolated(cls, a, b, weight: float) -> "PairedModel":
        return cls(a, b, lambda la, lb: torch.logaddexp(la + np.log(weight), lb + np.log(1 - weight)))

    def eval(self):
        return self

    def step(self, ids, theta, state):
        la, sa = self.a.step(ids, theta, None if state is None else state[0])
        lb, sb = self.b.step(ids, None, None if state is None else state[1])
        logp_a = torch.log_softmax(la.float(), -1)
        return self.mix(logp_a, torch.log_softmax(lb.float(), -1).to(logp_a.device)), (sa, sb)


def nats_per_char(lm, equations, thetas) -> np.ndarray:
    ids = [lm.tokenizer.encode(e, bos=True, eos=lm.add_eos) for e in equations]
    lp = sequence_logprobs(lm.model, ids, thetas if lm.conditioned else None, pad_id=lm.tokenizer.pad_id,
                           chunk=lm.chunk)
    return -lp / np.array([len(e) + 1 for e in equations])


@dataclass
class Setup:
    """What every variant and seed shares, read once per run: θ per topic, the constraint's vocabulary and
    length prior, and the run's records with their dominant topic."""

    thetas: dict[int, np.ndarray]
    syntax: object
    lengths: dict
    records: list[dict]
    scores: dict[int, tuple] = field(default_factory=dict)  # id(model) -> (model, validation nats/char, lengths)
    ngrams: dict[int, object] = field(default_factory=dict)  # mix: order -> n-gram of the training equations

    @classmethod
    def read(cls, lm, table, data: Path) -> "Setup":
        records = list(read_records(data))
        prototypes = topic_prototypes(table, [r for r in records if r["split"] == "train"])
        return cls({t: topic_theta(table, t, prototypes=prototypes) for t in range(int(table.k))},
                   allowed_control_sequences(lm, data), length_settings(lm, "cap", data, table, True),
                   attach_dominant_topics(records, table.theta_by_id(), split=None))

    def ngram(self, lm, order: int):
        if order not in self.ngrams:
            self.ngrams[order] = NGramLM(lm.tokenizer, NGramConfig(order=order, tokenizer=lm.tokenizer.kind,
                                                                   records=True)).fit_records(
                [r["equation"] for r in self.split("train")])
        return self.ngrams[order]

    def split(self, name: str) -> list[dict]:
        return [r for r in self.records if r["split"] == name]

    def validation_scores(self, lm) -> tuple[np.ndarray, np.ndarray]:
        """(nats per character, characters) of each of the first 1,500 validation equations under `lm`, θ the
        topic's prototype; scored once per model."""
        key = id(lm.model)
        if key not in self.scores:
            val = self.split("val")[:1500]
            rows = np.stack([self.thetas[r["topic"]] for r in val]).astype(np.float32)
            # the model is kept with its scores so that its id is not reused by another one
            self.scores[key] = (lm.model, nats_per_char(lm, [r["equation"] for r in val], rows),
                                np.array([len(r["equation"]) + 1 for r in val]))
        return self.scores[key][1:]

    def validation_bits_per_char(self, lm) -> float:
        nats, chars = self.validation_scores(lm)
        return float((nats * chars).sum() / chars.sum() / np.log(2))

    def typical_goal(self, lm, quantile: float) -> float:
        """The `quantile` of the real validation equations' nats per character (the typical variant's goal)."""
        return float(np.quantile(self.validation_scores(lm)[0], quantile))


def interpolated(lm, setup: Setup, params: list[str]):
    return replace(lm, model=PairedModel.interpolated(lm.model, setup.ngram(lm, int(params[0])), float(params[1])))


def generate(variant: str, lm, plain, setup: Setup, k_topics: int, per_topic: int, seed: int, temperature: float):
    kind, *params = variant.split(":")
    if kind == "control":
        train = setup.split("train")
        return [TopicEquation(r["topic"], r["equation"])
                for r in control_equations(train, [t for t in range(k_topics) for _ in range(per_topic)], seed)]
    sample_kwargs = dict(temperature=temperature, syntax=setup.syntax)
    if kind in ("context", "context-test"):
        if not reads_contexts(lm.model):
            raise SystemExit("--variant context needs a context-lstm checkpoint (one with a context encoder)")
        by_topic: dict[int, list[dict]] = {}
        for r in setup.split("train" if kind == "context" else "test"):
            by_topic.setdefault(r["topic"], []).append(r)
        rng = np.random.default_rng(seed)
        view = replace(lm, model=lm.model.with_context_theta())
        out = []
        for t in range(k_topics):
            pool = by_topic.get(t) or [r for rs in by_topic.values() for r in rs]
            picks = [pool[i] for i in rng.choice(len(pool), per_topic, replace=len(pool) < per_topic)]
            rows = context_theta_rows(lm.model, [p["context"] for p in picks])
            s = seed + TOPIC_SEED_STRIDE * t
            eqs = sample_equations(view, rows, n=per_topic, seed=s, **sample_kwargs,
                                   target_lengths=setup.lengths["lengths"].targets(t, per_topic, s),
                                   length_floor=setup.lengths["length_floor"])
            out += [TopicEquation(t, e) for e in eqs]
        return out
    k = int(params[0]) if kind in ("likely", "typical") else 1
    target = lm
    if kind == "guided":
        target = replace(lm, model=PairedModel.guided(lm.model, plain.model, float(params[0])))
    elif kind == "mix":
        target = interpolated(lm, setup, params)
    gen = generate_for_topics(target, setup.thetas, per_topic * k, seed=seed, **sample_kwargs, **setup.lengths)
    if k == 1:
        return gen
    nll = nats_per_char(lm, [g.equation for g in gen],
                        np.stack([setup.thetas[g.topic] for g in gen]).astype(np.float32))
    goal = setup.typical_goal(lm, float(params[1])) if kind == "typical" else None
    chosen = []
    for t in range(k_topics):
        idx = [i for i, g in enumerate(gen) if g.topic == t]
        for j in range(per_topic):
            candidates = idx[j * k:(j + 1) * k]
            chosen.append(gen[min(candidates, key=lambda i: nll[i] if goal is None else abs(nll[i] - goal))])
    return chosen


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--run", required=True, help="a finished `topiceq run` folder (ingest/, topics/, models/)")
    ap.add_argument("--checkpoint", help="default: RUN/models/topic/best.pt")
    ap.add_argument("--plain", help="the guidance's unconditioned model (default: RUN/models/plain/best.pt)")
    ap.add_argument("--variant", action="append", help="see above (default: base); list base first to get each "
                                                       "row's difference to it")
    ap.add_argument("--gen-seeds", default="0,1,2,3")
    ap.add_argument("--per-topic", type=int, default=10, help="equations per topic (the cpu preset's 500 / 50)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3, help="detector matchings averaged per set (as the flow)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    run = Path(args.run)
    data, table = run / "ingest", ThetaTable(run / "topics")
    lm = load_model(args.checkpoint or run / "models" / "topic" / "best.pt", device="cpu")
    variants = args.variant or ["base"]
    plain = None
    if any(v.startswith("guided") for v in variants):
        plain = load_model(args.plain or run / "models" / "plain" / "best.pt", device="cpu")
        if plain.tokenizer.tokens != lm.tokenizer.tokens:
            raise SystemExit("guidance needs two models of one vocabulary")
    setup = Setup.read(lm, table, data)
    test = setup.split("test")
    rows = []
    for variant in variants:
        per_seed = []
        t0 = time.perf_counter()
        for seed in [int(s) for s in args.gen_seeds.split(",")]:
            gen = generate(variant, lm, plain, setup, int(table.k), args.per_topic, seed, args.temperature)
            judge = dict(seed=0, config=DetectorConfig(seed=0, repeats=args.repeats),
                         fake_topics=[g.topic for g in gen], real_topics=[r["topic"] for r in test])
            fakes, reals = [g.equation for g in gen], [r["equation"] for r in test]
            result = detect(fakes, reals, real_groups=paper_groups(test), **judge)
            any_fold = detect(fakes, reals, features=("char",), **judge)["char"]
            per_seed.append((result["char"].accuracy, result["tokens"].accuracy, result["char"].n_fake,
                             float(np.mean([len(g.equation) for g in gen])), any_fold.accuracy))
        chars = [p[0] for p in per_seed]
        rows.append({"variant": variant, "char": statistics.mean(chars),
                     "char_se": statistics.stdev(chars) / len(chars) ** 0.5 if len(chars) > 1 else 0.0,
                     "char_per_seed": chars, "tokens": statistics.mean(p[1] for p in per_seed),
                     "char_any_fold": statistics.mean(p[4] for p in per_seed),
                     "pairs": per_seed[0][2], "mean_length": statistics.mean(p[3] for p in per_seed),
                     "seconds": time.perf_counter() - t0})
        if variant.startswith("mix:"):  # what the interpolation does to the likelihood of real equations
            rows[-1]["validation_bits_per_char"] = {
                "model": setup.validation_bits_per_char(lm),
                "interpolated": setup.validation_bits_per_char(interpolated(lm, setup, variant.split(":")[1:]))}
        base = next((r for r in rows if r["variant"] == "base"), None)
        if base is not None:  # the baseline measured in this run: each row's difference to it
            rows[-1]["char_minus_base"] = rows[-1]["char"] - base["char"]
        if not args.json:
            r = rows[-1]
            versus = f"  vs base {r['char_minus_base']:+.3f}" if "char_minus_base" in r and r is not base else ""
            print(f"{variant:16} char {r['char']:.3f} ± {r['char_se']:.3f} (s.e. over {len(chars)} seeds: "
                  f"{', '.join(f'{c:.3f}' for c in chars)}){versus}  any fold {r['char_any_fold']:.3f}  tokens {r['tokens']:.3f}  pairs {r['pairs']}  "
                  f"length {r['mean_length']:.0f}  {r['seconds']:.0f} s", flush=True)
            if "validation_bits_per_char" in r:
                print(f"{'':16} validation bits/char: model {r['validation_bits_per_char']['model']:.4f}, "
                      f"interpolated {r['validation_bits_per_char']['interpolated']:.4f}", flush=True)
    if args.json:
        print(json.dumps({"checkpoint": str(lm.path), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
