"""Throughput versus worker concurrency, as a small dependency-free SVG.

Usage: python3 bench/plot.py SWEEP.jsonl OUT.svg
"""
import json
import math
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows.sort(key=lambda r: r["concurrency"])
W, H, L, B, T, R = 640, 400, 70, 50, 40, 20
xs = [math.log2(r["concurrency"]) for r in rows]
ys = [r["tasks_per_sec"] for r in rows]
xmax = max(xs) or 1
ymax = max(ys) * 1.15 or 1


def px(x):
    return L + (W - L - R) * x / xmax


def py(y):
    return H - B - (H - B - T) * y / ymax


parts = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
    f'<rect width="{W}" height="{H}" fill="white"/>',
    f'<text x="{W/2}" y="22" text-anchor="middle" font-size="14">chit end to end (noop tasks, stored in SQLite): tasks/s by worker concurrency</text>',
    f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
    f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
    f'<text x="{W/2}" y="{H-12}" text-anchor="middle">worker concurrency (log scale)</text>',
    f'<text x="16" y="{H/2}" text-anchor="middle" transform="rotate(-90 16 {H/2})">tasks/s</text>',
]
for i in range(6):
    y = ymax * i / 5
    parts.append(f'<line x1="{L-4}" y1="{py(y):.1f}" x2="{W-R}" y2="{py(y):.1f}" stroke="#ddd"/>')
    parts.append(f'<text x="{L-8}" y="{py(y)+4:.1f}" text-anchor="end">{y:,.0f}</text>')
for r, x, y in zip(rows, xs, ys):
    parts.append(f'<text x="{px(x):.1f}" y="{H-B+16}" text-anchor="middle">{r["concurrency"]}</text>')
    parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="#1f6feb"/>')
    parts.append(f'<text x="{px(x):.1f}" y="{py(y)-8:.1f}" text-anchor="middle">{y:,.0f}</text>')
pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
parts.append(f'<polyline points="{pts}" fill="none" stroke="#1f6feb" stroke-width="2"/>')
parts.append("</svg>")
open(sys.argv[2], "w").write("\n".join(parts) + "\n")
