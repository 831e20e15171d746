"""TMoLE: task-wise mixture of low-rank experts (RecFound section 4.2, Eq. 1-2).

Each targeted projection (q/k/v/o of every layer) is wrapped peft-style: the frozen base linear
stays as `base_layer` and N low-rank experts are added beside it, in three groups (embedding,
shared, generative). A router per projection maps the task embedding e_i (one table shared by every
layer) to N logits; the other branch's group is masked to -inf before the softmax:

    v_i = Softmax(Mask(Router(e_i)))                                               (Eq. 1)
    o   = W_0 x + sum_j v_ij * B_j A_j dropout(x) * alpha / r                      (Eq. 2)

Routing is per sample (one task id and one branch per sequence), not per token. All experts of a
projection run together: A is stored stacked as (N*r, d_in) and B as (d_out, N*r), so the layer is
two matmuls with the gates folded in between (scaling each expert's r columns by its gate).

Router depth: the paper says "MLP", the public RecFound code uses one linear layer over the task
embedding. The default is the linear router (`router_layers=1`): with one task id per sample the
router's input is one of a few dozen learned vectors, so a hidden layer adds parameters without
adding expressiveness (the table itself can learn any logits); `router_layers=2` gives the MLP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

MARK = "tmole_"
UNIVERSAL = "universal"  # no instruction
INSTRUCTION = "instruction"  # a free-form instruction at inference
RESERVED_TASKS = (UNIVERSAL, INSTRUCTION)


class Branch(IntEnum):
    EMBEDDING = 0
    GENERATIVE = 1


class TMoLESettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n_embedding: int = Field(2, ge=0, description="experts only the embedding branch uses")
    n_shared: int = Field(2, ge=0, description="experts both branches use")
    n_generative: int = Field(2, ge=0, description="experts only the generative branch uses")
    r: int = Field(16, ge=1)
    alpha: float = Field(64.0, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    task_dim: int = Field(512, ge=1, description="width of the task embedding shared by all layers")
    router_layers: int = Field(1, ge=1, le=2, description="1: linear (RecFound code), 2: MLP (paper)")
    targets: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1)
    tasks: list[str] = Field(default_factory=list, description="the task registry; index = task id")

    @model_validator(mode="after")
    def _groups(self) -> TMoLESettings:
        if self.n_embedding + self.n_shared == 0 or self.n_generative + self.n_shared == 0:
            raise ValueError("each branch needs at least one expert (its own group or shared ones)")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError("task names must be unique")
        return self

    @property
    def n_experts(self) -> int:
        return self.n_embedding + self.n_shared + self.n_generative

    def task_id(self, name: str) -> int:
        try:
            return self.tasks.index(name)
        except ValueError:
            raise KeyError(f"task {name!r} is not in the model's task registry {self.tasks}") from None


def branch_masks(s: TMoLESettings) -> torch.Tensor:
    """(2, N) bool: which experts each branch may route to (groups ordered embedding, shared,
    generative, as in the RecFound code)."""
    e, sh, g = s.n_embedding, s.n_shared, s.n_generative
    emb = torch.tensor([True] * (e + sh) + [False] * g)
    gen = torch.tensor([False] * e + [True] * (sh + g))
    return torch.stack([emb, gen])


@dataclass
class Route:
    """The current forward pass's routing: one task id and one branch per sequence."""

    task_ids: torch.Tensor  # (B,) long
    branch: torch.Tensor  # (B,) long, Branch values


class RoutingState:
    """Shared by every TMoLE layer of a model: set once per forward pass (`with routed(...)`)."""

    def __init__(self):
        self.route: Route | None = None


