"""Corpus stage: LaTeX sources -> `DIR/equations.jsonl` (one display equation per line) + `DIR/report.json`.

`ingest(sources, out_dir, config)` reads files/folders/archives (see `pipeline.sources`), processes papers
in worker processes (`config.workers`) and streams raw records in a deterministic order; a finishing pass
then gives every paper the split of its identity, reads the same paper once and keeps val/test equations
that a train paper holds out of val/test (`pipeline.splits`). Nothing is written outside `out_dir`.
`read_records(dir)` reads the records back; `report.json` accounts for every input (`pipeline.ingest_report`).

Sharding (scale-out over machines): `IngestConfig(shard_index=i, shard_count=n)` processes only the papers at
positions p of the job list with p % n == i (every shard walks the same sorted job list) and writes its raw
records and `DIR/papers.jsonl` (one line per paper: its position, record count, identity keys, equation keys
and report entries); `merge_shards(dirs, out_dir)` interleaves n such shard folders and runs the finishing
pass, giving exactly the `equations.jsonl` and report counts of an unsharded run.
"""
from __future__ import annotations

import functools
import heapq
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

from pipeline.arxiv_meta import expand_download_folders
from pipeline.latex_clean import RawDisplay, find_displays, normalise_display, remove_verbatim
from pipeline.latex_prose import (WORD_RE, ContextExtractor, context_pairs, prose_macros, prose_mask,
                                  segments_between, strip_non_words)
from pipeline.latex_macros import ExpandConfig, MacroLimitError, MacroTable, collect_macros, expand_macros
from pipeline.package_macros import (conventional_macro, known_commands, package_macros, structure_problem,
                                     undefined_commands)
from pipeline.paper_files import flatten_paper
from pipeline.ingest_report import InputLedger, ReportTally
from pipeline.sources import IngestLimits, PaperJob, iter_jobs
from pipeline.splits import SplitPlan, equation_key, paper_keys, split_for

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
    keys: list[str] = field(default_factory=list)            # paper identity keys (pipeline.splits)


_CONTEXT: ContextExtractor | None = None


def _context() -> ContextExtractor:
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = ContextExtractor()
    return _CONTEXT


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
        res.keys = paper_keys(job.arxiv_id, "", job.paper)
        return res
    table, raw_displays, segments, words_of = pieces
    res.displays_found = len(raw_displays)
    macros = dict(package_macros())
    macros.update(table.macros)
    exp_cfg = ExpandConfig(max_expansions=config.max_expansions, max_length=max(20000, config.max_equation_chars * 20))
    n = config.context_words
    window = max(400, 24 * n)
    contexts = context_pairs(segments, n, window, words_of) if n > 0 else [("", "")] * len(raw_displays)
    seen: set[str] = set()
    for d, (before, after) in zip(raw_displays, contexts):
        offset = d.start
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
            "context_before": before, "context_after": after,
            "split": split_for(res.keys[0]), "identity": res.keys[0], "offset": offset, "index": index,
            **({"arxiv_id": job.arxiv_id} if job.arxiv_id else {}),
            **({"categories": job.categories} if job.categories else {}),
        })
    return res


_ENV_SHORTCUT_RE = re.compile(r"^\s*(?:\\(?:begin|end)\{[a-zA-Z]+\*?\}\s*|\$\$|\\\[|\\\])+\s*$")


def _latex_pieces(job: PaperJob, config: IngestConfig, res: PaperResult):
    doc, style_text, problems = flatten_paper(job.files, job.root, int(config.max_paper_mb * 2**20))
    res.problems.extend(problems)
    res.keys = paper_keys(job.arxiv_id, doc, job.paper)
    table = MacroTable()
    if style_text:
        table, _ = collect_macros(style_text, table)
        table.unsupported.clear()  # class and package internals: their delimited \defs are not the paper's
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
    inline_math: list[tuple[int, int]] = []
    displays, probs = find_displays(doc, table.envs, inline_math)
    for k, v in probs.items():
        res.problems.append(f"{k} ({v}x): rest of that environment skipped")
    start = doc.find("\\begin{document}")
    start = start + len("\\begin{document}") if start != -1 else 0
    segments: list = []
    words_of = None
    if config.context_words > 0:
        prose, barriers = prose_mask(doc, table, inline_math)
        segments = segments_between(prose, [(d.start, d.end) for d in displays], start, barriers)
        macros = prose_macros(table, known_commands())
        words_of = functools.partial(_context().words, macros=macros)
    return table, displays, segments, words_of


_FORMULA_RE = re.compile(r"\{\{formula:([^{}]+)\}\}")
_PLACEHOLDER_RE = re.compile(r"\{\{(?:cite|formula|figure|table|footnote):[^{}]*\}\}|\bREF\b")


def _plain_words(text: str) -> list[str]:
    return WORD_RE.findall(strip_non_words(_PLACEHOLDER_RE.sub(" ", text)))


