"""Figures of an evaluation, as PNG (matplotlib, Agg backend), and the run data two of them draw.

- `plot_tsne`: t-SNE of the probe users' universal embeddings beside their instruction-aware ones
  (manual, tuned), coloured by each task's label (InstructUE Figure 5);
- `plot_roc`: ROC curves per task of every variant and baseline (first seed's evaluation half);
- `plot_s2sched`: S2Sched's sample ratio per task over training steps (RecFound Figure 3), from the
  trainer's MLflow metrics `s2sched/<branch>/<task>/ratio` (`s2sched_from_mlflow`) or, with fewer
  points, from the run's checkpoints (`s2sched_from_checkpoints`);
- `plot_routing`: cosine similarity between tasks of their TMoLE routing distributions over every
  layer's experts (RecFound Figure 2), from `routing_similarity(model)`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

COLORS = {"universal": "tab:blue", "manual": "tab:orange", "tuned": "tab:green"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


# -- data the plots draw from the run ----------------------------------------------------------------
def s2sched_from_checkpoints(run_dir: Path) -> dict:
    """branch -> task -> [(step, ratio)] from `checkpoints/*/trainer.json` (one point per checkpoint:
    the ratios in force when it was written); {} when the run has no S2Sched state."""
    out: dict = {}
    for state_file in sorted(Path(run_dir).glob("checkpoints/*/trainer.json")):
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        branches = ((state.get("planner") or {}).get("s2sched") or {}).get("branches") or {}
        for branch, b in branches.items():
            for task, ratio in zip(b.get("tasks", []), b.get("ratios", []), strict=False):
                out.setdefault(branch, {}).setdefault(task, []).append((int(state["step"]), float(ratio)))
    return out


def s2sched_from_mlflow(client, run_id: str) -> dict:
    """branch -> task -> [(step, ratio)] from a training run's `s2sched/<branch>/<task>/ratio`
    metric histories (an explicit `MlflowClient`; no run state)."""
    out: dict = {}
    for key in client.get_run(run_id).data.metrics:
        parts = key.split("/")
        if len(parts) == 4 and parts[0] == "s2sched" and parts[3] == "ratio":
            history = client.get_metric_history(run_id, key)
            out.setdefault(parts[1], {})[parts[2]] = sorted((int(m.step), float(m.value)) for m in history)
    return out


def routing_similarity(model) -> dict | None:
    """Cosine similarity between tasks of their routing over all TMoLE layers, per branch.

    Each task's signature is the concatenation, over every TMoLE projection, of its gate vector
    (Eq. 1's softmax, the branch's mask applied): two tasks that route alike score near 1.
    None for a model without TMoLE.
    """
    import torch

    from components.modeling import Branch, Route, TMoLELinear

    if getattr(model, "tmole", None) is None:
        return None
    tasks = list(model.tmole.settings.tasks)
    layers = [m for m in model.backbone.modules() if isinstance(m, TMoLELinear)]
    device = model.tmole.tmole_tasks.weight.device
    ids = torch.arange(len(tasks), device=device)
    out: dict = {"tasks": tasks}
    with torch.no_grad():
        for branch in Branch:
            route = Route(ids, torch.full_like(ids, int(branch)))
            sig = torch.cat([layer.gates(route) for layer in layers], dim=1).float()
            sig = torch.nn.functional.normalize(sig, dim=1)
            out[branch.name.lower()] = (sig @ sig.T).cpu().numpy()
    return out


# -- figures -----------------------------------------------------------------------------------------
def _tsne(X: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    X = np.asarray(X, np.float64)
    if X.shape[1] > 50 and len(X) > 50:
        X = PCA(50, random_state=seed).fit_transform(X)
    perplexity = float(min(30, max(2, (len(X) - 1) // 3)))
    with threadpool_limits(1):
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(X)


def plot_tsne(embeddings: dict, labels: dict, tasks: list[str], path: Path, seed: int = 0) -> Path | None:
    """Rows: tasks; columns: universal, manual, tuned (those evaluated); colour: the task's label.

    `embeddings`: variant -> task (or "*") -> (n, d) matrix; `labels`: task -> (row indices, 0/1)."""
    variants = [v for v in ("universal", "manual", "tuned") if v in embeddings]
    if not variants or not tasks:
        return None
    plt = _pyplot()
    points: dict = {}
    for v in variants:
        for key, matrix in embeddings[v].items():
            points[(v, key)] = _tsne(matrix, seed)
    fig, axes = plt.subplots(len(tasks), len(variants), figsize=(3.2 * len(variants), 3.0 * len(tasks)),
                             squeeze=False)  # fmt: skip
    for r, t in enumerate(tasks):
        idx, y = labels[t]
        for c, v in enumerate(variants):
            xy = points.get((v, t), points.get((v, "*")))
            ax = axes[r][c]
            if xy is None:
                ax.axis("off")
                continue
            for cls, color in ((0, "tab:gray"), (1, "tab:red")):
                sel = idx[y == cls]
                ax.scatter(xy[sel, 0], xy[sel, 1], s=6, c=color, alpha=0.6, label=f"label {cls}")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(v)
            if c == 0:
                ax.set_ylabel(t, fontsize=8)
    axes[0][0].legend(loc="best", fontsize=7, markerscale=2)
    fig.suptitle("t-SNE of probe users: universal vs instruction-aware embeddings")
    return _save(fig, path)


def plot_roc(scores: dict[str, dict], tasks: list[str], path: Path) -> Path | None:
    """One panel per task; a curve per variant and baseline (`ProbeScore.roc`, first seed)."""
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.6 * rows), squeeze=False)
    for k, t in enumerate(tasks):
        ax = axes[k // cols][k % cols]
        for name, by_task in scores.items():
            s = by_task.get(t)
            if s is None or s.roc is None:
                continue
            fpr, tpr, _ = roc_curve(*s.roc)
            style = "-" if name in COLORS else "--"
            ax.plot(fpr, tpr, style, color=COLORS.get(name), lw=1.2, label=f"{name} {s.auc:.3f}")
        ax.plot([0, 1], [0, 1], ":", color="black", lw=0.6)
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("FPR")
        ax.set_ylabel("TPR")
        ax.legend(fontsize=6, loc="lower right")
    for k in range(len(tasks), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle("ROC curves, first seed's evaluation half (legend: mean AUC over seeds)")
    return _save(fig, path)


def plot_s2sched(history: dict, path: Path) -> Path | None:
    """Sample ratio per task over steps, one panel per branch."""
    if not history:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(history), figsize=(6.0 * len(history), 4.0), squeeze=False)
    for ax, (branch, tasks) in zip(axes[0], sorted(history.items()), strict=True):
        for task, points in sorted(tasks.items()):
            steps, ratios = zip(*points, strict=True)
            ax.plot(steps, ratios, marker=".", lw=1, label=task)
        ax.set_title(f"S2Sched sample ratios, {branch} branch")
        ax.set_xlabel("step")
        ax.set_ylabel("ratio")
        ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def plot_routing(routing: dict | None, path: Path) -> Path | None:
    """Task x task routing similarity heatmaps, one per branch."""
    if not routing:
        return None
    plt = _pyplot()
    tasks = routing["tasks"]
    branches = [b for b in ("embedding", "generative") if b in routing]
    size = max(4.0, 0.45 * len(tasks))
    fig, axes = plt.subplots(1, len(branches), figsize=(size * len(branches) + 1, size), squeeze=False)
    for ax, b in zip(axes[0], branches, strict=True):
        m = np.asarray(routing[b])
        im = ax.imshow(m, vmin=min(0.0, float(m.min())), vmax=1.0, cmap="viridis")
        ax.set_xticks(range(len(tasks)), tasks, rotation=90, fontsize=7)
        ax.set_yticks(range(len(tasks)), tasks, fontsize=7)
        ax.set_title(f"TMoLE routing similarity, {b} branch", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)
