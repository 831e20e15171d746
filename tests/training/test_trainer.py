"""The trainer on tiny random models: learning, ablations, tracking, exact resume after SIGKILL,
two gloo processes, and the model folder it leaves behind."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from components.training.checkpoint import OPTIMIZER_FILE, STATE_FILE, complete_checkpoints
from components.training.config import load_profile
from components.training.data import task_name
from components.training.trainer import MODEL_DIR, train

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def tiny(*overrides: str):
    return load_profile("tiny", list(overrides))


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / MODEL_DIR / "trainable.safetensors"))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def eval_losses(model_dir: Path | None, config, qa_data: Path, cache: Path) -> dict[str, float]:
    """Loss terms on fixed examples: of a saved model, or of the untrained model (model_dir None)."""
    from components.ingestion.contract import read_tables
    from components.modeling.factory import build_model, load_model
    from components.modeling.profile import build_profiles
    from components.training.data import load_examples
    from components.training.objective import Objective, ObjectiveSettings, evaluate

    card, tables = read_tables(qa_data)
    torch.manual_seed(config.seed)
    if model_dir is None:
        model = build_model(card, tables.users, config.model, cache).add_lora(config.lora)
    else:
        model = load_model(model_dir, cache)
    examples = load_examples(qa_data, max_records=config.max_records, seed=config.seed)
    ids = sorted({e.user_id for e in examples})
    profiles = dict(zip(ids, build_profiles(card, tables, ids, config.model.max_events), strict=True))
    settings = ObjectiveSettings(  # the training objective, batch for batch
        n_embedding=config.n_embedding, n_generative=config.n_generative, temperature=config.temperature,
        margin=config.margin, max_answer_tokens=config.max_answer_tokens,
    )  # fmt: skip
    return evaluate(Objective(model, settings, profiles, tables.users), examples, batch=config.micro_batch)


def test_loss_goes_down_over_30_steps(qa_data, model_cache, tmp_path):
    config = tiny("steps=30", "max_records=32")  # the loss on the records it trains on
    result = train(config, qa_data, tmp_path / "run", cache_dir=model_cache, progress=False)
    assert result.steps == 30 and (result.model_dir / "model.json").is_file()
    before = eval_losses(None, config, qa_data, model_cache)
    after = eval_losses(result.model_dir, config, qa_data, model_cache)
    assert after["loss"] < before["loss"] - 0.2
    assert after["loss_lm"] < before["loss_lm"] - 0.2


def test_contrastive_loss_goes_down_when_it_trains_alone(qa_data, model_cache, tmp_path):
    # An untrained tiny model scores user-user and answer-answer pairs far above its user-answer
    # positives, so the margin mask (Eq. 4) drops nearly every negative and leaves little gradient;
    # without the mask InfoNCE must fall fast.
    config = tiny("steps=30", "max_records=32", "no_ntp=true", "margin=null")
    result = train(config, qa_data, tmp_path / "run", cache_dir=model_cache, progress=False)
    before = eval_losses(None, config, qa_data, model_cache)
    after = eval_losses(result.model_dir, config, qa_data, model_cache)
    assert after["loss_cl"] < 0.5 * before["loss_cl"]


@pytest.mark.parametrize("ablation, kept, dropped", [("no_ntp", "loss_cl", "loss_lm"),
                                                     ("no_contrastive", "loss_lm", "loss_cl")])  # fmt: skip
def test_ablations_train_one_branch(ablation, kept, dropped, qa_data, model_cache, tmp_path):
    result = train(
        tiny("steps=4", f"{ablation}=true"), qa_data, tmp_path, cache_dir=model_cache, progress=False
    )
    assert kept in result.final and dropped not in result.final
    assert result.final["loss"] == pytest.approx(result.final[kept])


def test_mlflow_gets_every_loss_term_and_rate(qa_data, model_cache, tmp_path):
    from mlflow.tracking import MlflowClient

    from components.training.tracking import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "test-training", (tmp_path / "artifacts").as_uri())
    result = train(tiny("steps=6", "log_every=2", "grad_accum=2"), qa_data, tmp_path / "run", cache_dir=model_cache,
                   tracker=tracker, progress=False)  # fmt: skip
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    for key in ("loss", "loss_lm", "loss_cl", "lr", "tokens_per_s", "examples_per_s", "grad_norm"):
        history = client.get_metric_history(result.run_id, key)
        assert [m.step for m in history] == [2, 4, 6], key
    assert run.data.params["config.lora.r"] == "4" and run.data.params["config.profile"] == "tiny"
    lrs = [m.value for m in client.get_metric_history(result.run_id, "lr")]
    assert lrs[0] > lrs[-1]  # cosine decay


def test_checkpoints_hold_weights_optimizer_and_state(qa_data, model_cache, tmp_path):
    train(tiny("steps=6", "checkpoint_every=2", "keep_checkpoints=2"), qa_data, tmp_path,
          cache_dir=model_cache, progress=False)  # fmt: skip
    found = complete_checkpoints(tmp_path)
    assert [p.name for p in found] == ["step-00000004", "step-00000006"]
    last = found[-1]
    for name in ("model.json", "trainable.safetensors", OPTIMIZER_FILE, "rng-0.safetensors", STATE_FILE):
        assert (last / name).is_file(), name
    state = json.loads((last / STATE_FILE).read_text())
    assert state["step"] == 6 and state["planner"]["sampler"]["cursor"] > 0
    assert not any(p.name.startswith(".") for p in (tmp_path / "checkpoints").iterdir())
    assert max_diff(load_file(str(last / "trainable.safetensors")), weights(tmp_path)) == 0.0


def test_resume_refuses_a_different_configuration(qa_data, model_cache, tmp_path):
    train(tiny("steps=2", "checkpoint_every=2"), qa_data, tmp_path, cache_dir=model_cache, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train(tiny("steps=2", "checkpoint_every=2", "lr=0.5"), qa_data, tmp_path, cache_dir=model_cache,
              resume=True, progress=False)  # fmt: skip


def launch(args: list[str], qa_data: Path, run_dir: Path, cache: Path, procs: int = 1):
    base = ["--profile", "tiny", "--data", str(qa_data), "--run-dir", str(run_dir), "--cache-dir", str(cache),
            "--no-progress", *args]  # fmt: skip
    if procs == 1:
        cmd = [sys.executable, "-m", "components.training.launch", *base]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
               "--master_port", str(29500 + random.randint(1, 2000)), "-m", "components.training.launch", *base]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.parametrize(
    "mechanisms",
    [[], ["tuner=tmole", "scheduling=s2sched", "task_batches=2"]],
    ids=["lora", "tmole+s2sched+task_batches"],
)
def test_sigkill_at_a_random_step_then_resume_matches_an_uninterrupted_run(
    mechanisms, qa_data, model_cache, tmp_path
):
    settings = [
        "--set",
        "steps=40",
        "--set",
        "checkpoint_every=5",
        *(a for m in mechanisms for a in ("--set", m)),
    ]
    whole = launch(settings, qa_data, tmp_path / "whole", model_cache)
    out, _ = whole.communicate(timeout=300)
    assert whole.returncode == 0, out

    rng = random.Random(os.getpid())
    for attempt in range(5):
        run = tmp_path / f"killed-{attempt}"
        proc = launch(settings, qa_data, run, model_cache)
        while not complete_checkpoints(run) and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))  # somewhere after the first checkpoint, at a random step
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        if not (run / MODEL_DIR).exists():
            break  # killed mid-run, as wanted; otherwise it finished first: try again
    else:
        pytest.fail("the run finished before it could be killed, five times")
    killed_at = json.loads((complete_checkpoints(run)[-1] / STATE_FILE).read_text())["step"]
    assert killed_at < 40

    resumed = launch([*settings, "--resume"], qa_data, run, model_cache)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    result = json.loads((run / "result.json").read_text())
    assert result["resumed_from"] == killed_at and result["steps"] == 40
    assert max_diff(weights(run), weights(tmp_path / "whole")) < 1e-6


def test_two_gloo_processes_train_to_the_end_in_the_same_format(qa_data, model_cache, tmp_path):
    single = launch(
        ["--set", "steps=4", "--set", "checkpoint_every=4"], qa_data, tmp_path / "one", model_cache
    )
    out1, _ = single.communicate(timeout=300)
    pair = launch(["--set", "steps=4", "--set", "checkpoint_every=4"], qa_data, tmp_path / "two", model_cache,
                  procs=2)  # fmt: skip
    out2, _ = pair.communicate(timeout=300)
    assert single.returncode == 0, out1
    assert pair.returncode == 0, out2
    one, two = complete_checkpoints(tmp_path / "one")[-1], complete_checkpoints(tmp_path / "two")[-1]
    assert {p.name for p in two.iterdir()} == {p.name for p in one.iterdir()} | {"rng-1.safetensors"}
    assert weights(tmp_path / "two").keys() == weights(tmp_path / "one").keys()
    assert json.loads((two / STATE_FILE).read_text())["world"] == 2
    result = json.loads((tmp_path / "two" / "result.json").read_text())
    assert result["steps"] == 4 and result["examples_per_s"] > 0


def test_the_trained_model_folder_loads_for_embedding(qa_data, model_cache, tmp_path):
    from components.ingestion.contract import read_tables
    from components.modeling.embed import UserEmbedder
    from components.modeling.factory import load_model

    result = train(tiny("steps=3"), qa_data, tmp_path, cache_dir=model_cache, progress=False)
    model = load_model(result.model_dir, model_cache)
    assert model.lora is not None and any("lora_" in k for k in weights(tmp_path))
    card, tables = read_tables(qa_data)
    ids = tables.users["user_id"].tolist()[:4]
    emb = UserEmbedder(model, card, tables)
    a = emb.embed(ids, "What do they like?")
    b = emb.embed(ids, None)
    assert a.shape == (4, model.dim) and not torch.allclose(torch.from_numpy(a), torch.from_numpy(b))


def test_an_unfrozen_encoder_trains_and_is_saved(qa_data, model_cache, tmp_path):
    from components.modeling.factory import load_model

    result = train(tiny("steps=2", "model.encoder_trainable=true"), qa_data, tmp_path, cache_dir=model_cache,
                   progress=False)  # fmt: skip
    saved = weights(tmp_path)
    encoder_keys = [k for k in saved if k.startswith("encoder_net.")]
    assert encoder_keys
    fresh = load_file(str(Path(model_cache) / "backbones" / "tiny-random-bert" / "model.safetensors"))
    changed = [k for k in encoder_keys if not torch.equal(saved[k], fresh[k.removeprefix("encoder_net.")])]
    assert changed  # the encoder's own weights moved
    model = load_model(result.model_dir, model_cache)
    assert torch.equal(
        model.encoder_net.state_dict()[changed[0].removeprefix("encoder_net.")], saved[changed[0]]
    )


def test_tmole_and_s2sched_train_log_and_save_their_state(qa_data, model_cache, tmp_path):
    from mlflow.tracking import MlflowClient

    from components.modeling.factory import load_model
    from components.modeling.tmole import INSTRUCTION, UNIVERSAL
    from components.training.tracking import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "test-tmole", (tmp_path / "artifacts").as_uri())
    config = tiny(
        "steps=12", "tuner=tmole", "scheduling=s2sched", "s2sched.eval_every=3", "s2sched.warmup_ratio=0"
    )
    result = train(config, qa_data, tmp_path / "run", cache_dir=model_cache, tracker=tracker, progress=False)
    model = load_model(result.model_dir, model_cache)
    tasks = model.tmole.settings.tasks
    assert tasks[:2] == [UNIVERSAL, INSTRUCTION] and len(tasks) > 5
    state = json.loads((complete_checkpoints(tmp_path / "run")[-1] / STATE_FILE).read_text())
    sched = state["planner"]["s2sched"]["branches"]
    assert set(sched) == {"embedding", "generative"}
    ratios = sched["embedding"]["ratios"]
    assert abs(sum(ratios) - 1) < 1e-9 and max(ratios) - min(ratios) > 1e-6  # it moved off uniform
    client = MlflowClient(uri)
    keys = client.get_run(result.run_id).data.metrics
    task = tasks[2]
    for kind in ("val_loss", "slope", "ratio"):
        history = client.get_metric_history(result.run_id, f"s2sched/generative/{task}/{kind}")
        assert [m.step for m in history] == [0, 3, 6, 9], kind
    assert "run_s2sched_s" in keys


def test_in_task_negatives_leave_only_same_task_pairs_in_infonce(qa_data, model_cache):
    """With `in_task_negatives`, a batch of one example per task has no negative at all (loss 0);
    with two per task the loss is positive, and the plain InfoNCE over the same batch is larger."""
    from components.ingestion.contract import read_tables
    from components.modeling.factory import build_model
    from components.modeling.profile import build_profiles
    from components.training.data import load_examples
    from components.training.objective import Objective, ObjectiveSettings

    config = tiny("margin=null")
    card, tables = read_tables(qa_data)
    torch.manual_seed(0)
    model = build_model(card, tables.users, config.model, model_cache).add_lora(config.lora)
    examples = load_examples(qa_data)
    by_task: dict[str, list] = {}
    for e in examples:
        by_task.setdefault(task_name(e), []).append(e)
    assert len(by_task) >= 3
    ids = sorted({e.user_id for e in examples})
    profiles = dict(zip(ids, build_profiles(card, tables, ids, config.model.max_events), strict=True))

    def cl(batch, in_task: bool) -> float:
        s = ObjectiveSettings(n_embedding=len(batch), n_generative=0, margin=None, in_task_negatives=in_task)
        with torch.no_grad():
            return float(Objective(model, s, profiles, tables.users)(batch, []).terms.cl)

    one_each = [v[0] for v in by_task.values()]
    assert cl(one_each, True) == pytest.approx(0.0, abs=1e-6)
    assert cl(one_each, False) > 0.1
    pairs = []
    for v in list(by_task.values())[:3]:  # two users per task, with different answers
        first = v[0]
        other = next(e for e in v if e.user_id != first.user_id and e.answer != first.answer)
        pairs += [first, other]
    assert cl(pairs, True) > 0.1
    assert cl(pairs, False) > cl(pairs, True)


@pytest.mark.parametrize("in_task", [True, False])
def test_centre_scores_infonce_on_vectors_centred_per_task_or_per_batch(
    in_task, qa_data, model_cache, monkeypatch
):
    from components.ingestion.contract import read_tables
    from components.modeling.factory import build_model
    from components.modeling.profile import build_profiles
    from components.training import objective as objective_module
    from components.training.data import load_examples
    from components.training.objective import Objective, ObjectiveSettings

    config = tiny()
    card, tables = read_tables(qa_data)
    torch.manual_seed(0)
    model = build_model(card, tables.users, config.model, model_cache).add_lora(config.lora)
    by_task: dict[str, list] = {}
    for e in load_examples(qa_data):
        by_task.setdefault(task_name(e), []).append(e)
    batch = [e for v in list(by_task.values())[:2] for e in v[:3]]  # three examples of two tasks
    ids = sorted({e.user_id for e in batch})
    profiles = dict(zip(ids, build_profiles(card, tables, ids, config.model.max_events), strict=True))
    seen = []
    real = objective_module.info_nce
    monkeypatch.setattr(
        objective_module, "info_nce", lambda u, a, *r, **k: seen.append((u, a)) or real(u, a, *r, **k)
    )

    for centre in (False, True):
        s = ObjectiveSettings(
            n_embedding=len(batch), n_generative=0, in_task_negatives=in_task, centre=centre
        )
        with torch.no_grad():
            Objective(model, s, profiles, tables.users)(batch, [])
    (raw_u, raw_a), (u, a) = seen
    groups = [slice(0, 3), slice(3, 6)] if in_task else [slice(0, 6)]
    for rows in groups:
        for x in (u, a):
            assert torch.allclose(x[rows].mean(0), torch.zeros(x.shape[1]), atol=1e-4)
        assert raw_u[rows].mean(0).norm() > 0.1 * raw_u[rows].norm(dim=1).mean()


@pytest.mark.parametrize("adapter", ["tmole", "lora"])
def test_gradient_checkpointing_gives_the_gradients_of_a_plain_pass(adapter, qa_data, model_cache):
    """With TMoLE both branches run, each under its own route, before the one backward pass that
    recomputes the checkpointed layers: the recomputation must see each pass's own route."""
    from components.ingestion.contract import read_tables
    from components.modeling.factory import build_model
    from components.modeling.profile import build_profiles
    from components.training.data import load_examples
    from components.training.objective import Objective, ObjectiveSettings
    from components.training.trainer import add_tuner

    card, tables = read_tables(qa_data)
    examples = load_examples(qa_data, max_records=12, seed=0)
    ids = sorted({e.user_id for e in examples})
    tasks = [task_name(e) for e in examples]

    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        config = tiny(f"tuner={adapter}", f"model.gradient_checkpointing={str(checkpointing).lower()}")
        torch.manual_seed(0)
        model = add_tuner(build_model(card, tables.users, config.model, model_cache), config, examples)
        layers = [m for m in model.backbone.modules() if hasattr(m, "gradient_checkpointing")]
        assert any(m.gradient_checkpointing for m in layers) is checkpointing
        profiles = dict(zip(ids, build_profiles(card, tables, ids, config.model.max_events), strict=True))
        settings = ObjectiveSettings(n_embedding=8, n_generative=4, margin=None)
        objective = Objective(model, settings, profiles, tables.users).train()
        torch.manual_seed(1)  # the same dropout masks in both runs
        objective(examples[:8], examples[:4], tasks[:8], tasks[:4]).terms.total.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    assert max_diff(plain, checkpointed) < 1e-5


