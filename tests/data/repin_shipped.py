"""Re-pin tests/data/pinned_shipped.json after a deliberate refit of a shipped file (run from the repo root:
`python tests/data/repin_shipped.py`). Kept passages, AT2 scores and cited passages must not move; it writes the
new `supported` / `support` and prints old -> new."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from at2_rag import AT2Attributor  # noqa: E402
from conftest import PINNED, pinned_outputs  # noqa: E402

rows = []
for row, now in pinned_outputs(AT2Attributor.from_pretrained()):
    assert now["kept"] == row["kept"], (row["id"], row["kept"], now["kept"])
    for old, new in zip(row["citations"], now["citations"], strict=True):
        assert old["cited"] == new["cited"] or not (old["supported"] and new["supported"]), (row["id"], old, new)
        print(row["id"], old["supported"], "->", new["supported"], old["support"], "->", new["support"])
    rows.append({**row, "citations": now["citations"]})
PINNED.write_text(json.dumps(rows, indent=1) + "\n")
