"""Answerability signals: can anything hybridops has tell a question its context cannot answer from one it can?

Issue 15's refuses_without_context wants `{"answer": null}` when the retrieved passages lack the answer. The
adapters of the 135M base model almost never refuse, so this measures the signals a system-level refusal could
be built on, per case:
- `p_null`: the model's probability of `null` at the reply's decision token (after `{"answer":`), relative to
  that of a string;
- `pmi`: mean log-probability of the answer's tokens with the passages minus without them (an answer made up
  from the model's priors is about as likely without the context);
- `coverage`: share of the question's content words found in the passages (lexical);
- `cosine`: best MiniLM cosine between the question and a passage sentence;
- `combined`: a logistic regression over P(null), coverage and cosine (PMI costs a second forward pass and
  adds nothing out of fold), fitted on the training examples. A deployed refusal rule needs a threshold chosen
  without the cases it is judged on, so the threshold comes from out-of-fold scores of the training examples
  (5 folds), at two operating points: `oof_80pct` refuses >= 80% of the training refusals, `oof_no_false`
  refuses no answerable training example; every group is judged at both (`rules`).
- `probe`: the same, over the adapter's last hidden state at the decision token (a linear probe: is what the
  model "knows" about answerability richer than what it says?), with the same out-of-fold thresholds.
Groups: the in-domain and out-of-domain suites and, larger, their answerability case sets
(examples/answerability_cases.yaml, examples/transfer/answerability_cases.yaml: 24 answerable and 16 refusal
questions each, mostly near misses, written for this and never trained on); passages retrieved from each
corpus's own index on a private stack. And the shipped training examples (their given passages; the adapter
trained on them, so an optimistic group).
Per signal and group: the ranges for refusal and answerable cases and, at the threshold that refuses >= 80% of
the refusal cases, the share of answerable cases refused with them (issue 15: false refusals <= 5%). A case the
model already answered null counts as refused whatever the signal.

Usage: python bench/answerability.py [--adapter VERSION|base | --adapter-dir FOLDER] [--json] [--rows FILE]
(--adapter-dir: a peft adapter folder, e.g. one a bench trained, merged onto the configured base model;
--rows: also write every case's signals as JSON lines, to try other rules without generating again.)
Prints one JSON object with --json (a table otherwise); progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from pathlib import Path

from transfer import EXAMPLES, SUITES, load_model, progress

from hybridops.tasks.behaviour.checks import content_words
from hybridops.tasks.behaviour.llm import chat_prompt_ids, generate_batch
from hybridops.tasks.behaviour.prompting import build_messages, parse_reply
from hybridops.tasks.behaviour.suite import load_suite, make_retriever
from hybridops.tasks.behaviour.training_data import TrainingRecord, response_text
from hybridops.tasks.core.model_runtime import batch_threads
from hybridops.tasks.core.object_store import landing_zone
from hybridops.tasks.core.settings import Settings, load_settings
from hybridops.tasks.knowledge.landing import land
from hybridops.tasks.knowledge.refresh import run_refresh

REFUSE_SHARE = 0.8  # issue 15's refuses_without_context target
SIGNALS = {"p_null": +1, "pmi": -1, "coverage": -1, "cosine": -1, "combined": +1, "probe": +1}  # +1: high: refuse
RULES = {"combined": (lambda row: _features(row), 1e-3),  # rule -> (its inputs, L2 weight); defined below
         "probe": (lambda row: row["hidden"], 1e-2)}
FEATURES = ("p_null", "coverage", "cosine")
FOLDS = 5
CASE_SETS = {"in_domain": EXAMPLES / "answerability_cases.yaml",  # more cases per corpus, same index
             "out_of_domain": EXAMPLES / "transfer" / "answerability_cases.yaml"}
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--adapter", metavar="VERSION", default=None,
                       help="registry version; 'base' for the bare base model (default: the champion)")
    which.add_argument("--adapter-dir", type=Path, default=None, help="a peft adapter folder to merge and measure")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--rows", type=Path, default=None, help="write every case's signals here (JSON lines)")
    args = parser.parse_args()
    result = run(args.adapter, args.adapter_dir, args.rows)
    print(json.dumps(result) if args.json else table(result))


def run(adapter: str | None, adapter_dir: Path | None, rows_file: Path | None = None) -> dict:
    from hybridops.infra.services import private_stack
    from hybridops.tasks.knowledge.embeddings import load_embedder

    user = load_settings()
    if adapter_dir:
        model, tokenizer, version, warning = (*merged(user, adapter_dir), str(adapter_dir), None)
    else:
        model, tokenizer, version, warning = load_model(user, adapter)
    embedder = load_embedder(user)
    groups = {"training_examples": training_items()}
    with private_stack("hybridops-answerability-", progress, s3_endpoint="", landing=None, store=None) as stack:
        for name, (corpus, suite_file, _golden, namespace) in SUITES.items():
            cfg = stack.model_copy(update={"namespace": namespace, "home": stack.home / namespace,
                                           "landing": None, "store": None})
            retrieve = indexed_retriever(cfg, corpus)
            for group, cases_file in ((name, suite_file), (f"{name}_cases", CASE_SETS[name])):
                groups[group] = [{"question": case.question, "refusal": case.refusal,
                                  "passages": list(retrieve(case.question))} for case in load_suite(cases_file).cases]
    rows = {}
    for name, items in groups.items():
        progress(f"{name}: answering and scoring {len(items)} cases")
        rows[name] = score(user, model, tokenizer, embedder, items)
    thresholds = {}
    for rule, (inputs, l2) in RULES.items():
        rule_score, weights = fit_logistic(rows["training_examples"], inputs, l2)
        if rule == "combined":
            combined_weights = dict(zip(FEATURES, weights[:-1])) | {"bias": weights[-1]}
        for group in rows.values():
            for row in group:
                row[rule] = rule_score(row)
        thresholds[rule] = out_of_fold_thresholds(rows["training_examples"], rule)
    if rows_file:
        rows_file.write_text("".join(json.dumps({"group": name} | _without(row, "hidden")) + "\n"
                                     for name, group in rows.items() for row in group))
    result = {"adapter": version, "adapter_warning": warning, "combined_weights": combined_weights,
              "thresholds": {rule: {k: round(v, 3) for k, v in t.items()} for rule, t in thresholds.items()},
              "groups": {}}
    for name, group in rows.items():
        result["groups"][name] = {"cases": len(group), "refusal_cases": sum(r["refusal"] for r in group),
                                  "model_refused": _model_refused(group),
                                  "signals": {s: separation(group, s) for s in SIGNALS},
                                  "rules": {rule: {point: refused_at(group, rule, threshold)
                                                   for point, threshold in t.items()}
                                            for rule, t in thresholds.items()}}
    return result


def merged(settings: Settings, folder: Path):
    """(model, tokenizer): the base model with the adapter folder merged in, as the registry path merges one."""
    from hybridops.tasks.behaviour.adapter_loading import merge_adapter
    from hybridops.tasks.behaviour.llm import generation_dtype, load_base_model

    base, tokenizer = load_base_model(settings, fresh=True)
    return merge_adapter(base, folder, generation_dtype(settings)), tokenizer


def training_items() -> list[dict]:
    """The shipped training examples, read with the records' own model (their passages are prompt passages)."""
    items = []
    for path in sorted((EXAMPLES / "training").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = TrainingRecord.model_validate_json(line)
            items.append({"question": record.question, "passages": record.context,
                          "refusal": json.loads(response_text(record.response))["answer"] is None})
    return items


def indexed_retriever(cfg: Settings, corpus: Path):
    """Index the corpus in its namespace; the retriever evals use on it (question -> passages)."""
    Path(cfg.landing_uri).mkdir(parents=True, exist_ok=True)
    land(landing_zone(cfg), [corpus])
    run_refresh(cfg)
    return make_retriever(cfg)


def score(settings: Settings, model, tokenizer, embedder, items: list[dict]) -> list[dict]:
    """Each item answered (batched, as evals do), its four signals and the probe's input."""
    import torch

    prompts = [chat_prompt_ids(tokenizer, build_messages(i["question"], i["passages"])) for i in items]
    with batch_threads(settings.batch_threads):
        replies = generate_batch(model, tokenizer, prompts, settings.max_new_tokens, settings.eval_batch_tokens)
    decision = tokenizer.encode('{"answer":', add_special_tokens=False)
    null_id, quote_id = (tokenizer.encode(t, add_special_tokens=False)[0] for t in (" null", ' "'))
    rows = []
    with batch_threads(settings.batch_threads), torch.inference_mode():
        for item, prompt, raw in zip(items, prompts, replies):
            reply = parse_reply(raw, item["passages"])
            answer = reply.answer  # the raw text when the reply is not house JSON
            answer_ids = tokenizer.encode(answer, add_special_tokens=False) if answer else []
            with_context = _log_probs(model, prompt + decision + [quote_id], answer_ids)
            p = with_context["decision"]
            texts = [passage.text for passage in item["passages"]]
            row = {"question": item["question"], "refusal": item["refusal"],
                   "model_null": reply.format_ok and answer is None,
                   "p_null": p[null_id] / (p[null_id] + p[quote_id]),
                   "coverage": coverage(item["question"], texts),
                   "cosine": best_cosine(embedder, item["question"], texts),
                   "pmi": None, "hidden": with_context["hidden"]}
            if answer_ids:
                bare = chat_prompt_ids(tokenizer, build_messages(item["question"], []))
                without = _log_probs(model, bare + decision + [quote_id], answer_ids)["answer"]
                row["pmi"] = statistics.fmean(a - b for a, b in zip(with_context["answer"], without))
            rows.append(row)
    return rows


def _log_probs(model, prefix: list[int], answer: list[int]) -> dict:
    """The decision token's next-token probabilities (the position before the quote), the last hidden state
    there, and each answer token's log-probability, from one forward pass."""
    import torch

    ids = torch.tensor([prefix + answer], device=model.device)
    out = model(input_ids=ids, output_hidden_states=True)
    logits = out.logits[0].float()
    start = len(prefix) - 1
    answer_lp = torch.log_softmax(logits[start : start + len(answer)], -1)
    return {"decision": torch.softmax(logits[start - 1], -1).tolist(),
            "hidden": out.hidden_states[-1][0, start - 1].float().tolist(),
            "answer": [answer_lp[i, t].item() for i, t in enumerate(answer)]}


def coverage(question: str, passages: list[str]) -> float:
    words = content_words(question)
    present = {w[:5] for w in content_words(" ".join(passages))}  # crude stemming: 'returns' ~ 'return'
    return sum(w[:5] in present for w in words) / len(words) if words else 1.0


def best_cosine(embedder, question: str, passages: list[str]) -> float:
    sentences = [s.strip() for p in passages for s in _SENTENCE.split(p) if len(s.strip()) > 3]
    if not sentences:
        return 0.0
    return float((embedder.embed(sentences) @ embedder.embed([question])[0]).max())


def fit_logistic(rows: list[dict], inputs, l2: float):
    """A logistic regression over `inputs(row)` (standardised, classes balanced), fitted on `rows`. Returns
    (row -> score (high: refuse), the weights per standardised input and the bias last)."""
    import torch

    x = torch.tensor([inputs(r) for r in rows])
    y = torch.tensor([float(r["refusal"]) for r in rows])
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    weight = torch.where(y > 0, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        optimizer.zero_grad()
        logits = (x - mean) / std @ w + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, weight=weight) + l2 * w.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    w, b = w.detach(), b.detach()
    weights = [round(v, 3) for v in w.tolist()] + [round(float(b), 3)]
    return lambda row: float(((torch.tensor(inputs(row)) - mean) / std) @ w + b), weights


def out_of_fold_thresholds(rows: list[dict], rule: str) -> dict[str, float]:
    """Thresholds on a rule's score chosen the way a deployment could: each training example scored by the
    rule fitted without its fold, then `oof_80pct` refuses >= 80% of the refusal examples and `oof_no_false`
    sits just above the highest-scoring answerable one."""
    inputs, l2 = RULES[rule]
    scored = []
    for fold in range(FOLDS):
        held = [r for i, r in enumerate(rows) if i % FOLDS == fold]
        fold_score, _ = fit_logistic([r for i, r in enumerate(rows) if i % FOLDS != fold], inputs, l2)
        scored += [r | {rule: fold_score(r)} for r in held]
    answerable = max(refusability(r, rule) for r in scored if not r["refusal"])
    return {"oof_80pct": refusal_threshold(scored, rule), "oof_no_false": math.nextafter(answerable, math.inf)}


def _without(row: dict, key: str) -> dict:
    return {k: v for k, v in row.items() if k != key}


def _features(row: dict) -> list[float]:
    return [row[name] if row[name] is not None else 0.0 for name in FEATURES]  # pmi is None for a null answer


def refusability(row: dict, signal: str) -> float:
    """Higher = more reason to refuse; the model's own null always refuses."""
    value = row[signal]
    return math.inf if row["model_null"] or value is None else SIGNALS[signal] * value


def refusal_threshold(rows: list[dict], signal: str) -> float:
    """The refusability that refuses >= 80% of the refusal cases."""
    refusals = sorted((refusability(r, signal) for r in rows if r["refusal"]), reverse=True)
    return refusals[max(0, math.ceil(REFUSE_SHARE * len(refusals)) - 1)]


def refused_at(rows: list[dict], signal: str, threshold: float) -> dict:
    """Shares of refusal cases refused and of answerable cases refused (false refusals) at a threshold."""
    def share(is_refusal: bool) -> float | None:
        values = [refusability(r, signal) >= threshold for r in rows if r["refusal"] == is_refusal]
        return round(sum(values) / len(values), 3) if values else None

    return {"refuses": share(True), "false_refusals": share(False)}


def separation(rows: list[dict], signal: str) -> dict:
    """Ranges per kind, and what a threshold refusing >= 80% of the refusal cases would cost in false refusals."""
    out = {kind: _range([r[signal] for r in rows if r["refusal"] == is_refusal and r[signal] is not None])
           for kind, is_refusal in (("refusal", True), ("answerable", False))}
    if any(r["refusal"] for r in rows) and not all(r["refusal"] for r in rows):
        out["at_80pct_refusals"] = refused_at(rows, signal, refusal_threshold(rows, signal))
    return out


def _model_refused(rows: list[dict]) -> dict:
    return {kind: f"{sum(r['model_null'] for r in rows if r['refusal'] == is_refusal)}/"
                  f"{sum(r['refusal'] == is_refusal for r in rows)}"
            for kind, is_refusal in (("refusal", True), ("answerable", False))}


def _range(values: list[float]) -> list[float] | None:
    return [round(min(values), 3), round(statistics.median(values), 3), round(max(values), 3)] if values else None


def table(result: dict) -> str:
    lines = [f"adapter: {result['adapter'] or 'base'}",
             f"{'group':18} {'signal':9} {'refusal min/med/max':22} {'answerable min/med/max':24} at 80% refusals"]
    for name, group in result["groups"].items():
        lines.append(f"{name}: {group['cases']} cases, model answered null: {group['model_refused']}")
        for signal, s in group["signals"].items():
            at = s.get("at_80pct_refusals") or {}
            lines.append(f"{'':18} {signal:9} {str(s['refusal']):22} {str(s['answerable']):24} "
                         f"refuses {at.get('refuses')}, false refusals {at.get('false_refusals')}")
        for rule, points in group["rules"].items():
            for point, held in points.items():
                lines.append(f"{'':18} {rule} at the {point} threshold (out of fold, training examples): refuses "
                             f"{held['refuses']}, false refusals {held['false_refusals']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
