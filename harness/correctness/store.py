"""HF's side of the output check, kept on disk between runs: the calibration (HF's own disagreement on
the probe) and every output already verified against HF's teacher-forced logits, with its accepted
near-ties. A later run of the same model on the same machine skips HF's forwards for them; the engine
under test still runs every probe and every round.

The key is everything that could change HF's answer: the weights themselves (a fingerprint of every
tensor's shape, sum and sum of squares, so another seed, checkpoint or corruption is another key),
the dtype, the device, the CPU or GPU name, the thread count (it orders a sum), the torch and
transformers versions, the probe's prompts, and the library HF's cached loop multiplies with while it
calibrates (onednn.library: on the seeded qwen3-0.6b their disagreements with HF's one forward
differ tenfold, calibrate.py). One JSON file per key in `<cache>/checks/`
(LLM_PERF_CACHE, default ~/.cache/llm-perf-suite), written atomically; a file that cannot be read is
named in a warning and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch

from harness.checkpoints import cache_root
from harness.engines import onednn
from harness.files import write_json_atomic
from harness.hardware import cpu_model_name

VERSION = 4  # of the file's layout and what the calibration measures (2: through oneDNN; 3: order; 4: loop's tokens)


def model_key(loaded) -> str:
    """A digest of what HF's reference answers depend on (see the module text)."""
    import transformers

    from harness.correctness.probe import probe_for

    h = hashlib.sha256()
    device = loaded.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model_name()
    versions = (torch.__version__, transformers.__version__, torch.get_num_threads())  # threads: a sum's order
    loop_library = onednn.library(device, loaded.model.dtype)
    h.update(repr((VERSION, loaded.dtype, device.type, name, *versions, loop_library)).encode())
    h.update(repr([r.prompt_ids for r in probe_for(loaded.spec)]).encode())  # what the calibration ran
    with torch.no_grad():
        for pname, p in loaded.model.state_dict().items():
            x = p.detach().double()
            h.update(repr((pname, tuple(p.shape), str(p.dtype), x.sum().item(), x.square().sum().item())).encode())
    return h.hexdigest()[:32]


class CheckStore:
    """The calibration and the verified outputs of one model key; save() writes them back."""

    def __init__(self, key: str, folder: Path | None = None) -> None:
        self.path = (folder or cache_root() / "checks") / f"{key}.json"
        self.calibration: dict | None = None
        self.verified: dict[tuple[tuple[int, ...], tuple[int, ...]], list[tuple[int, float]]] = {}
        self._load()
        self._saved = (self.calibration, len(self.verified))

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            doc = json.loads(self.path.read_text())
            calibration, verified = doc["calibration"], doc["verified"]
            self.verified = {(tuple(p), tuple(t)): [(int(i), float(g)) for i, g in ties] for p, t, ties in verified}
            self.calibration = calibration
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.warn(f"{self.path}: cannot be read ({exc}); the output check rebuilds it", stacklevel=2)
            self.calibration, self.verified = None, {}

    def save_if_changed(self) -> None:
        state = (self.calibration, len(self.verified))
        if state != self._saved:
            self.save()
            self._saved = state

    def save(self) -> None:
        rows = [[list(p), list(t), [list(tie) for tie in ties]] for (p, t), ties in self.verified.items()]
        write_json_atomic(self.path, {"version": VERSION, "calibration": self.calibration, "verified": rows})