def _unarxive_pieces(job: PaperJob, res: PaperResult):
    """unarXive: formulas alone on their line (`\\n{{formula:ID}} \\n`) are display math."""
    obj = json.loads(job.payload)
    refs = obj.get("ref_entries") or {}
    paragraphs = [p for p in obj.get("body_text") or [] if isinstance(p, dict)]
    text = "\n".join(str(p.get("text", "")) for p in paragraphs)
    res.keys = paper_keys(job.arxiv_id, text, job.paper)
    barriers = []  # a new section starts a new context
    offset = 0
    for k, p in enumerate(paragraphs):
        if k and p.get("section") != paragraphs[k - 1].get("section"):
            barriers.append(offset)
        offset += len(str(p.get("text", ""))) + 1
    displays: list[RawDisplay] = []
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
    segments = segments_between(text, [(d.start, d.end) for d in displays], 0, barriers)
    return MacroTable(), displays, segments, _plain_words


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
        res = PaperResult(job.paper, job.area, job.source, keys=paper_keys(job.arxiv_id, "", job.paper))
        res.problems.append(f"internal error, paper skipped: {type(exc).__name__}: {exc}")
        return res


def paper_entry(res: PaperResult, position: int) -> dict:
    """What the finishing pass needs of one paper besides its records (full counters: shards are merged)."""
    return {"position": position, "paper": res.paper, "area": res.area, "source": res.source,
            "records": len(res.records), "displays_found": res.displays_found, "dropped": dict(res.dropped),
            "undefined": dict(res.undefined), "guessed": dict(res.guessed), "problems": list(res.problems),
            "keys": res.keys, "equations": [equation_key(r["equation"]) for r in res.records]}


def _no_input_error(skipped: list[dict], report_file: Path) -> RuntimeError:
    return RuntimeError("no input could be read: " + (
        "; ".join(f"{s['input']}: {s['reason']}" for s in skipped[:5]) or "no LaTeX, archive or JSONL found")
        + f" (details in {report_file})")


def _jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


_HELD_OUT_REPEAT = "also in a train paper (kept out of val/test)"
_READ_ONCE = "same paper as an earlier input (read once)"


def _finish(out: Path, raw_records: Path, entries: Path, report_args: dict) -> dict:
    """The finishing pass over a whole run's raw records and paper entries (walk order): one split per paper
    identity, each paper read once, val/test equations that a train paper holds left out; writes
    `out/equations.jsonl` and returns the report (the caller writes it)."""
    plan = SplitPlan.from_entries(lambda: _jsonl(entries))
    tally = ReportTally()
    tmp = out / (EQUATIONS_FILE + ".tmp")
    with open(raw_records, encoding="utf-8") as rf, open(tmp, "w", encoding="utf-8") as fh:
        for entry in _jsonl(entries):
            lines = [rf.readline() for _ in range(entry["records"])]
            if any(not line.endswith("\n") for line in lines):
                raise ValueError(f"{raw_records} has fewer records than {entries} lists: re-run the ingest")
            decision = plan.decisions[entry["paper"]]
            if decision.same_as is not None:
                tally.dropped[_READ_ONCE] += len(lines)
                tally.add(entry, [], same_as=decision.same_as)
                continue
            kept = []
            for line, eq in zip(lines, entry["equations"]):
                if plan.in_other_paper(eq):
                    tally.cross_paper_records += 1
                if plan.held_out_repeat(eq, decision.split):
                    tally.dropped[_HELD_OUT_REPEAT] += 1
                    continue
                record = json.loads(line)
                record["split"] = decision.split
                record["identity"] = decision.identity
                kept.append(record)
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            tally.add(entry, kept)
        if rf.read(1):
            raise ValueError(f"{raw_records} has more records than {entries} lists: re-run the ingest")
    os.replace(tmp, out / EQUATIONS_FILE)
    identities = len({d.identity for d in plan.decisions.values() if d.same_as is None})
    return tally.report(identities=identities, **report_args)


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
    ledger = InputLedger(cfg.max_skipped_listed)
    workers = cfg.workers or (os.cpu_count() or 1)
    jobs_seen = 0
    # a `topiceq download` folder is read as its papers, each with its arXiv categories and id
    read_sources, downloaded = expand_download_folders(sources)
    # Raw records and paper entries in walk order; the finishing pass (here, or merge_shards for shards)
    # decides splits and duplicates over the whole run.
    raw_path = out / (EQUATIONS_FILE + ".part")
    entries_path = out / (SHARD_PAPERS_FILE + ".part")
    shard_tally = ReportTally()
    bar = None
    if cfg.progress:
        from tqdm import tqdm
        desc = f"ingest {cfg.shard_index + 1}/{cfg.shard_count}" if sharded else "ingest"
        bar = tqdm(desc=desc, unit=" papers", file=sys.stderr, dynamic_ncols=True)
    n_records = 0

    def consume(res: PaperResult, position: int, fh, papers_fh) -> None:
        nonlocal n_records
        entry = paper_entry(res, position)
        for r in res.records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        papers_fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        if sharded:
            shard_tally.add(entry, res.records)
        n_records += len(res.records)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(equations=n_records, refresh=False)

    def my_jobs() -> Iterator[tuple[int, PaperJob]]:
        # Every shard walks the whole (sorted, deterministic) job list and keeps every shard_count-th job.
        nonlocal jobs_seen
        for position, job in enumerate(iter_jobs(read_sources, limits, ledger.skip, ledger.account)):
            downloaded.apply(job)
            jobs_seen += 1
            if not sharded or position % cfg.shard_count == cfg.shard_index:
                yield position, job

    with open(raw_path, "w", encoding="utf-8") as fh, open(entries_path, "w", encoding="utf-8") as papers_fh:
        if workers <= 1:
            for position, job in my_jobs():
                consume(_run_job((job, cfg)), position, fh, papers_fh)
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
                        consume(fut.get(), pos, fh, papers_fh)
                        inflight_bytes -= sz
                while inflight:
                    fut, sz, pos = inflight.popleft()
                    consume(fut.get(), pos, fh, papers_fh)
    if bar is not None:
        bar.close()
    report_args = dict(sources=sources, out=out, config=asdict(cfg), ledger=ledger.as_report(), workers=workers)
    if sharded:
        os.replace(raw_path, out / EQUATIONS_FILE)
        os.replace(entries_path, out / SHARD_PAPERS_FILE)
        report = shard_tally.report(seconds=time.perf_counter() - t0, **report_args)
        report["shard"] = {"index": cfg.shard_index, "count": cfg.shard_count, "jobs_seen": jobs_seen}
    else:
        report = _finish(out, raw_path, entries_path, dict(report_args, seconds=time.perf_counter() - t0))
        report["seconds"] = round(time.perf_counter() - t0, 3)
        raw_path.unlink()
        entries_path.unlink()
    with open(out / REPORT_FILE, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1, ensure_ascii=False)
    if jobs_seen == 0:
        raise _no_input_error(ledger.skipped, out / REPORT_FILE)
    return report