class TMoLELinear(nn.Module):
    def __init__(self, base: nn.Linear, s: TMoLESettings, state: RoutingState, tasks: nn.Embedding):
        super().__init__()
        self.base_layer = base
        n, r = s.n_experts, s.r
        self.n, self.r, self.scaling = n, r, s.alpha / r
        self.tmole_A = nn.Parameter(torch.empty(n * r, base.in_features))
        self.tmole_B = nn.Parameter(torch.zeros(base.out_features, n * r))  # starts as the base layer
        for j in range(n):  # each expert's A as peft initialises LoRA's A
            nn.init.kaiming_uniform_(self.tmole_A[j * r : (j + 1) * r], a=math.sqrt(5))
        if s.router_layers == 1:
            self.tmole_router = nn.Linear(s.task_dim, n)
        else:
            self.tmole_router = nn.Sequential(
                nn.Linear(s.task_dim, s.task_dim), nn.GELU(), nn.Linear(s.task_dim, n)
            )
        self.dropout = nn.Dropout(s.dropout) if s.dropout else nn.Identity()
        self.register_buffer("masks", branch_masks(s), persistent=False)
        # shared objects, not submodules: the task table belongs to the model, the state to no one
        object.__setattr__(self, "_state", state)
        object.__setattr__(self, "_tasks", tasks)

    def gates(self, route: Route) -> torch.Tensor:
        """Eq. 1: (B, N) routing distribution per sample."""
        logits = self.tmole_router(self._tasks(route.task_ids)).float()
        allowed = self.masks[route.branch]
        return torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)

    def delta(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """Eq. 2's sum over experts as two matmuls: gates scale each expert's r middle columns.
        `alpha / r` is folded into the gates, so the (tokens, d_out) output is never scaled."""
        h = F.linear(self.dropout(x), self.tmole_A.to(x.dtype))  # (B, T, N*r)
        g = (gates * self.scaling).to(h.dtype).repeat_interleave(self.r, dim=-1)  # (B, N*r)
        h = h * (g[:, None, :] if h.dim() == 3 else g)
        return F.linear(h, self.tmole_B.to(x.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        route = self._state.route
        if route is None:
            raise RuntimeError("a TMoLE model was called without a route: wrap the call in `routed(...)`")
        if route.task_ids.shape[0] != x.shape[0]:
            raise RuntimeError(f"route has {route.task_ids.shape[0]} samples, the batch {x.shape[0]}")
        if torch.is_autocast_enabled(x.device.type):
            # cast once for both products: autocast would cast x for each of them
            x = x.to(torch.get_autocast_dtype(x.device.type))
        return self.base_layer(x) + self.delta(x, self.gates(route))

    @torch.no_grad()
    def merged_weight(self, task_id: int, branch: Branch) -> torch.Tensor:
        """W_0 + sum_j v_j B_j A_j * scaling for one fixed route (for `merge_into_base`)."""
        dev = self.tmole_A.device
        v = self.gates(Route(torch.tensor([task_id], device=dev), torch.tensor([int(branch)], device=dev)))[0]
        g = v.repeat_interleave(self.r)  # (N*r,)
        return self.base_layer.weight + (self.tmole_B * g[None, :]) @ self.tmole_A * self.scaling


class TMoLE(nn.Module):
    """The model-level part: the task table shared by every layer, and the routing state."""

    def __init__(self, settings: TMoLESettings):
        super().__init__()
        if not settings.tasks:
            raise ValueError("TMoLE needs a task registry (settings.tasks)")
        self.settings = settings
        self.tmole_tasks = nn.Embedding(len(settings.tasks), settings.task_dim)
        nn.init.normal_(self.tmole_tasks.weight, std=1.0 / math.sqrt(settings.task_dim))
        self.state = RoutingState()

    def wrap(self, backbone: nn.Module) -> int:
        """Replace every targeted linear of `backbone` by a TMoLELinear; returns how many."""
        wanted = set(self.settings.targets)
        found = [
            (n, m)
            for n, m in backbone.named_modules()
            if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in wanted
        ]
        names = {n.rsplit(".", 1)[-1] for n, _ in found}
        missing = sorted(wanted - names)
        if missing:
            raise ValueError(f"TMoLE targets {missing} match no linear layer of the backbone")
        for name, module in found:
            parent = backbone.get_submodule(name.rsplit(".", 1)[0]) if "." in name else backbone
            setattr(
                parent,
                name.rsplit(".", 1)[-1],
                TMoLELinear(module, self.settings, self.state, self.tmole_tasks),
            )
        return len(found)

    def route(self, task_ids: list[int], branch: Branch | list[Branch]) -> Route:
        dev = self.tmole_tasks.weight.device
        branches = [int(branch)] * len(task_ids) if isinstance(branch, Branch) else [int(b) for b in branch]
        return Route(torch.tensor(task_ids, device=dev, dtype=torch.long), torch.tensor(branches, device=dev))


class routed:
    """`with routed(tmole, route): model(...)` sets the route of every TMoLE layer for one pass."""

    def __init__(self, tmole: TMoLE | None, route: Route | None):
        self.tmole, self.route = tmole, route

    def __enter__(self):
        if self.tmole is not None:
            self.previous = self.tmole.state.route
            self.tmole.state.route = self.route

    def __exit__(self, *exc):
        if self.tmole is not None:
            self.tmole.state.route = self.previous
        return False


@torch.no_grad()
def merge_into_base(backbone: nn.Module, task_id: int, branch: Branch = Branch.EMBEDDING) -> int:
    """Fold one fixed route into the base weights: every TMoLELinear becomes a plain nn.Linear whose
    weight is W_0 + sum_j v_j B_j A_j * scaling (fast inference for one task). Returns how many."""
    layers = [(n, m) for n, m in backbone.named_modules() if isinstance(m, TMoLELinear)]
    for name, layer in layers:
        base = layer.base_layer
        merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
        merged = merged.to(device=base.weight.device, dtype=base.weight.dtype)
        merged.weight.copy_(layer.merged_weight(task_id, branch).to(base.weight.dtype))
        if base.bias is not None:
            merged.bias.copy_(base.bias)
        merged.requires_grad_(False)
        parent = backbone.get_submodule(name.rsplit(".", 1)[0]) if "." in name else backbone
        setattr(parent, name.rsplit(".", 1)[-1], merged)
    return len(layers)
