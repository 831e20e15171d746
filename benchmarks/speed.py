"""Speed ratios of the platform, measured in one run of this script on one machine (issue 11, item 4).

    python benchmarks/speed.py                               # quick profile's models, data/movielens-100k
    python benchmarks/speed.py --device cuda                 # absolute numbers on a GPU (bf16)
    python benchmarks/speed.py --tiny --users 16 --steps 10  # tiny random models: a smoke run

Needs an ingested dataset with UserQA records (`instructue ingest <dataset>`, then
`instructue synthesize <dataset>`). Where two things are compared they run in turns (A B A B ...,
after one untimed warm-up each) so machine noise hits both alike; medians are compared.

1. Embedding throughput: multi-encoder (events -> sentence encoder -> adapter soft tokens) versus
   text-only (events serialised as text), the profile's backbone, universal embeddings of the same
   first `--users` users; the multi-encoder turns read a warm encoder cache (the steady state).
   Users/s each; target multi-encoder >= 5x text-only.
2. Training step, TMoLE versus plain LoRA of the same rank (LoRA with its one shared pass, as the
   trainer runs it): forward + backward + AdamW on the same micro-batches (as in `tmole_step.py`).
   Target <= 1.25x.
3. S2Sched overhead: a real training run (`components/training/trainer.py`, TMoLE + S2Sched, `--steps`
   steps, no tracking); the wall time of S2Sched's validation passes (`TrainResult.s2sched_s`) over
   the run's wall time. Target <= 10%. The default 50 steps at the quick profile's `eval_every=25`
   evaluate twice (steps 0 and 25), the same share per step as the 150-step README runs.
4. Encoder cache: embedding the same users with an empty sentence-encoder cache (a fresh temporary
   folder each cold turn) versus the same cache warm; the warm turns must encode no text.
5. Tokens/s and the share of peak FLOP/s: peak is the best rate of an n x n matmul, fp32 and (where
   the hardware computes in bf16, as the trainer's autocast then does) bf16. Training FLOPs use the
   standard estimate 6 N per token (2 N forward + 4 N backward), N = the backbone's parameters
   without the token-embedding table (LoRA/TMoLE weights included). With the base weights frozen the
   backward pass skips their weight gradients, so 4 N + 2 N_trainable is closer; both are written,
   the table uses 6 N (an upper-ish estimate of the work, so the share is upper-ish too). Attention's
   score/value products, the output head on answer tokens and the sentence encoder are left out.
   The share is computed against the peak of the precision training used, for the step benchmark of
   item 2 and for the run of item 3 (its time without S2Sched's validation passes).

Before the run the training users' event texts are encoded into the persistent encoder cache, so the
run is timed in the steady state. Prints a table (what, A, B, ratio, target, met?) and writes JSON
(machine, command line, configuration, every raw timing) to
`benchmarks/results/speed[_tiny][_cuda].json` unless `--out` says otherwise.
"""

from __future__ import annotations

import argparse
import gc
import math
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import PeakRss, machine, write_result
from embed_throughput import timed
from tmole_step import bare_backbone, bare_step, step_setup, step_variant, timed_step

from components.ingestion import read_tables
from components.modeling import (
    CachedEncoder,
    InputMode,
    UserEmbedder,
    bf16_units,
    build_model,
    build_profiles,
    default_cache_dir,
    load_encoder,
    pick_device,
)
from components.training import MissingUserQA, TrainConfig, load_examples, load_profile, train

ROOT = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def alternate(
    turns: dict[str, Callable[[], float]], repeats: int, warm_up: bool = True
) -> dict[str, list[float]]:
    """Each callable once untimed (unless `warm_up` is off), then `repeats` rounds A B A B ...;
    returns the seconds of each timed turn."""
    for fn in turns.values() if warm_up else ():
        fn()
    times: dict[str, list[float]] = {k: [] for k in turns}
    for _ in range(repeats):
        for name, fn in turns.items():
            times[name].append(fn())
    return times


