"""Corpus stage: LaTeX sources -> `DIR/equations.jsonl` (one display equation per line) + `DIR/report.json`.

`ingest(sources, out_dir, config)` reads files/folders/archives (see `pipeline.sources`), processes papers
in worker processes (`config.workers`), and streams records to `equations.jsonl` in a deterministic order.
Nothing is written outside `out_dir`. `read_records(dir)` reads the records back.

Sharding (scale-out over machines): `IngestConfig(shard_index=i, shard_count=n)` processes only the papers at
positions p of the job list with p % n == i (every shard walks the same sorted job list) and also writes
`DIR/papers.jsonl` (one line per paper: its position, record count and report entries); `merge_shards(dirs,
out_dir)` interleaves n such shard folders back into exactly the `equations.jsonl` and report counts of an
unsharded run.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import logging

from pipeline.latex_clean import (ContextExtractor, RawDisplay, find_displays, normalise_display,
                                  remove_verbatim, _WORD_RE)
from pipeline.latex_macros import ExpandConfig, MacroLimitError, MacroTable, collect_macros, expand_macros
from pipeline.package_macros import conventional_macro, package_macros, structure_problem, undefined_commands
from pipeline.sources import IngestLimits, PaperJob, flatten_paper, iter_jobs

logging.getLogger("pylatexenc").setLevel(logging.ERROR)  # its warnings are about our windows

EQUATIONS_FILE = "equations.jsonl"
REPORT_FILE = "report.json"
SHARD_PAPERS_FILE = "papers.jsonl"      # in a shard's folder only: what merge_shards needs per paper


@dataclass
class IngestConfig:
    context_words: int = 50              # words kept before and after each equation
    workers: int = 0                     # worker processes; 0 = one per CPU, 1 = in this process
    max_paper_mb: float = 50.0           # LaTeX bytes per paper / archive member
    max_archive_mb: float = 256.0        # decompressed bytes streamed through one archive
    max_equation_chars: int = 1000       # longer equations are dropped (tables/proofs mistaken for math)
    max_expansions: int = 2000           # macro expansions per equation before it is dropped as recursive
    drop_undefined: bool = True          # drop equations that surely fail the compile rule (unknown commands,
                                         # unbalanced braces or \left/\right)
    guess_conventional: bool = True      # \bbH -> \mathbb{H}, \cA -> \mathcal{A} when nothing defines them
    progress: bool = True                # tqdm bar on stderr
    max_skipped_listed: int = 2000       # report.json lists this many skipped inputs (all are counted)
    shard_index: int | None = None       # None: every paper; i: only papers at job positions p % shard_count == i
    shard_count: int = 1                 # number of shards the job list is dealt into (see merge_shards)


def split_for(paper: str) -> str:
    """80/10/10 train/val/test, deterministic from the paper id."""
    bucket = int.from_bytes(hashlib.sha1(paper.encode("utf-8")).digest()[:8], "big") % 10
    return "train" if bucket < 8 else "val" if bucket == 8 else "test"


# ----------------------------------------------------------------------------------------------- one paper

@dataclass
class PaperResult:
    paper: str
    area: str
    source: str
    records: list[dict] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    undefined: Counter = field(default_factory=Counter)     # command -> equations dropped for it
    guessed: Counter = field(default_factory=Counter)       # undefined command -> equations given a guess
    problems: list[str] = field(default_factory=list)
    displays_found: int = 0


_CONTEXT: ContextExtractor | None = None


def _context() -> ContextExtractor:
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = ContextExtractor()
    return _CONTEXT


class _Segments:
    """Words of the prose between displays, converted lazily and only near its ends (bounded work)."""

    def __init__(self, texts: list[str], window: int, words_of) -> None:
        self.texts = texts
        self.window = window
        self.words_of = words_of
        self._head: dict[int, list[str]] = {}
        self._tail: dict[int, list[str]] = {}

    def _full_if_short(self, k: int) -> list[str] | None:
        t = self.texts[k]
        if len(t) <= 2 * self.window:
            if k not in self._head:
                w = self.words_of(t) if t.strip() else []
                self._head[k] = self._tail[k] = w
            return self._head[k]
        return None

    def head(self, k: int) -> list[str]:
        full = self._full_if_short(k)
        if full is not None:
            return full
        if k not in self._head:
            self._head[k] = self.words_of(self.texts[k][: self.window])[:-1]  # last word may be cut
        return self._head[k]

    def tail(self, k: int) -> list[str]:
        full = self._full_if_short(k)
        if full is not None:
            return full
        if k not in self._tail:
            self._tail[k] = self.words_of(self.texts[k][-self.window:])[1:]
        return self._tail[k]


def _context_pairs(seg: _Segments, n: int, count: int) -> list[tuple[str, str]]:
    """(before, after) words for display i, i in range(count); segment i is before display i."""
    out = []
    for i in range(count):
        before: list[str] = []
        k = i
        while k >= 0 and len(before) < n and i - k < 20:
            before = seg.tail(k) + before
            k -= 1
        after: list[str] = []
        k = i + 1
        while k < len(seg.texts) and len(after) < n and k - i < 21:
            after = after + seg.head(k)
            k += 1
        out.append((" ".join(before[-n:]), " ".join(after[:n])))
    return out


def process_job(job: PaperJob, config: IngestConfig) -> PaperResult:
    """Everything for one paper: flatten, collect macros, find displays, expand, normalise, contexts."""
    res = PaperResult(job.paper, job.area, job.source, problems=list(job.problems))
    try:
        if job.kind == "unarxive":
            pieces = _unarxive_pieces(job, res)
        else:
            pieces = _latex_pieces(job, config, res)
    except RecursionError:
        res.problems.append("nesting too deep: paper not read")
        return res
    table, raw_displays, segments, offsets = pieces
    res.displays_found = len(raw_displays)
    macros = dict(package_macros())
    macros.update(table.macros)
    exp_cfg = ExpandConfig(max_expansions=config.max_expansions, max_length=max(20000, config.max_equation_chars * 20))
    n = config.context_words
    window = max(400, 24 * n)
    seg = _Segments(segments, window, _context().words if job.kind != "unarxive" else _plain_words)
    contexts = _context_pairs(seg, n, len(raw_displays)) if n > 0 else [("", "")] * len(raw_displays)
    seen: set[str] = set()
    for d, offset, (before, after) in zip(raw_displays, offsets, contexts):
        try:
            expanded_body = expand_macros(d.body, macros, exp_cfg)
        except MacroLimitError:
            res.dropped["macro expansion limit (recursive or exploding macro)"] += 1
            continue
        eq = normalise_display(RawDisplay(d.env, expanded_body, d.start, d.end, d.arg))
        if not eq:
            res.dropped["empty after normalisation"] += 1
            continue
        if len(eq) > config.max_equation_chars:
            res.dropped[f"longer than {config.max_equation_chars} characters"] += 1
            continue
        unknown = undefined_commands(eq)
        guesses = {u[1:]: conventional_macro(u[1:]) for u in unknown if u.startswith("\\")}
        guesses = {k: v for k, v in guesses.items() if v is not None}
        if guesses and config.guess_conventional:
            eq = normalise_display(RawDisplay(d.env, expand_macros(expanded_body, guesses, exp_cfg), d.start, d.end,
                                              d.arg))
            for g in guesses:
                res.guessed["\\" + g] += 1
            unknown = undefined_commands(eq)
        problem = structure_problem(eq) if config.drop_undefined else None
        if problem:
            res.dropped[problem] += 1
            continue
        if config.drop_undefined:
            if unknown:
                res.dropped["uses a command the compile rule's preamble does not define"] += 1
                for u in unknown:
                    res.undefined[u] += 1
                continue
        if eq in seen:
            res.dropped["duplicate within the paper"] += 1
            continue
        seen.add(eq)
        index = len(res.records)
        res.records.append({
            "id": f"{job.paper}#{index}", "paper": job.paper, "area": job.area, "source": job.source,
            "env": getattr(d, "shown", d.env), "equation": eq, "context": (before + " " + after).strip(),
            "context_before": before, "context_after": after, "split": split_for(job.paper),
            "offset": offset, "index": index,
            **({"arxiv_id": job.arxiv_id} if job.arxiv_id else {}),
            **({"categories": job.categories} if job.categories else {}),
        })
    return res


_ENV_SHORTCUT_RE = re.compile(r"^\s*(?:\\(?:begin|end)\{[a-zA-Z]+\*?\}\s*|\$\$|\\\[|\\\])+\s*$")


def _latex_pieces(job: PaperJob, config: IngestConfig, res: PaperResult):
    doc, sty_text, problems = flatten_paper(job, int(config.max_paper_mb * 2**20))
    res.problems.extend(problems)
    table = MacroTable()
    if sty_text:
        table, _ = collect_macros(sty_text, table)
    table, doc = collect_macros(doc, table)
    for k, v in table.unsupported.items():
        res.problems.append(f"{k}: {v} (not expanded)")
    # \be/\ee-style shortcuts for display environments must act on the document before displays are found
    shortcuts = {name: m for name, m in table.macros.items()
                 if m.nargs == 0 and _ENV_SHORTCUT_RE.match(m.body) and name.isalpha()}
    if shortcuts:
        doc = re.sub(r"\\(" + "|".join(sorted(map(re.escape, shortcuts), key=len, reverse=True)) + r")(?![a-zA-Z@])",
                     lambda m: shortcuts[m.group(1)].body, doc)
    doc = remove_verbatim(doc)
    displays, probs = find_displays(doc, table.envs)
    for k, v in probs.items():
        res.problems.append(f"{k} ({v}x): rest of that environment skipped")
    start = doc.find("\\begin{document}")
    start = start + len("\\begin{document}") if start != -1 else 0
    segments = []
    prev = start
    for d in displays:
        segments.append(doc[prev:d.start] if d.start >= prev else "")
        prev = max(prev, d.end)
    segments.append(doc[prev:])
    return table, displays, segments, [d.start for d in displays]


_FORMULA_RE = re.compile(r"\{\{formula:([^{}]+)\}\}")
_PLACEHOLDER_RE = re.compile(r"\{\{(?:cite|formula|figure|table|footnote):[^{}]*\}\}|\bREF\b")


def _plain_words(text: str) -> list[str]:
    return _WORD_RE.findall(_PLACEHOLDER_RE.sub(" ", text))


def _unarxive_pieces(job: PaperJob, res: PaperResult):
    """unarXive: formulas alone on their line (`\\n{{formula:ID}} \\n`) are display math."""
    obj = json.loads(job.payload)
    refs = obj.get("ref_entries") or {}
    text = "\n".join(str(p.get("text", "")) for p in obj.get("body_text") or [] if isinstance(p, dict))
    displays: list[RawDisplay] = []
    segments: list[str] = []
    prev = 0
    for m in _FORMULA_RE.finditer(text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        line_end = text.find("\n", m.end())
        line_end = len(text) if line_end == -1 else line_end
        if text[line_start:m.start()].strip() or text[m.end():line_end].strip():
            continue  # inline formula
        entry = refs.get(m.group(1))
        if not isinstance(entry, dict) or entry.get("type") != "formula" or not entry.get("latex"):
            res.dropped["unarXive formula reference without LaTeX"] += 1
            continue
        latex = str(entry["latex"]).replace("{@", "{")
        inner, _ = find_displays(latex)
        if inner:  # unarXive keeps some environments, e.g. `\\begin{@align*}{1}{-1} ... \\end{@align*}`
            d = inner[0]
            body = re.sub(r"^\s*\{\d+\}\{-?\d+\}", "", d.body) if d.env.startswith("align") else d.body
            displays.append(UnarxiveDisplay(d.env, body, m.start(), m.end(), d.arg, shown="unarxive:" + d.env))
        else:
            displays.append(UnarxiveDisplay("equation", latex, m.start(), m.end(), shown="unarxive"))
        segments.append(text[prev:m.start()])
        prev = m.end()
    segments.append(text[prev:])
    return MacroTable(), displays, segments, [d.start for d in displays]


@dataclass
class UnarxiveDisplay(RawDisplay):
    shown: str = "unarxive"   # the `env` written to the record


# ----------------------------------------------------------------------------------------------- the run

def _worker_init() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _run_job(args: tuple[PaperJob, IngestConfig]) -> PaperResult:
    job, config = args
    try:
        return process_job(job, config)
    except Exception as exc:  # one broken paper never stops the run; it is reported
        res = PaperResult(job.paper, job.area, job.source)
        res.problems.append(f"internal error, paper skipped: {type(exc).__name__}: {exc}")
        return res


class _Tally:
    """The counts and capped lists of a report, fed one paper at a time in job order (by `ingest` directly,
    by `merge_shards` from the shards' `papers.jsonl`), so that both make the same report."""

    def __init__(self) -> None:
        self.per_area: Counter = Counter()
        self.papers_per_area: Counter = Counter()
        self.per_env: Counter = Counter()
        self.per_split: Counter = Counter()
        self.dropped: Counter = Counter()
        self.undefined: Counter = Counter()
        self.guessed: Counter = Counter()
        self.partly: list[dict] = []
        self.partly_count = 0
        self.papers_read = 0
        self.papers_with_eq = 0
        self.papers_without: list[str] = []
        self.n_records = 0
        self.displays_found = 0

    def add(self, paper: dict, records: list[dict]) -> None:
        """`paper`: the entry of `paper_entry`; `records`: the paper's records."""
        self.papers_read += 1
        self.papers_per_area[paper["area"]] += 1
        self.displays_found += paper["displays_found"]
        self.dropped.update(paper["dropped"])
        self.undefined.update(paper["undefined"])
        self.guessed.update(paper["guessed"])
        if paper["problems"]:
            self.partly_count += 1
            if len(self.partly) < 1000:  # lists in the report are capped; counts are not
                self.partly.append({"paper": paper["paper"], "source": paper["source"],
                                    "problems": paper["problems"][:20]})
        if records:
            self.papers_with_eq += 1
        elif len(self.papers_without) < 1000:
            self.papers_without.append(paper["paper"])
        for r in records:
            self.per_area[r["area"]] += 1
            self.per_env[r["env"]] += 1
            self.per_split[r["split"]] += 1
        self.n_records += len(records)

    def report(self, sources: list, out: Path, config: dict, skipped_count: int, skipped_by_reason: dict,
               skipped: list[dict], seconds: float, workers: int) -> dict:
        return {
            "sources": [str(s) for s in sources],
            "out": str(out),
            "config": config,
            "papers_read": self.papers_read,
            "papers_with_equations": self.papers_with_eq,
            "papers_without_equations": self.papers_without,
            "displays_found": self.displays_found,
            "equations": self.n_records,
            "equations_per_area": dict(sorted(self.per_area.items())),
            "papers_per_area": dict(sorted(self.papers_per_area.items())),
            "equations_per_env": dict(self.per_env.most_common()),
            "equations_per_split": dict(sorted(self.per_split.items())),
            "dropped": dict(self.dropped.most_common()),
            "undefined_commands": dict(self.undefined.most_common(100)),
            "guessed_commands": dict(self.guessed.most_common(100)),
            "skipped_count": skipped_count,
            "skipped_by_reason": skipped_by_reason,
            "skipped": skipped,
            "partly_read": self.partly[:1000],
            "partly_read_count": self.partly_count,
            "seconds": round(seconds, 3),
            "workers": workers,
        }


def paper_entry(res: PaperResult, position: int) -> dict:
    """What the report needs of one paper besides its records (full counters: a shard's are merged)."""
    return {"position": position, "paper": res.paper, "area": res.area, "source": res.source,
            "records": len(res.records), "displays_found": res.displays_found, "dropped": dict(res.dropped),
            "undefined": dict(res.undefined), "guessed": dict(res.guessed), "problems": list(res.problems)}


def _no_input_error(skipped: list[dict], report_file: Path) -> RuntimeError:
    return RuntimeError("no input could be read: " + (
        "; ".join(f"{s['input']}: {s['reason']}" for s in skipped[:5]) or "no LaTeX, archive or JSONL found")
        + f" (details in {report_file})")


def ingest(sources: list[str | os.PathLike], out_dir: str | os.PathLike, config: IngestConfig | None = None
           ) -> dict:
    """Ingest `sources` into `out_dir`; returns the report (also written to `out_dir/report.json`).

    With `config.shard_index` set, only that shard's papers (see the module docstring); the report then has a
    "shard" entry and `out_dir/papers.jsonl` is written for `merge_shards`.
    Raises RuntimeError when no input at all could be read (by any shard)."""
    cfg = config or IngestConfig()
    sharded = cfg.shard_index is not None
    if cfg.shard_count < 1 or (sharded and not 0 <= cfg.shard_index < cfg.shard_count):
        raise ValueError(f"shard_index {cfg.shard_index} of shard_count {cfg.shard_count}: "
                         "give 0 <= shard_index < shard_count")
    if not sharded and cfg.shard_count != 1:
        raise ValueError(f"shard_count {cfg.shard_count} without a shard_index: give both, or neither")
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    limits = IngestLimits(max_paper_bytes=int(cfg.max_paper_mb * 2**20),
                          max_archive_bytes=int(cfg.max_archive_mb * 2**20))
    skipped: list[dict] = []
    skipped_by_reason: Counter = Counter()

    def skip(label: str, reason: str) -> None:
        key = re.sub(r"'[^']*'|\d+", "N", reason)
        skipped_by_reason[key] += 1
        if len(skipped) < cfg.max_skipped_listed:
            skipped.append({"input": label, "reason": reason})

    workers = cfg.workers or (os.cpu_count() or 1)
    tally = _Tally()
    jobs_seen = 0
    tmp_path = out / (EQUATIONS_FILE + ".part")
    papers_fh = open(out / (SHARD_PAPERS_FILE + ".part"), "w", encoding="utf-8") if sharded else None
    bar = None
    if cfg.progress:
        from tqdm import tqdm
        desc = f"ingest {cfg.shard_index + 1}/{cfg.shard_count}" if sharded else "ingest"
        bar = tqdm(desc=desc, unit=" papers", file=sys.stderr, dynamic_ncols=True)

    def consume(res: PaperResult, position: int, fh) -> None:
        entry = paper_entry(res, position)
        tally.add(entry, res.records)
        for r in res.records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        if papers_fh is not None:
            papers_fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(equations=tally.n_records, refresh=False)

    def my_jobs() -> Iterator[tuple[int, PaperJob]]:
        # Every shard walks the whole (sorted, deterministic) job list and keeps every shard_count-th job.
        nonlocal jobs_seen
        for position, job in enumerate(iter_jobs([str(s) for s in sources], limits, skip)):
            jobs_seen += 1
            if not sharded or position % cfg.shard_count == cfg.shard_index:
                yield position, job

    try:
        with open(tmp_path, "w", encoding="utf-8") as fh:
            if workers <= 1:
                for position, job in my_jobs():
                    consume(_run_job((job, cfg)), position, fh)
            else:
                import multiprocessing as mp

                ctx = mp.get_context("spawn")
                max_inflight = workers * 6
                max_bytes = 256 * 2**20
                with ctx.Pool(workers, initializer=_worker_init) as pool:
                    inflight: deque = deque()
                    inflight_bytes = 0
                    for position, job in my_jobs():
                        size = job.size()
                        inflight.append((pool.apply_async(_run_job, ((job, cfg),)), size, position))
                        inflight_bytes += size
                        while inflight and (len(inflight) >= max_inflight or inflight_bytes > max_bytes):
                            fut, sz, pos = inflight.popleft()
                            consume(fut.get(), pos, fh)
                            inflight_bytes -= sz
                    while inflight:
                        fut, sz, pos = inflight.popleft()
                        consume(fut.get(), pos, fh)
    finally:
        if papers_fh is not None:
            papers_fh.close()
    if bar is not None:
        bar.close()
    os.replace(tmp_path, out / EQUATIONS_FILE)
    if papers_fh is not None:
        os.replace(out / (SHARD_PAPERS_FILE + ".part"), out / SHARD_PAPERS_FILE)
    report = tally.report(sources, out, asdict(cfg), sum(skipped_by_reason.values()),
                          dict(skipped_by_reason.most_common()), skipped, time.perf_counter() - t0, workers)
    if sharded:
        report["shard"] = {"index": cfg.shard_index, "count": cfg.shard_count, "jobs_seen": jobs_seen}
    with open(out / REPORT_FILE, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1, ensure_ascii=False)
    if jobs_seen == 0:
        raise _no_input_error(skipped, out / REPORT_FILE)
    return report


def merge_shards(shard_dirs: list[str | os.PathLike], out_dir: str | os.PathLike) -> dict:
    """Merge the folders of shards 0..n-1 of one corpus (written by `ingest` with `shard_index`/`shard_count`,
    any order) into `out_dir/equations.jsonl` + `out_dir/report.json`, byte for byte the equations and the
    counts that an unsharded `ingest` of the same sources and config writes.

    The report's "seconds" is the shards' seconds summed plus the merge's (work done, not wall time),
    "workers" the shards' workers summed; "shards" says how many were merged. Raises ValueError when the
    folders are not one complete set of shards of the same run."""
    t0 = time.perf_counter()
    shards: list[tuple[Path, dict]] = []
    for d in shard_dirs:
        d = Path(d)
        report_file = d / REPORT_FILE
        if not report_file.is_file() or not (d / SHARD_PAPERS_FILE).is_file():
            raise FileNotFoundError(f"{d} is not an ingest shard folder (no {REPORT_FILE} or {SHARD_PAPERS_FILE}): "
                                    "run ingest with IngestConfig(shard_index=..., shard_count=...) into it first")
        rep = json.loads(report_file.read_text(encoding="utf-8"))
        if "shard" not in rep:
            raise ValueError(f"{d} holds an unsharded ingest: nothing to merge")
        shards.append((d, rep))
    if not shards:
        raise ValueError("merge_shards needs at least one shard folder")
    shards.sort(key=lambda dr: dr[1]["shard"]["index"])
    count = shards[0][1]["shard"]["count"]
    first = shards[0][1]
    indices = [rep["shard"]["index"] for _, rep in shards]
    if indices != list(range(count)) or any(rep["shard"]["count"] != count for _, rep in shards):
        raise ValueError(f"shard folders {[str(d) for d, _ in shards]} hold shards {indices} of {count}: "
                         f"give exactly shards 0..{count - 1} of one run")

    def settings(rep: dict) -> tuple:
        return (rep["sources"], {k: v for k, v in rep["config"].items() if k not in ("shard_index", "workers",
                                                                                    "progress")},
                rep["shard"]["jobs_seen"], rep["skipped_by_reason"])

    for d, rep in shards[1:]:
        if settings(rep) != settings(first):
            raise ValueError(f"shard {d} was made from other sources or settings than {shards[0][0]}: "
                             "re-run every shard with the same sources and config")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tally = _Tally()
    tmp_path = out / (EQUATIONS_FILE + ".part")
    paper_files = [open(d / SHARD_PAPERS_FILE, encoding="utf-8") for d, _ in shards]
    record_files = [open(d / EQUATIONS_FILE, encoding="utf-8") for d, _ in shards]
    try:
        def entries(i: int) -> Iterator[tuple[int, int, dict]]:
            for line in paper_files[i]:
                if line.strip():
                    entry = json.loads(line)
                    yield entry["position"], i, entry

        import heapq

        with open(tmp_path, "w", encoding="utf-8") as fh:
            # Papers back in job order; each shard's records are in its own job order, so the next
            # `records` lines of the paper's shard are that paper's records.
            for _position, i, entry in heapq.merge(*(entries(i) for i in range(len(shards)))):
                lines = [record_files[i].readline() for _ in range(entry["records"])]
                if any(not line.endswith("\n") for line in lines):
                    raise ValueError(f"{shards[i][0] / EQUATIONS_FILE} has fewer records than its "
                                     f"{SHARD_PAPERS_FILE} lists: re-run that shard")
                fh.writelines(lines)
                tally.add(entry, [json.loads(line) for line in lines])
        for i, f in enumerate(record_files):
            if f.read(1):
                raise ValueError(f"{shards[i][0] / EQUATIONS_FILE} has more records than its "
                                 f"{SHARD_PAPERS_FILE} lists: re-run that shard")
    finally:
        for f in paper_files + record_files:
            f.close()
    os.replace(tmp_path, out / EQUATIONS_FILE)
    config = dict(first["config"], shard_index=None)
    report = tally.report(first["sources"], out, config, first["skipped_count"], first["skipped_by_reason"],
                          first["skipped"], sum(rep["seconds"] for _, rep in shards) + time.perf_counter() - t0,
                          sum(rep["workers"] for _, rep in shards))
    report["shards"] = count
    with open(out / REPORT_FILE, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1, ensure_ascii=False)
    if first["shard"]["jobs_seen"] == 0:
        raise _no_input_error(first["skipped"], out / REPORT_FILE)
    return report


def read_records(ingest_dir: str | os.PathLike, split: str | None = None) -> Iterator[dict]:
    """The records of `ingest_dir/equations.jsonl`, in file order (only those of `split` when given): the one
    reader of the file `ingest` writes."""
    path = Path(ingest_dir) / EQUATIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `topiceq ingest SOURCE --out {ingest_dir}` first")
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{line_no}: not JSON ({exc}); re-run ingest") from exc
                if split is None or record.get("split") == split:
                    yield record