def one_step(qa_data: Path, model_cache: Path, adapter: str, **settings):
    """Loss terms and gradients of one micro-batch (8 embedding, 4 generative examples) on a fresh
    tiny model, in eval mode (no dropout, so two calls see the same computation); `settings` go to
    `ObjectiveSettings`."""
    from components.ingestion.contract import read_tables
    from components.modeling.factory import build_model
    from components.modeling.profile import build_profiles
    from components.training.data import load_examples
    from components.training.objective import Objective, ObjectiveSettings
    from components.training.trainer import add_tuner

    card, tables = read_tables(qa_data)
    examples = load_examples(qa_data, max_records=12, seed=0)
    ids = sorted({e.user_id for e in examples})
    tasks = [task_name(e) for e in examples]
    config = tiny(f"tuner={adapter}")
    profiles = dict(zip(ids, build_profiles(card, tables, ids, config.model.max_events), strict=True))
    torch.manual_seed(0)
    model = add_tuner(build_model(card, tables.users, config.model, model_cache), config, examples)
    objective = Objective(model, ObjectiveSettings(n_embedding=8, n_generative=4, margin=None, **settings),
                          profiles, tables.users).eval()  # fmt: skip
    terms = objective(examples[:8], examples[:4], tasks[:8], tasks[:4]).terms
    terms.total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return terms, grads


