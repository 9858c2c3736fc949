/**
 * The page-table tree: from a vCPU's kernel or user base pointer (or a dump's CR3), each
 * table's present entries — decoded flags, target frame and its class, the linear range —
 * expanded level by level on demand down to the data pages. Self-maps, entries pointing back
 * up the path and linear (same-level) entries are back edges: marked ↺, and hovering one
 * outlines the table it points back to. Grant PTEs and what Xen rewrote are shown per entry.
 * Searching a virtual address walks it and opens the tree along the walk.
 */

import type { Api } from "./api.js";
import { bytesText, el, hex, shortVa } from "./dom.js";
import type { EntryChange, EntryView, RootView, TableView, WalkView } from "./protocol.js";

const LEVEL_NAMES: Record<number, string> = { 5: "L5", 4: "L4", 3: "L3", 2: "L2", 1: "L1" };

const nodeKey = (mfn: number, level: number, va: string) => `${mfn}:${level}:${va}`;

export class TreeView {
  private readonly select = el("select", { id: "root-select", "aria-label": "page-table root" });
  private readonly vaInput = el("input", {
    id: "va-input",
    placeholder: "virtual address, e.g. 0xffff888000001000",
    spellcheck: "false",
  });
  private readonly walkOut = el("div", { id: "walk-result", class: "walk-result" });
  private readonly body = el("div", { id: "tree", class: "tree" });
  private roots: RootView[] = [];
  private readonly expanded = new Set<string>();
  private changed = new Set<string>();
  private walkMarks = new Set<string>();