def merge_shards(shard_dirs: list[str | os.PathLike], out_dir: str | os.PathLike) -> dict:
    """Merge the folders of shards 0..n-1 of one corpus (written by `ingest` with `shard_index`/`shard_count`,
    any order) into `out_dir/equations.jsonl` + `out_dir/report.json`, byte for byte the equations and the
    counts that an unsharded `ingest` of the same sources and config writes (a shard's own equations.jsonl
    is raw: splits and duplicates across papers are decided here, over all shards).

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
                rep["shard"]["jobs_seen"], rep["skipped_by_reason"], rep["inputs"])

    for d, rep in shards[1:]:
        if settings(rep) != settings(first):
            raise ValueError(f"shard {d} was made from other sources or settings than {shards[0][0]}: "
                             "re-run every shard with the same sources and config")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw_path = out / (EQUATIONS_FILE + ".part")
    entries_path = out / (SHARD_PAPERS_FILE + ".part")
    paper_files = [open(d / SHARD_PAPERS_FILE, encoding="utf-8") for d, _ in shards]
    record_files = [open(d / EQUATIONS_FILE, encoding="utf-8") for d, _ in shards]
    try:
        def entries(i: int) -> Iterator[tuple[int, int, str]]:
            for line in paper_files[i]:
                if line.strip():
                    yield json.loads(line)["position"], i, line

        with open(raw_path, "w", encoding="utf-8") as fh, open(entries_path, "w", encoding="utf-8") as pf:
            # Papers back in walk order; each shard's records are in its own walk order, so the next
            # `records` lines of the paper's shard are that paper's records.
            for _position, i, line in heapq.merge(*(entries(i) for i in range(len(shards)))):
                n = json.loads(line)["records"]
                lines = [record_files[i].readline() for _ in range(n)]
                if any(not rec.endswith("\n") for rec in lines):
                    raise ValueError(f"{shards[i][0] / EQUATIONS_FILE} has fewer records than its "
                                     f"{SHARD_PAPERS_FILE} lists: re-run that shard")
                fh.writelines(lines)
                pf.write(line if line.endswith("\n") else line + "\n")
        for i, f in enumerate(record_files):
            if f.read(1):
                raise ValueError(f"{shards[i][0] / EQUATIONS_FILE} has more records than its "
                                 f"{SHARD_PAPERS_FILE} lists: re-run that shard")
    finally:
        for f in paper_files + record_files:
            f.close()
    ledger = {k: first[k] for k in ("skipped_count", "skipped_by_reason", "skipped", "inputs")}
    report = _finish(out, raw_path, entries_path, dict(
        sources=first["sources"], out=out, config=dict(first["config"], shard_index=None), ledger=ledger,
        seconds=sum(rep["seconds"] for _, rep in shards) + time.perf_counter() - t0,
        workers=sum(rep["workers"] for _, rep in shards)))
    raw_path.unlink()
    entries_path.unlink()
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
