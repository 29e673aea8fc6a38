"""``Table`` -> Markdown, LaTeX (booktabs, best per column in bold) and HTML (every number carries
its MLflow run ids)."""
from __future__ import annotations

import html
import re
from collections.abc import Callable

from nirbench.harness.results.table import Column, Table


# ============================================================== renderers
def to_markdown(table: Table) -> str:
    header = table.header()
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for labels, row in zip(table.rows, table.cells):
        lines.append("| " + " | ".join(list(labels) + [c.full for c in row]) + " |")
    return "\n".join(lines)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
          "^": r"\textasciicircum{}", "±": r"$\pm$", "Δ": r"$\Delta$", "−": "--",
          "–": "--", "∞": r"$\infty$", "ρ": r"$\rho$", "π": r"$\pi$", "σ": r"$\sigma$",
          "κ": r"$\kappa$", "²": r"$^2$", "<": r"$<$", ">": r"$>$", "†": r"\dag{}",
          "‡": r"\ddag{}", "λ": r"$\lambda$", "·": r"$\cdot$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); the best cell of each ranked column bold."""
    best = table.best()
    n_labels = len(table.label_names)
    lines = [r"\begin{table}[ht]", r"\centering", rf"\caption{{{latex_escape(table.caption)}}}",
             rf"\label{{tab:{re.sub(r'[^A-Za-z0-9:-]', '-', table.name)}}}",
             r"\begin{tabular}{" + "l" * n_labels + "c" * len(table.columns) + "}", r"\toprule"]
    spans = _group_spans(table.columns)
    if any(group for group, _, _ in spans):
        head, rules = [""] * n_labels, []
        for group, start, stop in spans:
            head.append(rf"\multicolumn{{{stop - start}}}{{c}}{{{latex_escape(group)}}}")
            if group:
                rules.append(rf"\cmidrule(lr){{{n_labels + start + 1}-{n_labels + stop}}}")
        lines += [" & ".join(head) + r" \\", " ".join(rules)]
    lines.append(" & ".join(latex_escape(t) for t in list(table.label_names)
                            + [c.title for c in table.columns]) + r" \\")
    lines.append(r"\midrule")
    for i, (labels, row) in enumerate(zip(table.rows, table.cells)):
        texts = [latex_escape(c.text) for c in row]
        texts = [rf"\textbf{{{t}}}" if (i, j) in best else t for j, t in enumerate(texts)]
        texts = [t + (rf" {{\scriptsize {latex_escape(c.detail)}}}" if c.detail else "")
                 for t, c in zip(texts, row)]
        lines.append(" & ".join([latex_escape(x) for x in labels] + texts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.note:
        lines.append(rf"\par\smallskip{{\footnotesize {latex_escape(table.note)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines)


def to_html(table: Table, link: Callable[[tuple[str, ...]], str | None] | None = None) -> str:
    """A <table> fragment. Every number carries its MLflow run ids (title and data-runs);
    ``link`` turns run ids into an href (the report links to its runs section)."""
    best = table.best()
    e = html.escape
    spans = _group_spans(table.columns)
    grouped = any(group for group, _, _ in spans)
    out = [f'<div class="scroll"><table class="results" id="table-{e(table.name)}">',
           f"<caption>{e(table.caption)}</caption>", "<thead>"]
    if grouped:
        out.append("<tr>" + "".join(f'<th rowspan="2">{e(n)}</th>' for n in table.label_names)
                   + "".join(f'<th colspan="{b - a}" class="group">{e(g)}</th>'
                             for g, a, b in spans) + "</tr>")
        out.append("<tr>" + "".join(f"<th>{e(c.title)}</th>" for c in table.columns) + "</tr>")
    else:
        out.append("<tr>" + "".join(f"<th>{e(t)}</th>" for t in table.header()) + "</tr>")
    out.append("</thead><tbody>")
    for i, (labels, row) in enumerate(zip(table.rows, table.cells)):
        tds = []
        for j, cell in enumerate(row):
            cls = " ".join(filter(None, ("num", "best" if (i, j) in best else "", cell.css)))
            text = e(cell.text)
            if (i, j) in best:
                text = f"<b>{text}</b>"
            href = link(cell.run_ids) if (link and cell.run_ids) else None
            if href:
                text = f'<a href="{e(href)}">{text}</a>'
            if cell.detail:
                text += f'<br><small class="detail">{e(cell.detail)}</small>'
            attrs = f' title="{e(cell.title)}"' if cell.title else ""
            attrs += f' data-runs="{e(" ".join(cell.run_ids))}"' if cell.run_ids else ""
            tds.append(f'<td class="{cls}"{attrs}>{text}</td>')
        out.append("<tr>" + "".join(f'<th scope="row">{e(x)}</th>' for x in labels)
                   + "".join(tds) + "</tr>")
    out.append("</tbody></table></div>")
    if table.note:
        out.append(f'<p class="note">{e(table.note)}</p>')
    return "\n".join(out)


def _group_spans(columns: tuple[Column, ...]) -> list[tuple[str, int, int]]:
    spans: list[tuple[str, int, int]] = []
    for j, column in enumerate(columns):
        if spans and spans[-1][0] == column.group:
            spans[-1] = (column.group, spans[-1][1], j + 1)
        else:
            spans.append((column.group, j, j + 1))
    return spans


def html_page(title: str, body: str) -> str:
    """A standalone page for the HTML exports (no external resources)."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>'
            f"{html.escape(title)}</title><style>{TABLE_CSS}</style></head><body>\n{body}\n"
            f"</body></html>\n")


TABLE_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em; color: #222; }
table.results { border-collapse: collapse; margin: 0.8em 0 0.2em; font-size: 0.88em; }
table.results caption { text-align: left; font-weight: 600; padding-bottom: 0.3em; }
table.results th, table.results td { padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; }
table.results thead th { border-bottom: 2px solid #444; background: #f5f5f5; }
table.results td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.results td.best { background: #eef6ee; }
table.results th[scope=row] { text-align: left; font-weight: normal; white-space: nowrap; }
table.results a { color: inherit; text-decoration: none; border-bottom: 1px dotted #888; }
table.results td.num[class*="verdict-"] { white-space: normal; text-align: left; min-width: 7em; }
td.verdict-helps { color: #1d7a32; font-weight: 600; }
td.verdict-hurts { color: #b2262b; font-weight: 600; }
td.verdict-higher, td.verdict-lower { color: #1f4e9c; font-weight: 600; }
td.verdict-equivalent { color: #5b4a9c; font-weight: 600; }
td.verdict-inconclusive { color: #666; }
div.scroll { overflow-x: auto; max-width: 100%; }
table.results small.detail { color: #666; font-size: 0.82em; }
p.note { font-size: 0.8em; color: #555; max-width: 70em; margin-top: 0.2em; }
"""
