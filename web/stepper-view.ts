/**
 * Stepping through a scenario: its lines with their outcome (a failing expectation is marked
 * at its line from the start), first / back / forward / last (also ← and →), the last line's
 * result against its expectation, what it changed (counts, types, entries, TLB contents,
 * vCPUs, domains) and every vCPU's TLB.
 */

import type { Api } from "./api.js";
import { el, hex, shortVa } from "./dom.js";
import type { StateDiff, StepView, TlbView } from "./protocol.js";

export class StepperView {
  private readonly list = el("ol", { id: "lines", class: "lines" });
  private readonly result = el("div", { id: "step-result", class: "step-result" });
  private readonly changes = el("div", { id: "step-diff", class: "diff" });
  private readonly tlb = el("div", { id: "tlb", class: "tlb" });
  private readonly where = el("span", { id: "step-where" });
  private view: StepView | undefined;
  private busy = false;

  constructor(
    readonly root: HTMLElement,
    private readonly api: Api,
    private readonly onMoved: (v: StepView) => Promise<void>,
  ) {
    const button = (id: string, label: string, title: string, to: () => number) => {
      const b = el("button", { id, title }, label);
      b.addEventListener("click", () => void this.goto(to()));
      return b;
    };
    const at = () => this.view?.position ?? 0;
    const controls = el(
      "div",
      { class: "step-controls" },
      button("step-first", "«", "back to the start", () => 0),
      button("step-prev", "◀", "one line back (←)", () => Math.max(0, at() - 1)),
      button("step-next", "▶", "one line forward (→)", () => at() + 1),
      button("step-last", "»", "run to the end", () => this.view?.total ?? 0),
      this.where,
    );
    document.addEventListener("keydown", (e) => {
      if ((e.target as HTMLElement).tagName === "INPUT") return;
      if (e.key === "ArrowRight") void this.goto(at() + 1);
      if (e.key === "ArrowLeft") void this.goto(Math.max(0, at() - 1));
    });
    root.append(
      controls,
      el(
        "div",
        { class: "step-cols" },
        this.list,
        el("div", { class: "step-side" }, this.result, this.changes, el("h4", {}, "TLB contents"), this.tlb),
      ),
    );
  }

  async load(): Promise<StepView> {
    const v = await this.api.scenario();
    this.render(v);
    return v;
  }

  async goto(position: number): Promise<void> {
    if (this.busy || !this.view || position > this.view.total) return;
    this.busy = true;
    this.root.dataset.busy = "1";
    try {
      const v = await this.api.goto(position);
      this.render(v);
      await this.onMoved(v);
    } finally {
      this.busy = false;
      delete this.root.dataset.busy;
    }
  }

  private render(v: StepView): void {
    this.view = v;
    this.root.dataset.position = String(v.position);
    this.where.textContent = `${v.position} / ${v.total} lines run · audit ${v.audit.ok ? "clean" : "FAILS"}`;
    this.list.replaceChildren(
      ...v.lines.map((l, i) => {
        const li = el(
          "li",
          {
            class: `line ${l.status}${i < v.position ? " done" : ""}${i === v.position - 1 ? " current" : ""}`,
            "data-line": l.line,
            "data-status": l.status,
            title: l.status === "fail" ? "this line's expectation fails" : "",
          },
          el("span", { class: "lno" }, String(l.line)),
          el("code", {}, l.text),
        );
        li.addEventListener("click", () => void this.goto(i + 1));
        return li;
      }),
    );
    this.list.querySelector(".current")?.scrollIntoView({ block: "nearest" });
    const last = v.last;
    this.result.replaceChildren(
      last
        ? el(
            "div",
            { class: `result ${last.ok ? "ok" : "fail"}`, "data-ok": String(last.ok) },
            el(
              "div",
              {},
              `line ${last.line}: ${last.op} — ${last.error ? "cannot run" : last.ok ? "as expected" : "expectation FAILS"}`,
            ),
            last.error ? el("pre", {}, last.error) : null,
            last.expected !== undefined ? el("pre", {}, `expected ${JSON.stringify(last.expected)}`) : null,
            last.actual !== undefined ? el("pre", {}, `actual   ${JSON.stringify(last.actual)}`) : null,
          )
        : el("p", { class: "muted" }, "nothing run yet: step forward (▶ or →)"),
      el(
        "div",
        { class: "result fail", hidden: v.audit.ok },
        "audit:",
        el("pre", {}, v.audit.problems.join("\n")),
      ),
    );
    this.changes.replaceChildren(...diffNodes(v.diff));
    this.tlb.replaceChildren(...tlbNodes(v.tlb));
  }
}

function diffNodes(d: StateDiff | undefined): HTMLElement[] {
  if (!d) return [];
  const out: HTMLElement[] = [el("h4", {}, "what this line changed")];
  const table = (id: string, head: string[], rows: (string | number | boolean)[][]) =>
    el(
      "table",
      { class: "changes", id },
      el("tr", {}, ...head.map((h) => el("th", {}, h))),
      ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, String(c))))),
    );
  if (d.frames.length) {
    out.push(
      table(
        "diff-frames",
        ["frame", "field", "before", "after"],
        d.frames.map((c) => [hex(c.mfn), c.field, c.before, c.after]),
      ),
    );
  }
  if (d.entries.length) {
    out.push(
      table(
        "diff-entries",
        ["frame", "entry", "before", "after"],
        d.entries.map((c) => [`${hex(c.mfn)} (${c.class})`, c.index, c.before, c.after]),
      ),
    );
  }
  for (const t of d.tlb) {
    const rows = [
      ...t.added.map((e) => ["+", shortVa(e.va), shortVa(e.pa), e.size, e.perm]),
      ...t.removed.map((e) => ["−", shortVa(e.va), shortVa(e.pa), e.size, e.perm]),
    ];
    out.push(
      el("div", {}, `TLB of d${t.domid} vCPU ${t.vcpu}`),
      table(`diff-tlb-${t.domid}-${t.vcpu}`, ["", "va", "pa", "size", "rights"], rows),
    );
  }
  const fields = [...d.vcpus, ...d.domains];
  if (fields.length) {
    out.push(
      table(
        "diff-fields",
        ["who", "field", "before", "after"],
        fields.map((c) => [
          `d${c.domid}${c.vcpu !== undefined ? ` vCPU ${c.vcpu}` : ""}`,
          c.field,
          c.before,
          c.after,
        ]),
      ),
    );
  }
  if (out.length === 1) out.push(el("p", { class: "muted" }, "nothing in the host's state"));
  if (d.truncated) out.push(el("p", { class: "muted" }, "(lists cut at 500 items)"));
  return out;
}

function tlbNodes(tlbs: TlbView[]): HTMLElement[] {
  return tlbs.map((t) =>
    el(
      "details",
      { open: t.entries.length > 0 && t.entries.length <= 16, "data-vcpu": `${t.domid}:${t.vcpu}` },
      el("summary", {}, `d${t.domid} vCPU ${t.vcpu}: ${t.entries.length} entries`),
      el(
        "pre",
        {},
        t.entries
          .map((e) => `${shortVa(e.va)} → ${shortVa(e.pa)}  ${e.size / 1024} KiB  ${e.perm}`)
          .join("\n"),
      ),
    ),
  );
}