  constructor(
    readonly root: HTMLElement,
    private readonly api: Api,
    private readonly onSelect: (mfn: number) => void,
  ) {
    const go = el("button", { id: "va-go", type: "submit" }, "walk");
    const form = el("form", { class: "va-form" }, this.vaInput, go);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      void this.search(this.vaInput.value.trim());
    });
    this.select.addEventListener("change", () => {
      this.expanded.clear();
      this.walkMarks.clear();
      this.walkOut.replaceChildren();
      void this.refresh();
    });
    root.append(el("div", { class: "tree-controls" }, this.select, form), this.walkOut, this.body);
  }

  private get current(): RootView | undefined {
    return this.roots[Number(this.select.value)] ?? this.roots[0];
  }

  setRoots(roots: RootView[]): void {
    const was = this.current?.label;
    this.roots = roots;
    this.select.replaceChildren(...roots.map((r, i) => el("option", { value: i }, r.label)));
    const keep = roots.findIndex((r) => r.label === was);
    this.select.value = String(Math.max(keep, 0));
    if (keep < 0) this.expanded.clear();
  }

  /** Entries the last step changed, to highlight. */
  setChanged(entries: EntryChange[]): void {
    this.changed = new Set(entries.map((e) => `${e.mfn}:${e.index}`));
  }

  /** Draw the tree again (after a step): the same tables open as before. */
  async refresh(): Promise<void> {
    const r = this.current;
    if (!r) {
      this.body.replaceChildren(el("p", { class: "muted" }, "no base pointer loaded: no tree to show"));
      return;
    }
    const node = await this.tableNode(r.mfn, r.levels, "0000000000000000", []);
    this.body.replaceChildren(node);
  }

  private async tableNode(mfn: number, level: number, va: string, path: number[]): Promise<HTMLElement> {
    const t = await this.api.table(mfn, level, va, path);
    const node = el("div", { class: "tnode", "data-mfn": mfn, "data-level": level });
    node.append(this.header(t));
    const list = el("ul", { class: "entries" });
    for (const e of t.entries) list.append(await this.entryRow(t, e, [...path, mfn]));
    if (t.entries.length === 0) list.append(el("li", { class: "muted" }, "no present entry"));
    node.append(list);
    this.expanded.add(nodeKey(mfn, level, va));
    return node;
  }

  private header(t: TableView): HTMLElement {
    const bits = [
      `${LEVEL_NAMES[t.level]} ${hex(t.mfn)}`,
      t.class,
      t.owner >= 0 ? `owner d${t.owner}` : "",
      t.validated ? "validated" : "",
      t.pinned ? "pinned" : "",
      t.count || t.typeCount ? `count ${t.count}, type count ${t.typeCount}` : "",
      `${t.present} present`,
    ].filter(Boolean);
    const h = el("div", { class: "thead", "data-mfn": t.mfn }, bits.join(" · "));
    h.addEventListener("click", () => this.onSelect(t.mfn));
    return h;
  }

  private async entryRow(t: TableView, e: EntryView, path: number[]): Promise<HTMLElement> {
    const li = el("li", {
      class: `entry kind-${e.kind}`,
      "data-index": e.index,
      "data-target": e.target,
      "data-table": t.mfn,
    });
    if (this.changed.has(`${t.mfn}:${e.index}`)) li.classList.add("changed");
    if (this.walkMarks.has(`${t.mfn}:${e.index}`)) li.classList.add("walk");
    const expandable = e.kind === "table" && e.childLevel !== undefined && e.childLevel >= 1;
    const toggle = el(
      "button",
      { class: "toggle", disabled: !expandable, title: expandable ? "expand" : "" },
      expandable ? "▸" : "·",
    );
    const badges: (HTMLElement | string)[] = [];
    if (e.kind === "self") badges.push(el("span", { class: "badge back" }, "↺ self-map"));
    if (e.kind === "back")
      badges.push(el("span", { class: "badge back" }, `↺ back edge to ${hex(e.target)}`));
    if (e.kind === "linear")
      badges.push(
        el(
          "span",
          { class: "badge back" },
          `↺ linear: a same-level ${LEVEL_NAMES[t.level]} (read one level down)`,
        ),
      );
    if (e.kind === "xen-slot") badges.push(el("span", { class: "badge xen" }, "Xen slot"));
    if (e.kind === "io") badges.push(el("span", { class: "badge" }, "I/O"));
    if (e.kind === "leaf")
      badges.push(el("span", { class: "badge leaf" }, `→ ${bytesText(e.pageSize ?? 4096)} page`));
    if (e.grant) {
      badges.push(
        el(
          "span",
          { class: "badge grant" },
          `grant PTE: d${e.grant.granter} ref ${e.grant.ref}, handle ${e.grant.handle}${e.grant.readonly ? ", RO" : ""}`,
        ),
      );
    }
    const target = el("a", { class: "target", href: "#", title: "inspect this frame" }, hex(e.target));
    target.addEventListener("click", (ev) => {
      ev.preventDefault();
      this.onSelect(e.target);
    });
    const line = el(
      "div",
      { class: "eline" },
      toggle,
      el("span", { class: "idx" }, `[${e.index}]`),
      el("span", { class: "va", title: `${bytesText(e.span)} from here` }, shortVa(e.va)),
      " → ",
      target,
      el("span", { class: `cls cls-${e.targetClass ?? "none"}` }, e.targetClass ?? ""),
      el("span", { class: "flags", title: `raw ${e.raw}` }, e.flags),
      ...badges,
    );
    li.append(line);
    if (e.xen.length)
      li.append(el("div", { class: "xen-notes" }, ...e.xen.map((n) => el("div", {}, `Xen: ${n}`))));
    if (e.kind === "self" || e.kind === "back" || e.kind === "linear") {
      li.addEventListener("mouseenter", () => this.outline(e.target, true));
      li.addEventListener("mouseleave", () => this.outline(e.target, false));
    }
    const child = el("div", { class: "child" });
    li.append(child);
    if (expandable) {
      const open = async () => {
        if (child.childElementCount) {
          child.replaceChildren();
          toggle.textContent = "▸";
          this.forget(e.target, e.childLevel!, e.va);
          return;
        }
        toggle.textContent = "▾";
        child.append(await this.tableNode(e.target, e.childLevel!, e.va, path));
      };
      toggle.addEventListener("click", () => void open());
      if (this.expanded.has(nodeKey(e.target, e.childLevel!, e.va))) {
        toggle.textContent = "▾";
        child.append(await this.tableNode(e.target, e.childLevel!, e.va, path));
      }
    }
    return li;
  }

  private forget(mfn: number, level: number, va: string): void {
    this.expanded.delete(nodeKey(mfn, level, va));
  }

  private outline(mfn: number, on: boolean): void {
    for (const n of this.body.querySelectorAll<HTMLElement>(`.tnode[data-mfn="${mfn}"] > .thead`)) {
      n.classList.toggle("outlined", on);
    }
  }

  /** Walk `va` from the current root, open the tree along the walk and show the outcome. */
  async search(va: string): Promise<WalkView | undefined> {
    const r = this.current;
    if (!r || va === "") return undefined;
    let w: WalkView;
    try {
      w = await this.api.walk(r.mfn, r.levels, va);
    } catch (err) {
      this.walkOut.replaceChildren(el("div", { class: "error" }, (err as Error).message));
      return undefined;
    }
    this.walkMarks = new Set(w.steps.map((s) => `${s.table}:${s.index}`));
    // Open every table on the walk but the last (its entry is the leaf or the fault).
    let va0 = "0000000000000000";
    for (let k = 0; k + 1 < w.steps.length; k++) {
      const s = w.steps[k];
      const span = 2 ** (12 + 9 * (s.level - 1));
      va0 = (BigInt(`0x${va0}`) + BigInt(span) * BigInt(s.index)).toString(16).padStart(16, "0");
      const canon = BigInt.asUintN(64, BigInt.asIntN(r.levels === 5 ? 57 : 48, BigInt(`0x${va0}`)));
      this.expanded.add(nodeKey(w.steps[k + 1].table, s.level - 1, canon.toString(16).padStart(16, "0")));
    }
    await this.refresh();
    const lines = w.steps.map(
      (s) => `${s.name.padEnd(5)} ${hex(s.table)}[${s.index}] = ${s.entry}  ${s.flags}`,
    );
    const outcome = w.ok
      ? `→ ${w.pa} (${bytesText(w.pageSize ?? 4096)} page; ${w.permissions?.user ? "user" : "supervisor"}, ${
          w.permissions?.write ? "writable" : "read-only"
        }, ${w.permissions?.execute ? "executable" : "no-execute"})`
      : `→ ${w.fault}${w.errorCode !== undefined ? ` error code ${hex(w.errorCode)}` : ""} [${(w.errorBits ?? []).join(", ")}]`;
    this.walkOut.replaceChildren(
      el("div", { class: "walk-title" }, `walk of ${w.va} (${w.access})`),
      el("pre", {}, [...lines, outcome].join("\n")),
    );
    this.walkOut.dataset.ok = String(w.ok);
    this.walkOut.dataset.pa = w.pa ?? "";
    this.body.querySelector(".entry.walk:last-of-type")?.scrollIntoView({ block: "nearest" });
    return w;
  }
}
