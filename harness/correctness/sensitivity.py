"""How much a model's greedy output depends on its context: the property that lets a token-level
check see attention and KV-cache bugs. Measured on HF's own forward (no engine of this suite).

- changed: of N seeded prompts, how many generate different tokens when one early prompt token
  (position 1) is changed;
- dependence: teacher-forced on the original output, the share of generated positions whose greedy
  choice changes with that one early token (1.0: every generated token still depends on it);
- distinct: distinct tokens per generated token (a model that repeats one token scores ~1/n);
- zero_attention_changed: how many prompts generate different tokens with every attention output
  replaced by zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.models import LoadedModel


@dataclass(frozen=True)
class Sensitivity:
    prompts: int
    new_tokens: int
    changed: int
    dependence: float
    distinct: float
    zero_attention_changed: int

    def line(self, name: str) -> str:
        return (
            f"{name}: one early prompt token changed -> output changed for {self.changed}/{self.prompts} prompts, "
            f"{self.dependence:.0%} of generated tokens depend on it; {self.distinct:.0%} distinct tokens; "
            f"attention zeroed -> output changed for {self.zero_attention_changed}/{self.prompts}"
        )


def _greedy(model: torch.nn.Module, prompt: list[int], new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt], device=model.device)
    out = model.generate(
        ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, eos_token_id=None
    )
    return out[0, len(prompt) :].tolist()


def _choices(model: torch.nn.Module, prompt: list[int], forced: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt + forced[:-1]], device=model.device)
    return model(input_ids=ids).logits[0, len(prompt) - 1 :].argmax(dim=-1)


def _zero_attention(model: torch.nn.Module) -> list:
    """Forward hooks replacing every attention module's output with zeros (removed by the caller)."""
    return [
        layer.self_attn.register_forward_hook(lambda mod, args, out: (torch.zeros_like(out[0]), *out[1:]))
        for layer in model.model.layers
    ]


@torch.inference_mode()
def context_sensitivity(
    loaded: LoadedModel, prompts: int = 8, new_tokens: int = 32, prompt_range: tuple[int, int] = (8, 64), seed: int = 1
) -> Sensitivity:
    model, vocab = loaded.model, loaded.spec.vocab_size
    rng = np.random.default_rng(seed)
    changed = zero_changed = 0
    dependence, distinct = [], []
    for _ in range(prompts):
        prompt = [int(t) for t in rng.integers(1, vocab, size=int(rng.integers(prompt_range[0], prompt_range[1] + 1)))]
        other = list(prompt)
        other[1] = prompt[1] % (vocab - 1) + 1  # a different token at position 1
        out = _greedy(model, prompt, new_tokens)
        changed += _greedy(model, other, new_tokens) != out
        dependence.append(float((_choices(model, prompt, out) != _choices(model, other, out)).float().mean()))
        distinct.append(len(set(out)) / len(out))
        hooks = _zero_attention(model)
        try:
            zero_changed += _greedy(model, prompt, new_tokens) != out
        finally:
            for hook in hooks:
                hook.remove()
    return Sensitivity(prompts, new_tokens, changed, sum(dependence) / prompts, sum(distinct) / prompts, zero_changed)
