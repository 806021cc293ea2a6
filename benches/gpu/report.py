"""Markdown tables from one run of benches/gpu/run.sh on a GPU host, for benches/RESULTS.md.

Reads from DIR (any may be missing): facerec-wgpu.json (facerec bench models; its rows and
those of facerec-wgpu-host-prep.json, the pipeline pre-processed on the CPU), torch-fp32.json,
torch-fp32-upload.json (inputs copied to the GPU inside the timer) and torch-fp16.json
(benches/torch/peer.py), env.json (GPU, driver, date; run.sh). Prints per net and batch
facerec's items/s, PyTorch eager's, and the ratio facerec / PyTorch.

usage: python3 benches/gpu/report.py DIR
"""
import argparse
import json
import os
import sys

NET_ORDER = ["recognition", "ssd", "tiny", "landmarks", "pipeline", "pipeline_host_prep", "search", "search_gpu", "search_cpu"]
# facerec's name of a row -> the PyTorch peer's name for the same work
PEER_NAME = {"search_gpu": "search"}
FILES = {"facerec": "facerec-wgpu.json", "torch_f32": "torch-fp32.json",
         "torch_f32_upload": "torch-fp32-upload.json", "torch_f16": "torch-fp16.json"}
# Optional facerec rows merged into facerec-wgpu.json's (not reported missing when absent).
EXTRA_FACEREC = "facerec-wgpu-host-prep.json"
GOAL_BATCH = 64  # the goal: facerec at or above PyTorch eager at batch >= 64


def load(path):
    """The parsed JSON at `path`, or None when the file is missing."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def index(doc, dtype=None):
    """{(net, batch): items_per_s} of a result file's rows (of one dtype if given)."""
    if not doc:
        return {}
    return {(r["net"], int(r["batch"])): float(r["items_per_s"]) for r in doc.get("results", [])
            if dtype is None or r.get("dtype", "f32") == dtype}


def peer_index(doc, dtype, facerec_nets):
    """index() of a PyTorch file, its rows renamed to facerec's name for the same work
    (`search` -> `search_gpu` where facerec reports that)."""
    rename = {peer: ours for ours, peer in PEER_NAME.items() if ours in facerec_nets}
    return {(rename.get(n, n), b): v for (n, b), v in index(doc, dtype).items()}


def fmt(v):
    if v is None:
        return "—"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "—"


def net_key(net):
    return (NET_ORDER.index(net) if net in NET_ORDER else len(NET_ORDER), net)


def header(docs, env):
    """The lines naming the machine, the tools and the run."""
    lines = []
    fr, tf = docs["facerec"], docs["torch_f32"] or docs["torch_f16"]
    if env:
        lines.append(f"GPU: {env.get('gpu')}, driver {env.get('driver')}; run {env.get('date')}"
                     + (f"; facerec @ {env['revision']}" if env.get("revision") else ""))
    if fr:
        lines.append(f"facerec: backend {fr.get('backend')}, adapter {fr.get('adapter')}")
    if tf:
        s = tf.get("settings", {})
        lines.append(f"PyTorch eager: torch {tf.get('torch')} on {tf.get('device')}; TF32 "
                     f"{'on' if s.get('tf32') else 'off'}, cudnn.benchmark "
                     f"{'on' if s.get('cudnn_benchmark') else 'off'}; timed: {s.get('timed')}")
    return lines


