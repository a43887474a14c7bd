"""Re-pin tests/data/pinned_shipped.json after a deliberate refit of a shipped file (run from the repo root:
`python tests/data/repin_shipped.py`). Passage scores, kept passages and citations must not move; it writes the new
`supported` / `support` and prints old -> new."""
import json
from pathlib import Path
import sys
sys.path.insert(0, str(Path(".").resolve()))
from at2_rag import AT2Attributor
from at2_rag.demo import hotpot_items
from at2_rag.eval.hotpotqa import load_hotpotqa
from conftest import DATA
path = Path("tests/data/pinned_shipped.json")
pinned = json.loads(path.read_text())
attributor = AT2Attributor.from_pretrained()
items = {item.label: item for item in hotpot_items(load_hotpotqa(DATA / "validation.jsonl", limit=4))}
for row in pinned:
    item = items[row["id"]]
    cited = attributor.cite(item.question, item.passages, response=item.answer)
    pruned = attributor.prune(item.question, item.passages, response=item.answer, top_n=2)
    assert pruned.indices == row["kept"]
    new = [{"start": c.start, "end": c.end, "supported": c.supported, "support": round(c.support, 6),
            "cited": [[p.index, [s.index for s in p.sentences]] for p in c.passages]} for c in cited.citations]
    for n, o in zip(new, row["citations"], strict=True):
        print(row["id"], o["supported"], "->", n["supported"], o["support"], "->", n["support"], o["cited"] == n["cited"] or (o["cited"], n["cited"]))
    row["citations"] = new
path.write_text(json.dumps(pinned, indent=1) + "\n")