def peak_matmul(device: torch.device, dtype: torch.dtype, n: int, budget_s: float = 3.0) -> float:
    """Best FLOP/s of an n x n matmul over at least 3 repeats (more while within `budget_s`)."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    sync(device)
    best, start, reps = 0.0, time.perf_counter(), 0
    while reps < 3 or (reps < 50 and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best, reps = max(best, 2 * n**3 / (time.perf_counter() - t0)), reps + 1
    return best


def flop_params(model) -> dict[str, int]:
    """N for the FLOP estimate (see the module docstring) and its trainable part."""
    body = model.backbone.base_model
    embed = model.backbone.get_input_embeddings().weight
    params = [p for p in body.parameters() if p is not embed]
    return {
        "n": sum(p.numel() for p in params),
        "n_trainable": sum(p.numel() for p in params if p.requires_grad),
    }


def flops_per_token(n: dict[str, int]) -> dict[str, int]:
    return {"6N": 6 * n["n"], "4N+2N_trainable": 4 * n["n"] + 2 * n["n_trainable"]}


# -- 1 and 4: embedding ---------------------------------------------------------------------------------
def measure_embedding(card, tables, config: TrainConfig, ids: list[int], repeats: int, cache_dir: Path):
    batch = config.model.batch_size
    multi = build_model(card, tables.users, config.model, cache_dir)
    emb = UserEmbedder(multi, card, tables)
    with tempfile.TemporaryDirectory(prefix="speed-encodings-") as tmp:
        cold_dirs = iter(Path(tmp) / f"cold-{k}" for k in range(repeats + 1))
        misses: dict[str, list[int]] = {"cold": [], "warm": []}

        def turn(kind: str) -> float:
            if kind == "cold":  # a fresh, empty on-disk cache
                multi.encoder = CachedEncoder(multi.encoder.encoder, next(cold_dirs))
            before = multi.encoder.misses
            seconds = timed(emb, ids, [None], batch)
            misses[kind].append(multi.encoder.misses - before)
            return seconds

        cache = alternate({"cold": lambda: turn("cold"), "warm": lambda: turn("warm")}, repeats)
        for v in misses.values():
            v.pop(0)  # the warm-up turns
        # the same backbone and depth; LiT's answer tower needs the multi-encoder input and embeds no user
        text_only = {"input_mode": InputMode.TEXT_ONLY, "answer_encoder": False, "mean_skip": False}
        text_config = config.model.model_copy(update=text_only)
        text_model = build_model(card, tables.users, text_config, cache_dir)
        text = UserEmbedder(text_model, card, tables)
        timed(text, ids[:batch], [None], batch)  # warm-up on one batch; the multi-encoder is warm
        modes = alternate(
            {
                "multi_encoder": lambda: timed(emb, ids, [None], batch),  # its cache is warm here
                "text_only": lambda: timed(text, ids, [None], batch),
            },
            repeats,
            warm_up=False,
        )
    out = {
        "users": len(ids), "batch_size": batch, "bf16": bool(multi.uses_bf16()),
        "cache_s": cache, "cache_texts_encoded": misses, "modes_s": modes,
    }  # fmt: skip
    return out


# -- 2: TMoLE versus LoRA training step ------------------------------------------------------------------
def measure_steps(card, tables, examples, config: TrainConfig, repeats: int, cache_dir: Path) -> dict:
    n = config.micro_batch
    batches, profiles, tmole, lora = step_setup(card, tables, examples, config, repeats + 1)
    variants, tokens, params = {}, {}, {}
    for name in ("tmole", "lora"):
        objective, opt, _ = step_variant(name, card, tables, config, profiles, tmole, lora, cache_dir)
        variants[name] = (objective, opt, iter(batches))
        tokens[name], params[name] = [], flop_params(objective.model)

    def step(name: str) -> float:
        objective, opt, todo = variants[name]
        seconds, n_tokens = timed_step(objective, opt, next(todo), config)
        tokens[name].append(n_tokens)
        return seconds

    backbone, floor_bf16, device = bare_backbone(card, tables, config, cache_dir)
    floor: dict = {}

    def bare() -> float:
        """The floor on the TMoLE step's token count (rows of 160 positions), in the same turns."""
        if "embeds" not in floor:  # the TMoLE warm-up step ran first: its token count sets the size
            rows = max(1, round(tokens["tmole"][0] / 160))
            floor["embeds"] = torch.randn(rows, 160, backbone.config.hidden_size, device=device) * 0.05
        sync(device)
        t0 = time.perf_counter()
        bare_step(backbone, floor["embeds"], floor_bf16)
        sync(device)
        tokens["bare"].append(floor["embeds"].shape[0] * 160)
        return time.perf_counter() - t0

    tokens["bare"] = []
    turns = {k: (lambda k=k: step(k)) for k in variants}
    times = alternate({**turns, "bare": bare}, repeats)
    bf16 = bool(variants["lora"][0].model.uses_bf16())
    for v in tokens.values():
        v.pop(0)
    return {"micro_batch": n, "rank": tmole.r, "experts": tmole.n_experts, "bf16": bf16,
            "step_s": times, "tokens": tokens, "flop_params": params}  # fmt: skip