def table(docs):
    """Rows per (net, batch): facerec f32, PyTorch f32, ratio; f16 columns where measured."""
    fr32, fr16 = index(docs["facerec"], "f32"), index(docs["facerec"], "f16")
    ours = {n for n, _ in fr32} | {n for n, _ in fr16}
    t32, t16 = peer_index(docs["torch_f32"], "f32", ours), peer_index(docs["torch_f16"], "f16", ours)
    t32u = peer_index(docs["torch_f32_upload"], "f32", ours)
    cols = [("facerec wgpu f32 (items/s)", lambda k: fmt(fr32.get(k))),
            ("PyTorch eager f32 (items/s)", lambda k: fmt(t32.get(k))),
            ("facerec / PyTorch f32", lambda k: ratio(fr32.get(k), t32.get(k)))]
    if t32u:
        cols += [("PyTorch f32 incl. input upload (items/s)", lambda k: fmt(t32u.get(k))),
                 ("facerec / PyTorch f32 incl. upload", lambda k: ratio(fr32.get(k), t32u.get(k)))]
    if fr16:
        cols.append(("facerec wgpu f16 (items/s)", lambda k: fmt(fr16.get(k))))
    if t16:
        cols.append(("PyTorch eager f16 (items/s)", lambda k: fmt(t16.get(k))))
    if fr16 and t16:
        cols.append(("facerec / PyTorch f16", lambda k: ratio(fr16.get(k), t16.get(k))))
    keys = sorted(set(fr32) | set(fr16) | set(t32) | set(t32u) | set(t16), key=lambda k: (net_key(k[0]), k[1]))
    out = ["| net | batch | " + " | ".join(c for c, _ in cols) + " |",
           "| --- | ---: |" + " ---: |" * len(cols)]
    out += [f"| {k[0]} | {k[1]} | " + " | ".join(f(k) for _, f in cols) + " |" for k in keys]
    return out


def goal(docs):
    """The goal, f32 at batch >= 64, over the (net, batch) pairs both sides measured:
    against PyTorch with inputs resident and, where measured, with the upload timed too."""
    fr = index(docs["facerec"], "f32")
    ours = {n for n, _ in fr}
    lines = []
    for key, what in (("torch_f32", "PyTorch eager f32"), ("torch_f32_upload", "PyTorch eager f32 incl. upload")):
        if docs[key] is None and key == "torch_f32_upload":
            continue
        t = peer_index(docs[key], "f32", ours)
        pairs = sorted((k for k in fr if k in t and k[1] >= GOAL_BATCH), key=lambda k: (net_key(k[0]), k[1]))
        head = f"Goal (facerec >= {what} at batch >= {GOAL_BATCH})"
        if not pairs:
            lines.append(f"{head}: not measured.")
            continue
        behind = [f"{n}@{b} {fr[(n, b)] / t[(n, b)]:.2f}x" for n, b in pairs if fr[(n, b)] < t[(n, b)]]
        line = f"{head}: met for {len(pairs) - len(behind)} of {len(pairs)} net/batch pairs"
        lines.append(line + (f"; behind: {', '.join(behind)}." if behind else "."))
    return lines


def fp16_accuracy(docs):
    acc = (docs["torch_f16"] or {}).get("fp16_vs_fp32_rel_diff")
    if not acc:
        return []
    parts = ", ".join(f"{n} {v:.1e}" for n, v in sorted(acc.items(), key=lambda kv: net_key(kv[0])))
    return [f"PyTorch fp16 vs fp32 on the real inputs (max abs diff / max |output|): {parts}."]


def report(folder):
    """The markdown text for the run in `folder`."""
    docs = {k: load(os.path.join(folder, f)) for k, f in FILES.items()}
    env = load(os.path.join(folder, "env.json"))
    extra = load(os.path.join(folder, EXTRA_FACEREC))
    if extra:
        docs["facerec"] = docs["facerec"] or {k: v for k, v in extra.items() if k != "results"}
        docs["facerec"]["results"] = docs["facerec"].get("results", []) + extra.get("results", [])
    missing = [f for k, f in FILES.items() if docs[k] is None]
    lines = header(docs, env)
    if missing:
        lines.append(f"Missing from this run: {', '.join(missing)}.")
    lines.append("")
    lines += table(docs)
    lines.append("")
    lines += goal(docs) + fp16_accuracy(docs)
    if any(r["net"] in PEER_NAME for r in (docs["facerec"] or {}).get("results", [])):
        lines.append("PyTorch column of " + ", ".join(f"`{a}`: the peer's `{b}`" for a, b in PEER_NAME.items())
                     + " (exact nearest of each query among the same number of rows).")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="the folder of a GPU run's JSON files ($OUT of run.sh, default gpu-out)")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.dir):
        ap.error(f"not a folder: {args.dir}")
    sys.stdout.write(report(args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