def worst_relative(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest gradient difference, relative to each tensor's largest entry."""
    return max(float((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-8)) for k in a)


@pytest.mark.parametrize("adapter", ["tmole", "lora"])
def test_grouped_decoding_gives_the_losses_and_gradients_of_one_padded_pass(adapter, qa_data, model_cache):
    """`ObjectiveSettings.group_overhead`: both branches and the answers decoded per length group,
    each group under its own rows' TMoLE routes, reach the losses and gradients of padded passes."""
    padded, g_padded = one_step(qa_data, model_cache, adapter, group_overhead=None)
    grouped, g_grouped = one_step(qa_data, model_cache, adapter, group_overhead=0)
    for name in ("total", "lm", "cl"):
        a, b = (float(getattr(t, name).detach()) for t in (padded, grouped))
        assert abs(a - b) < 1e-5, name
    assert g_padded.keys() == g_grouped.keys() and len(g_padded) > 10
    # float rounding only: another summation order in the attention and the matmuls of each group
    assert worst_relative(g_padded, g_grouped) < 1e-4


@pytest.mark.parametrize("adapter", ["tmole", "lora"])
def test_fused_passes_give_the_losses_and_gradients_of_separate_passes(adapter, qa_data, model_cache):
    """`ObjectiveSettings.fuse_passes`: the embedding and generative sequences and the answers in one
    decoder call, routed per row, reach the losses and gradients of one call per part (the optimised
    step against the eager reference, issue 25)."""
    separate, g_separate = one_step(qa_data, model_cache, adapter, fuse_passes=False)
    fused, g_fused = one_step(qa_data, model_cache, adapter, fuse_passes=True)
    for name in ("total", "lm", "cl"):
        a, b = (float(getattr(t, name).detach()) for t in (separate, fused))
        assert abs(a - b) <= 1e-3 * abs(a) + 1e-6, name
    assert g_separate.keys() == g_fused.keys() and len(g_separate) > 10
    assert worst_relative(g_separate, g_fused) < 1e-3