# -- 3 and 5: a real training run -------------------------------------------------------------------------
def warm_encoder_cache(card, tables, examples, config: TrainConfig, cache_dir: Path | None) -> int:
    """Encode the training users' event texts into the persistent cache the trainer reads, so the run
    is timed in the steady state (no first-seen texts); returns how many texts were new."""
    if config.model.input_mode is not InputMode.MULTI_ENCODER or config.model.encoder_trainable:
        return 0
    encoder = load_encoder(config.model, pick_device(config.model.device), cache_dir or default_cache_dir())
    profiles = build_profiles(card, tables, sorted({e.user_id for e in examples}), config.model.max_events)
    texts = {t for p in profiles for events in p.events.values() for t in events}
    if texts:
        encoder.encode(sorted(texts))
    return encoder.misses


def measure_training(card, tables, examples, config: TrainConfig, data_dir: Path, cache_dir: Path) -> dict:
    new_texts = warm_encoder_cache(card, tables, examples, config, cache_dir)
    with tempfile.TemporaryDirectory(prefix="speed-run-") as run_dir:
        result = train(config, data_dir, Path(run_dir), cache_dir=cache_dir, progress=True)
    tokens = result.tokens_per_s * result.wall_s
    return {
        "steps": result.steps, "wall_s": result.wall_s, "s2sched_s": result.s2sched_s, "tokens": tokens,
        "tokens_per_s": result.tokens_per_s, "examples_per_s": result.examples_per_s,
        "tokens_per_s_without_s2sched": tokens / (result.wall_s - result.s2sched_s),
        "eval_every": config.s2sched.eval_every, "final": result.final,
        "texts_encoded_before_the_run": new_texts,
    }  # fmt: skip


# -- the report -------------------------------------------------------------------------------------------
def row(what: str, a: float, b: float, a_unit: str, b_unit: str, target: str | None, ok: bool | None) -> dict:
    return {"what": what, "a": a, "a_label": a_unit, "b": b, "b_label": b_unit, "ratio": a / b,
            "target": target, "met": ok}  # fmt: skip


