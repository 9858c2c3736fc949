/**
 * The frame inspector: the selected frame's owner, counts and flags, the grants pinning it,
 * and every reference to it (the auditor's reverse map) with what they add up to — a ✓ when
 * they explain the counts.
 */

import type { Api } from "./api.js";
import { CLASS_COLOURS, CLASS_LABELS } from "./colours.js";
import { el, hex } from "./dom.js";
import type { FrameInfo } from "./protocol.js";

export class InspectorView {
  private readonly body = el("div", { id: "inspector-body" });
  current = -1;

  constructor(
    readonly root: HTMLElement,
    private readonly api: Api,
    private readonly onFrame: (mfn: number) => void,
  ) {
    const input = el("input", {
      id: "frame-input",
      placeholder: "frame (mfn), e.g. 0x1a2b",
      spellcheck: "false",
    });
    const form = el("form", { class: "frame-form" }, input, el("button", { type: "submit" }, "inspect"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const v = input.value.trim();
      const n = /^0x[0-9a-f]+$/i.test(v)
        ? Number.parseInt(v.slice(2), 16)
        : /^\d+$/.test(v)
          ? Number(v)
          : Number.NaN;
      if (Number.isNaN(n))
        this.body.replaceChildren(el("div", { class: "error" }, `not a frame number: '${v}'`));
      else this.onFrame(n);
    });
    root.append(form, this.body);
    this.body.append(
      el("p", { class: "muted" }, "click a frame on the map, or an entry's target in the tree"),
    );
  }

  async show(mfn: number): Promise<void> {
    this.current = mfn;
    let f: FrameInfo;
    try {
      f = await this.api.frame(mfn);
    } catch (e) {
      this.body.replaceChildren(el("div", { class: "error" }, (e as Error).message));
      return;
    }
    if (this.current !== mfn) return;
    const row = (k: string, v: string | number | boolean | undefined, field = k) =>
      v === undefined ? null : el("tr", { "data-field": field }, el("th", {}, k), el("td", {}, String(v)));
    const rows = [
      row("class", CLASS_LABELS[f.class]),
      row("owner", f.ownerName),
      row("type", f.type),
      row("count", f.count),
      row("type count", f.typeCount, "typeCount"),
      row("allocated", f.allocated),
      row("validated", f.validated),
      row("pinned", f.pinned),
      row("partial", f.partial),
      row("linear_pt_count", f.linear, "linear"),
      row("uses as a table", f.tableUses, "tableUses"),
      row("M2P", f.m2p),
    ];
    const refs = el(
      "ul",
      { class: "refs", id: "refs" },
      ...f.refs.map((r) => {
        const li = el(
          "li",
          { "data-kind": r.kind, "data-general": r.general, "data-type": r.type },
          el("span", { class: "holds" }, `+${r.general}/+${r.type}`),
          " ",
          r.text,
        );
        if (r.table !== undefined) {
          const a = el("a", { href: "#" }, " ⇢");
          a.addEventListener("click", (e) => {
            e.preventDefault();
            this.onFrame(r.table!);
          });
          li.append(a);
        }
        return li;
      }),
    );
    const totals = f.totals
      ? el(
          "div",
          {
            class: `totals ${f.explained ? "ok" : "bad"}`,
            id: "ref-totals",
            "data-explained": String(f.explained),
          },
          `references hold ${f.totals.general} general, ${f.totals.type} type${
            f.linear !== undefined ? `, linear ${f.totals.linear}` : ""
          } — ${f.explained ? "✓ they explain the counts" : "✗ they do not explain the counts"}`,
        )
      : el("p", { class: "muted" }, "a memory dump has no frame table: no counts, no owner");
    const pins = (f.grantPins ?? []).map((g) =>
      el("li", {}, `grant d${g.granter}/ref ${g.ref} pinned by d${g.to}: pin ${g.pin}`),
    );
    this.body.replaceChildren(
      el(
        "h3",
        { id: "inspected", "data-mfn": f.mfn },
        el("i", { class: "swatch", style: `background:${CLASS_COLOURS[f.class]}` }),
        `frame ${hex(f.mfn)}`,
      ),
      el("table", { class: "fields", id: "frame-fields" }, ...rows),
      el("div", { hidden: pins.length === 0 }, el("h4", {}, "grant pins"), el("ul", {}, ...pins)),
      el("h4", {}, `referenced by (${f.refs.length})`),
      totals,
      refs,
    );
  }
}