def rows_from(raw: dict) -> list[dict]:
    med = {k: statistics.median(v) for k, v in raw["embedding"]["modes_s"].items()}
    users = raw["embedding"]["users"]
    multi, text = users / med["multi_encoder"], users / med["text_only"]
    steps = raw["steps"]
    step = {k: statistics.median(v) for k, v in steps["step_s"].items()}
    run = raw["training"]
    cold, warm = (statistics.median(v) for v in raw["embedding"]["cache_s"].values())
    cache_ratio, rewarm = cold / warm, sum(raw["embedding"]["cache_texts_encoded"]["warm"])
    rate = {k: sum(v) / sum(steps["step_s"][k]) for k, v in steps["tokens"].items()}
    out = [
        row("train step tokens/s: TMoLE (A) vs bare backbone fwd+bwd (B)", rate["tmole"], rate["bare"],
            "tokens/s", "tokens/s", ">= 0.67x", rate["tmole"] / rate["bare"] >= 0.67),
        row("train step tokens/s: LoRA (A) vs bare backbone fwd+bwd (B)", rate["lora"], rate["bare"],
            "tokens/s", "tokens/s", None, None),
        row("embed users/s: multi-encoder (A) vs text-only (B)", multi, text, "users/s", "users/s",
            ">= 5x", multi / text >= 5),
        row("train step s: TMoLE (A) vs LoRA same rank (B)", step["tmole"], step["lora"], "s", "s",
            "<= 1.25x", step["tmole"] / step["lora"] <= 1.25),
        row("S2Sched validation s (A) / training run s (B)", run["s2sched_s"], run["wall_s"], "s", "s",
            "<= 0.10", run["s2sched_s"] / run["wall_s"] <= 0.10),
        row("embed s: cold (A) vs warm (B) encoder cache", cold, warm, "s", "s",
            "> 1x, warm encodes 0 texts", cache_ratio > 1 and rewarm == 0),
    ]  # fmt: skip
    peak = raw["peak_flops"]
    if peak.get("bf16"):
        out.append(row("peak matmul FLOP/s: bf16 (A) vs fp32 (B)", peak["bf16"], peak["fp32"],
                       "FLOP/s", "FLOP/s", None, None))  # fmt: skip
    used = peak["bf16" if steps["bf16"] else "fp32"]
    precision = "bf16" if steps["bf16"] else "fp32"
    per_token = {k: flops_per_token(v)["6N"] for k, v in steps["flop_params"].items()}
    frozen = {k: flops_per_token(v)["4N+2N_trainable"] for k, v in steps["flop_params"].items()}
    for name in ("tmole", "lora"):
        r = rate[name] * per_token[name]
        out.append(row(f"train step FLOP/s (6N) {name} (A) vs {precision} peak (B)", r, used,
                       "FLOP/s", "FLOP/s", None, None))  # fmt: skip
    r = rate["tmole"] * frozen["tmole"]
    out.append(row(f"train step FLOP/s (4N+2N_trainable) tmole (A) vs {precision} peak (B)", r, used,
                   "FLOP/s", "FLOP/s", ">= 0.20", r / used >= 0.20))  # fmt: skip
    r = run["tokens_per_s_without_s2sched"] * per_token["tmole"]
    out.append(row(f"training run FLOP/s (6N) (A) vs {precision} peak (B)", r, used, "FLOP/s", "FLOP/s",
                   None, None))  # fmt: skip
    r = run["tokens_per_s"] * frozen["tmole"]
    out.append(row(f"training run FLOP/s (4N+2N_trainable) (A) vs {precision} peak (B)", r, used,
                   "FLOP/s", "FLOP/s", ">= 0.15", r / used >= 0.15))  # fmt: skip
    return out


def print_table(rows: list[dict], raw: dict) -> None:
    def num(x: float) -> str:
        return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.3e}"

    print()
    print("| what | A | B | ratio A/B | target | met? |")
    print("|---|---:|---:|---:|---|---|")
    for r in rows:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        print(f"| {r['what']} | {num(r['a'])} {r['a_label']} | {num(r['b'])} {r['b_label']} | "
              f"{num(r['ratio'])} | {r['target'] or '-'} | {met} |")  # fmt: skip
    run = raw["training"]
    print(f"\ntraining run: {run['steps']} steps, {run['tokens_per_s']:.1f} tokens/s "
          f"({run['tokens_per_s_without_s2sched']:.1f} without S2Sched's validation passes)")  # fmt: skip
    for name, t in raw["steps"]["tokens"].items():
        print(f"{name} step: {sum(t) / sum(raw['steps']['step_s'][name]):.1f} tokens/s")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="movielens-100k")
    p.add_argument("--data-root", type=Path, default=ROOT / "data", help="folder holding data/<dataset>")
    p.add_argument("--profile", default="quick", help="training profile whose models and settings to use")
    p.add_argument("--tiny", action="store_true", help="the tiny random models (same as --profile tiny)")
    p.add_argument("--users", type=int, default=64, help="first N users for the embedding measurements")
    p.add_argument("--steps", type=int, default=50, help="steps of the training run (S2Sched share)")
    p.add_argument("--step-repeats", type=int, default=3, help="timed TMoLE/LoRA steps each")
    p.add_argument("--repeats", type=int, default=2, help="timed embedding turns each")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="profile overrides, as for `instructue train`")  # fmt: skip
    p.add_argument("--cache-dir", type=Path, default=None, help="model cache (default $INSTRUCTUE_CACHE)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    profile = "tiny" if args.tiny else args.profile
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    data_dir = args.data_root / args.dataset
    if not (data_dir / "manifest.json").is_file():
        raise SystemExit(
            f"{data_dir / 'manifest.json'} is missing: ingest the dataset first (`instructue ingest "
            f"{args.dataset}`), then synthesise its UserQA (`instructue synthesize {args.dataset}`)"
        )
    overrides = ["tuner=tmole", "scheduling=s2sched", f"steps={args.steps}", f"model.device={device.type}"]
    if device.type == "cuda":
        overrides.append("model.bf16=true")
    config = load_profile(profile, [*overrides, *args.overrides])
    card, tables = read_tables(data_dir)
    try:
        examples = load_examples(data_dir, config.families, config.max_records, config.seed)
    except MissingUserQA as e:
        raise SystemExit(str(e)) from None
    ids = sorted(tables.users["user_id"].astype(int).tolist())[: args.users]

    n = 8192 if device.type == "cuda" else (256 if profile == "tiny" else 2048)
    sections = {
        "peak_flops": ("peak matmul rates", lambda: {
            "matmul_n": n, "fp32": peak_matmul(device, torch.float32, n),
            "bf16": peak_matmul(device, torch.bfloat16, n) if bf16_units(device) else None}),
        "embedding": ("1, 4: embedding (encoder cache cold/warm; multi-encoder/text-only)",
                      lambda: measure_embedding(card, tables, config, ids, args.repeats, args.cache_dir)),
        "steps": ("2: TMoLE versus LoRA training steps",
                  lambda: measure_steps(card, tables, examples, config, args.step_repeats, args.cache_dir)),
        "training": (f"3, 5: a {args.steps}-step training run (TMoLE + S2Sched)",
                     lambda: measure_training(card, tables, examples, config, data_dir, args.cache_dir)),
    }  # fmt: skip
    raw: dict = {"section_s": {}}
    with PeakRss() as mem:
        for key, (label, measure) in sections.items():
            print(f"{label} ...", flush=True)
            t0 = time.perf_counter()
            raw[key] = measure()
            raw["section_s"][key] = time.perf_counter() - t0
            free(device)
    if raw["steps"]["bf16"] and raw["peak_flops"]["bf16"] is None:  # bf16 forced on without bf16 units
        raw["peak_flops"]["bf16"] = peak_matmul(device, torch.bfloat16, n)
    raw["flops_per_token"] = {k: flops_per_token(v) for k, v in raw["steps"]["flop_params"].items()}
    rows = rows_from(raw)
    print_table(rows, raw)
    bad = [r["what"] for r in rows if not all(math.isfinite(r[k]) for k in ("a", "b", "ratio"))]
    if bad:
        print(f"non-finite measurements: {bad}", file=sys.stderr)
    report = {
        "benchmark": "speed", "command": shlex.join([sys.executable, *sys.argv] if argv is None
                                                    else ["benchmarks/speed.py", *argv]),
        "machine": machine(), "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "dataset": card.name, "profile": profile, "backbone": config.model.backbone,
        "encoder": config.model.encoder, "config": config.model_dump(mode="json"),
        "measurements": rows, "raw": raw, "peak_rss_mb": round(mem.peak / 2**20, 1),
    }  # fmt: skip
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    out = (
        args.out
        or ROOT / "benchmarks" / "results" / f"speed{'_tiny' if profile == 'tiny' else ''}{suffix}.json"
    )
    write_result(out, report)
    return report


if __name__ == "__main__":
    main()
